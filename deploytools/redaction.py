"""Secret values kept out of everything deploytools prints: errors, their facts, `--json`.

An error's facts carry what a child program said (Compose's stdout and stderr, its argv), and a
child can echo a password it was given; an exception's text can hold a URL with credentials.
Before anything is printed, the CLI replaces every known secret value with "***" and the
user:password of every URL with "***". Known secrets are the values of the environment variables
deploy.toml names as secrets (an environment's `secrets`, the test users' passwords, the GitHub
token, the webhooks, the backup encryption key) and of variables whose names say they hold one
(…TOKEN, …SECRET…, …PASSWORD…, AWS_SECRET_ACCESS_KEY, …).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from deploytools.config import Config
from deploytools.urls import without_credentials

MASK = "***"
#: Shorter values are not masked: "1" or "true" would blank out half of every message.
MIN_SECRET_LENGTH = 6
_SECRET_NAME_RE = re.compile(
    r"TOKEN|SECRET|PASSWORD|PASSWD|PASSPHRASE|PRIVATE|CREDENTIAL|API_?KEY|ACCESS_KEY|_KEY$"
    r"|WEBHOOK|DSN$",
    re.IGNORECASE,
)


def secret_names(config: Config | None) -> set[str]:
    """The environment variables deploy.toml names as holding secrets."""
    if config is None:
        return set()
    names = {config.github.token_env}
    for env in config.environments.values():
        names.update(env.secrets)
    for user in config.checks.users.values():
        names.update(n for n in (user.password_env, user.token_env) if n)
        for other in user.environments.values():
            names.update(n for n in (other.password_env, other.token_env) if n)
    names.update(
        (config.notifications.slack_webhook_env, config.notifications.status_page_hook_env)
    )
    if config.backups.encryption_key_env:
        names.add(config.backups.encryption_key_env)
    names.update(config.image.secrets.values())
    return names


def secret_values(environ: Mapping[str, str], names: Iterable[str] = ()) -> tuple[str, ...]:
    """The values to mask: those of `names` and of every variable named like a secret, longest
    first (so that a secret containing another is masked whole)."""
    wanted = set(names)
    values = {
        value
        for name, value in environ.items()
        if (name in wanted or _SECRET_NAME_RE.search(name)) and len(value) >= MIN_SECRET_LENGTH
    }
    return tuple(sorted(values, key=len, reverse=True))


def redact_text(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return without_credentials(text)


def redact(value: Any, secrets: Iterable[str]) -> Any:
    """`value` (plain JSON data) with every secret value and URL credential masked."""
    secrets = tuple(secrets)
    if isinstance(value, str):
        return redact_text(value, secrets)
    if isinstance(value, dict):
        return {redact_text(str(k), secrets): redact(v, secrets) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v, secrets) for v in value]
    return value
