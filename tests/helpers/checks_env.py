"""Helpers shared by the check and monitor integration tests (on the shared stack):
the reference service's checks pointed at a stack, and the test users' credentials.

Both modules run on the shared stack reset to 1.15.2 (shared_stack.py); a test that breaks it (a
revoked role, a slow endpoint, a stopped database) puts it back before it ends, and each module
logs in with test users of its own.
"""

from __future__ import annotations

import dataclasses
import secrets
import tomllib
import types
from pathlib import Path
from typing import TYPE_CHECKING

from deploytools import config as config_module
from deploytools.config import Config

if TYPE_CHECKING:
    from tests.helpers.stacks import ComposeStack

REPO_ROOT = Path(__file__).resolve().parents[2]


def reference_config(stack: ComposeStack) -> Config:
    """The [project], [thresholds] and [checks] tables of the repository's deploy.toml (the
    reference service's checks), with one environment "test" pointing at `stack`. The other
    tables are left out: these modules test the checks, not the rest of the file."""
    path = REPO_ROOT / "deploy.toml"
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    kept = {key: data[key] for key in ("project", "thresholds", "checks") if key in data}
    kept["environments"] = {"test": {"compose_project": stack.project, "base_url": stack.url}}
    loader = config_module._Loader(path)
    config = loader.build(Config, kept, "")
    env = dataclasses.replace(config.environments["test"], name="test")
    config = dataclasses.replace(
        config, environments=types.MappingProxyType({"test": env}), path=path
    )
    config_module._validate(config, loader)
    return config


def credentials_env(stack: ComposeStack, users: str) -> dict[str, str]:
    """The stack's admin, and test users `USERS-viewer` and `USERS-editor` (new passwords)."""
    assert stack.admin is not None
    return {
        "ADMIN_USERNAME": stack.admin[0],
        "ADMIN_PASSWORD": stack.admin[1],
        "CHECK_VIEWER_USERNAME": f"{users}-viewer",
        "CHECK_VIEWER_PASSWORD": secrets.token_urlsafe(16),
        "CHECK_EDITOR_USERNAME": f"{users}-editor",
        "CHECK_EDITOR_PASSWORD": secrets.token_urlsafe(16),
    }
