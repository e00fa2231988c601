"""`deploytools init`: a deploy.toml and the release workflows for an existing Compose project.

It reads the project (adopt_compose), writes deploy.toml with a staging and a production
environment on the local engine, copies the release workflows shipped with deploytools, and
says what a person must still fill in. It never overwrites: when any file it would write
exists, it writes none.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from deploytools.errors import UsageError
from deploytools.steps.adopt_compose import ComposeProject, inspect_project

#: The workflows a project adopts (ci.yml is deploytools' own test suite, not a release's).
WORKFLOWS = ("release.yml", "rollback.yml", "monitor.yml")
#: Where staging publishes, relative to production's port, when both share one engine.
STAGING_PORT_OFFSET = 100
DEFAULT_PORT = 8080


@dataclass(frozen=True)
class InitResult:
    """What init wrote and what a person must still do."""

    written: tuple[str, ...]
    to_fill: tuple[str, ...]
    project: ComposeProject


def workflow_templates() -> Path:
    """The directory of the shipped workflows: package data in an installed wheel, the
    repository's .github/workflows in a source checkout."""
    packaged = Path(str(resources.files("deploytools"))) / "workflows"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / ".github" / "workflows"


def _slug(name: str) -> str:
    slug = re.sub(r"[^a-z0-9_-]+", "-", name.lower()).strip("-_")
    return slug or "app"


def _q(value: str) -> str:
    """A TOML basic string (JSON's escapes are TOML's)."""
    return json.dumps(value)


def _list(values: tuple[str, ...] | list[str]) -> str:
    return "[" + ", ".join(_q(v) for v in values) + "]"


def _repository(project: ComposeProject, slug: str) -> tuple[str, bool]:
    """The image repository from the image's default (without tag or digest); whether found."""
    default = project.image_default.split("@", 1)[0]
    name, _, tag = default.rpartition(":")
    repository = name if tag and "/" not in tag else default
    if repository and "/" in repository and "${" not in repository:
        return repository, True
    return f"ghcr.io/OWNER/{slug}", False


def render_config(project: ComposeProject) -> tuple[str, list[str]]:
    """deploy.toml's text for `project`, and the list of what a person must still fill in."""
    slug = _slug(project.name)
    to_fill = list(project.remarks)
    repository, known = _repository(project, slug)
    if not known:
        to_fill.append(
            f'project.image_repository: where release images are pushed ("{repository}")'
        )
    port = project.port
    production_port = port.published if port and port.published else DEFAULT_PORT
    lines = [
        "# deploy.toml, written by `deploytools init` from this Compose project.",
        "# Every key is explained in deploytools' annotated deploy.toml (docs/configuration.md);",
        "# check it with `deploytools config check`. Secrets are names of variables, never values.",
        "",
        "[project]",
        f"name = {_q(project.name)}",
        f"image_repository = {_q(repository)}",
        f"compose_files = {_list([project.compose_file])}",
        f"app_service = {_q(project.app_service)}",
        f"database_service = {_q(project.database_service)}",
        "migration_command = "
        + _list(["alembic", "-c", project.migration_config, "upgrade", "head"]),
        'source_dir = "."',
        "",
    ]
    for name in ("staging", "production"):
        published = production_port + (STAGING_PORT_OFFSET if name == "staging" else 0)
        variables = (
            f"{{ {port.variable} = {_q(str(published))} }}" if port and port.variable else "{}"
        )
        lines += [
            f"[environments.{name}]",
            '# "" is the local engine; "ssh://deploy@host" a remote one.',
            'docker_host = ""',
            f"compose_project = {_q(f'{slug}-{name}')}",
            f"base_url = {_q(f'http://127.0.0.1:{published}')}",
            f"requires_approval = {'true' if name == 'production' else 'false'}",
            f"variables = {variables}",
            f"secrets = {_list(project.secrets)}",
            "",
        ]
    if port is None or not port.published:
        to_fill.append("the app's port: no published port found; set each base_url")
    elif not port.variable:
        to_fill.append(
            f"the published port {port.published} is fixed in {project.compose_file}: staging "
            "and production on one engine need it as a variable (${PORT:-...}), or different "
            "docker_host values"
        )
    to_fill.append(
        "environments.production: docker_host (your production engine) and base_url (its "
        "public URL); staging's too if it is not this machine"
    )
    if project.secrets:
        to_fill.append(
            "secrets: export " + ", ".join(project.secrets) + " for each environment (in GitHub: "
            "the environments' secrets; see docs/workflows.md)"
        )
    lines += [
        "[backups]",
        f"store = {_q(f'volume:{slug}-backups')}",
        "",
        "[deploy]",
        f"image_variable = {_q(project.image_variable)}",
        "",
        "[release]",
        f"alembic_ini = {_q(project.alembic_ini)}",
        "",
    ]
    if project.dockerfile and (project.dockerfile != "Dockerfile" or project.target):
        lines += ["[image]", f"dockerfile = {_q(project.dockerfile)}"]
        if project.target:
            lines.append(f"target = {_q(project.target)}")
        lines.append("")
    lines += ["[github]", '# "owner/name" of the repository.', 'repository = ""', ""]
    to_fill.append('github.repository: "owner/name" of the repository the workflows run in')
    lines += ["[checks]", "timeout_s = 5.0", ""]
    if project.health_path:
        lines += [
            "# The app's Docker healthcheck asks this path.",
            "[[checks.probes]]",
            'name = "health"',
            f"path = {_q(project.health_path)}",
            'budget = "health_ms"',
            'suites = ["smoke", "validate", "verify", "monitor"]',
            "",
        ]
    else:
        to_fill.append("checks: no HTTP healthcheck found; add a [[checks.probes]] for health")
    to_fill.append(
        "checks' users: add [checks.users.NAME] (username_env, password_env) and [checks.login] "
        "for the checks that need a signed-in user, and probes of your routes (docs/checks.md)"
    )
    return "\n".join(lines).rstrip("\n") + "\n", to_fill


