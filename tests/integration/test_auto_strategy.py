"""`deploy` without --strategy (auto, the default) on the real engine behind the stack's proxy:
a release not declared expand-only recreates and says why (and, in an environment that needs
approval, announces its maintenance window to the webhook first); a release labelled
expand-only rolls, with no failed request under a light load through the proxy. On the shared
dtdep stack (tests/helpers/shared_stack.py); its store and image tags are named dtauto."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.fakes.webhook_server import FakeWebhooks
from tests.helpers.load import OpenLoad, failures
from tests.helpers.shared_stack import (
    DtdepEnv,
    ImageVariants,
    module_env,
    records,
    serving_version,
)

if TYPE_CHECKING:
    from tests.helpers.stacks import ReleaseImages

pytestmark = pytest.mark.integration

#: The variant is built with the engine directly, not `image build` (which writes the label from
#: its migration lint): the test labels it itself.
EXPAND_ONLY = 'LABEL deploytools.migrations.expand-only="true"\n'
RATE = 20.0  # requests/s through the proxy: a light load


# No container kept for a watch window: the deploy drains the old release, and the shared stack
# is left with one app container for the modules after this one.
env = module_env("dtauto", health_timeout_s=30, watch_window_s=0)


def guarded_config(env: DtdepEnv, tmp_path: Path) -> Path:
    """This deploy.toml with the environment requiring approval (production's rules)."""
    text = env.config_path.read_text(encoding="utf-8")
    section = f"[environments.{env.environment}]\n"
    path = tmp_path / "deploy.toml"
    path.write_text(text.replace(section, section + "requires_approval = true\n"))
    return path


def test_a_release_not_declared_expand_only_recreates_says_why_and_announces_the_window(
    env: DtdepEnv,
    release_images: ReleaseImages,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = guarded_config(env, tmp_path)
    image = release_images["1.15.2"]  # no expand-only label
    refused = env.cli("deploy", "--env", "prod", "--image", image, config=config)
    assert refused.exit_code == 2, refused.output
    assert json.loads(refused.stdout)["error"]["type"] == "ApprovalRequired"
    assert serving_version(env) == "1.15.1" and records(env) == []

    with FakeWebhooks() as hooks:
        monkeypatch.setenv("SLACK_WEBHOOK_URL", f"{hooks.url}/slack")
        result = env.cli("deploy", "--env", "prod", "--image", image, "--yes", config=config)
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)["result"]["record"]
    assert (record["strategy"], record["strategy_asked"]) == ("recreate", "auto")
    assert record["strategy_reason"] == (
        "its migrations are not declared expand-only (no image label "
        "deploytools.migrations.expand-only)"
    )
    assert record["approved_by"].endswith("(--yes)")
    assert {"stop", "migrate", "start", "healthy"} <= set(record["timings"])
    assert serving_version(env) == "1.15.2"
    # The window was announced (no recreate measured here yet: the default downtime).
    [notice] = [r.json for r in hooks.received if r.path == "/slack"]
    assert "maintenance window for prod begins" in notice["text"]
    assert "recreate strategy (its migrations are not declared expand-only" in notice["text"]
    assert "expected about 60 s" in notice["text"]
    assert record["maintenance"].startswith("maintenance window announced to slack")


def test_a_default_deploy_of_an_expand_only_release_rolls_with_no_failed_request(
    env: DtdepEnv, image_variants: ImageVariants, release_images: ReleaseImages
) -> None:
    labelled = image_variants.build(
        release_images["1.15.2"], "rbac-api-test:dtauto-1.15.2", dockerfile=EXPAND_ONLY, files={}
    )
    with OpenLoad(env.stack.app_port, rate_per_s=RATE) as load:
        result = env.cli("deploy", "--env", "prod", "--image", labelled)
    samples = load.stop()
    assert result.exit_code == 0, result.output
    assert len(samples) > 0
    assert failures(samples) == []
    record = json.loads(result.stdout)["result"]["record"]
    assert (record["strategy"], record["strategy_asked"]) == ("rolling", "auto")
    assert record["strategy_reason"] == "expand-only, the proxy switches the traffic"
    assert record["expand_only"] is True and record["maintenance"] is None
    assert {"switch", "drain"} <= set(record["timings"])
    assert record["approved_by"] is None  # this environment needs none
    assert records(env)[-1].strategy == "rolling"
