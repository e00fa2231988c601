"""GitHub Deployments: one per environment and release, and its statuses as the release goes.

    deployments = GitHubDeployments.from_config(config, os.environ)   # None without a token
    if deployments:
        deployment = deployments.start("production", ref="v1.15.2", release="1.15.2", ...)
        ... deploy ...
        deployments.finish(deployment, "success")       # or "failure", "inactive"

`start` finds the deployment of this environment and ref that an earlier attempt made (a re-run
of a failed job) before it creates one, so re-runs never pile up deployments; then it sets
`in_progress`. Statuses carry `log_url` (the Actions run) and `environment_url` (the service).
GitHub's `auto_inactive` marks the environment's older deployments inactive on a success.

The client is built as deploytools.github builds it (ghapi, `sync=True`, `gh_host` for GitHub
Enterprise or the tests' local fake); this module adds the writes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from deploytools.config import Config
from deploytools.errors import EnvironmentUnreachable, UsageError
from deploytools.github import GITHUB_API

#: The states a deployment status can have (GitHub REST API, "Create a deployment status").
STATES = ("error", "failure", "inactive", "in_progress", "queued", "pending", "success")
#: What `finish` accepts: how a release ended in an environment.
FINAL_STATES = ("success", "failure", "error", "inactive")
TASK = "deploy"


@dataclass(frozen=True)
class Deployment:
    """A GitHub Deployment, as far as deploytools needs it."""

    id: int
    environment: str
    ref: str
    release: str
    log_url: str = ""
    environment_url: str = ""


def run_url(environ: Mapping[str, str]) -> str:
    """The URL of the running GitHub Actions run (its attempt, when known); "" outside Actions."""
    server = environ.get("GITHUB_SERVER_URL", "https://github.com")
    repository = environ.get("GITHUB_REPOSITORY", "")
    run_id = environ.get("GITHUB_RUN_ID", "")
    if not (repository and run_id):
        return ""
    url = f"{server}/{repository}/actions/runs/{run_id}"
    attempt = environ.get("GITHUB_RUN_ATTEMPT", "")
    return f"{url}/attempts/{attempt}" if attempt else url


class GitHubDeployments:
    """The deployments of one repository."""

    def __init__(self, repository: str, token: str, *, gh_host: str = GITHUB_API) -> None:
        owner, _, name = repository.partition("/")
        if not owner or not name:
            raise UsageError(
                f'"{repository}" is not a GitHub repository (owner/name)',
                untouched="nothing was sent to GitHub",
                hint="set github.repository in deploy.toml",
            )
        self.repository = repository
        self.gh_host = gh_host.rstrip("/")
        self._root = f"/repos/{owner}/{name}"
        # Imported here, not at the top: `deploytools --help` must not load ghapi (start-up time).
        from ghapi.core import GhApi

        self._api = GhApi(  # type: ignore[no-untyped-call] # ghapi has no annotations
            owner=owner, repo=name, token=token, gh_host=self.gh_host, sync=True
        )

    @classmethod
    def from_config(cls, config: Config, environ: Mapping[str, str]) -> GitHubDeployments | None:
        """The deployments of github.repository, or None when there is no token or repository
        (then deploytools works without GitHub, as on a laptop)."""
        token = environ.get(config.github.token_env, "")
        repository = config.github.repository or environ.get("GITHUB_REPOSITORY", "")
        if not token or not repository:
            return None
        return cls(repository, token, gh_host=config.github.api_url)

    def _call(self, verb: str, path: str, *, query: Any = None, data: Any = None) -> Any:
        import httpx2  # loaded by ghapi already: this only names its errors

        url = f"{self._root}{path}"
        try:
            return self._api(url, verb, query=query, data=data)
        except httpx2.HTTPStatusError as exc:
            status = exc.response.status_code
            raise EnvironmentUnreachable(
                f"GitHub answered {status} to {verb} {url}: {_message(exc.response)}",
                untouched="the environment; only its GitHub deployment record is behind",
                hint="the token needs deployments: write (in Actions: permissions: "
                "deployments: write)",
                facts={"url": url, "status": status},
            ) from None
        except httpx2.HTTPError as exc:
            raise EnvironmentUnreachable(
                f"cannot reach GitHub at {self.gh_host}: {exc}",
                untouched="the environment; only its GitHub deployment record is behind",
                facts={"url": url},
            ) from None

    # -- Deployments ------------------------------------------------------------------------

    def find(self, environment: str, ref: str) -> Deployment | None:
        """The newest deployment of `ref` to `environment` made by deploytools, if any."""
        answer = self._call(
            "GET",
            "/deployments",
            query={"environment": environment, "ref": ref, "task": TASK, "per_page": 30},
        )
        for item in answer or []:
            if _get(item, "environment") == environment and _get(item, "ref") == ref:
                payload = _get(item, "payload") or {}
                return Deployment(
                    id=int(_get(item, "id")),
                    environment=environment,
                    ref=ref,
                    release=str(_get(payload, "release") or ref),
                )
        return None

    def create(
        self, environment: str, *, ref: str, release: str, description: str = ""
    ) -> Deployment:
        """A new deployment of `ref` to `environment` (no merge, no required contexts: the
        release was verified by `release verify`, not by GitHub's deployment checks)."""
        answer = self._call(
            "POST",
            "/deployments",
            data={
                "ref": ref,
                "task": TASK,
                "auto_merge": False,
                "required_contexts": [],
                "environment": environment,
                "description": description or f"{release} to {environment}",
                "payload": {"release": release, "tool": "deploytools"},
                "production_environment": environment == "production",
                "transient_environment": False,
            },
        )
        deployment_id = _get(answer, "id")
        if deployment_id is None:
            # 202: GitHub merged the default branch into ref instead (auto_merge is off, so
            # this only happens when something else asked for it).
            raise EnvironmentUnreachable(
                f"GitHub did not create a deployment of {ref} to {environment}: "
                f"{_get(answer, 'message') or answer}",
                untouched="the environment; only its GitHub deployment record is missing",
                facts={"ref": ref, "environment": environment},
            )
        return Deployment(id=int(deployment_id), environment=environment, ref=ref, release=release)

    def set_status(
        self,
        deployment: Deployment,
        state: str,
        *,
        log_url: str = "",
        environment_url: str = "",
        description: str = "",
    ) -> dict[str, Any]:
        """Add a status to `deployment`; returns GitHub's answer."""
        if state not in STATES:
            raise UsageError(
                f'"{state}" is not a deployment state',
                untouched="nothing was sent to GitHub",
                hint="states: " + ", ".join(STATES),
            )
        data: dict[str, Any] = {"state": state, "auto_inactive": True}
        log_url = log_url or deployment.log_url
        environment_url = environment_url or deployment.environment_url
        if log_url:
            data["log_url"] = log_url
        if environment_url:
            data["environment_url"] = environment_url
        if description:
            data["description"] = description[:140]  # GitHub refuses longer ones
        answer = self._call("POST", f"/deployments/{deployment.id}/statuses", data=data)
        return dict(answer or {})

    # -- The life of one release in one environment ----------------------------------------

    def start(
        self,
        environment: str,
        *,
        ref: str,
        release: str,
        log_url: str = "",
        environment_url: str = "",
    ) -> Deployment:
        """The deployment of `ref` to `environment` (an earlier attempt's, or a new one), now
        in_progress."""
        found = self.find(environment, ref) or self.create(environment, ref=ref, release=release)
        deployment = Deployment(
            id=found.id,
            environment=environment,
            ref=ref,
            release=release,
            log_url=log_url,
            environment_url=environment_url,
        )
        self.set_status(deployment, "in_progress", description=f"deploying {release}")
        return deployment

    def finish(self, deployment: Deployment, state: str, *, description: str = "") -> None:
        """The deployment's last status: success, failure, error, or inactive (rolled back)."""
        if state not in FINAL_STATES:
            raise UsageError(
                f'"{state}" does not end a deployment',
                untouched="nothing was sent to GitHub",
                hint="final states: " + ", ".join(FINAL_STATES),
            )
        self.set_status(deployment, state, description=description)


def _get(obj: Any, key: str) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(key)
    return getattr(obj, key, None)


def _message(response: Any) -> str:
    try:
        return str(response.json().get("message", ""))
    except ValueError:
        return response.text[:200] if response.text else ""