def init_project(
    root: Path,
    *,
    compose_file: str | None = None,
    app_service: str | None = None,
    database_service: str | None = None,
    workflows: bool = True,
    templates: Path | None = None,
) -> InitResult:
    """Write deploy.toml (and the release workflows) for the Compose project in `root`.

    :param root: the Compose project's directory; deploy.toml is written there.
    :param compose_file: the Compose file, relative to root; None: found.
    :param app_service: the app's service; None: found.
    :param database_service: the PostgreSQL service; None: found.
    :param workflows: also write .github/workflows/{release,rollback,monitor}.yml.
    :param templates: where the workflows are copied from; None: the shipped ones.
    :raises UsageError: a file it would write exists (then none is written), or the project
        cannot be read.
    """
    project = inspect_project(
        root,
        compose_file=compose_file,
        app_service=app_service,
        database_service=database_service,
    )
    text, to_fill = render_config(project)
    files: dict[str, str] = {"deploy.toml": text}
    if workflows:
        source = templates or workflow_templates()
        missing = [name for name in WORKFLOWS if not (source / name).is_file()]
        if missing:
            raise UsageError(
                f"the workflow templates {', '.join(missing)} are not in {source}",
                untouched="nothing was written",
                hint="reinstall deploytools, or pass --no-workflows",
            )
        for name in WORKFLOWS:
            files[f".github/workflows/{name}"] = (source / name).read_text(encoding="utf-8")
        to_fill.append(
            "workflows: the jobs pass the reference service's secret names; replace them with "
            "yours (" + (", ".join(project.secrets) or "none found") + ") and the checks' users'"
        )
    existing = sorted(name for name in files if (root / name).exists())
    if existing:
        raise UsageError(
            f"{', '.join(existing)} already exist in {root}",
            untouched="nothing was written",
            hint="move them aside (or pass --no-workflows to write deploy.toml only)",
            facts={"existing": existing},
        )
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("x", encoding="utf-8") as handle:
            handle.write(content)
    return InitResult(written=tuple(files), to_fill=tuple(to_fill), project=project)
