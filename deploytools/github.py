"""GitHub, through ghapi: the commit's required checks, its code-quality gate's run (the CI
workflow's jobs) and the production environment's protection.

ghapi 2.x returns coroutines unless made with `sync=True`; `gh_host` points it at another API
root (GitHub Enterprise, or the local fake server of the tests). Only GET requests are made here.
Answers are read defensively: a missing key means "not configured", never a crash.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from deploytools.errors import EnvironmentUnreachable

GITHUB_API = "https://api.github.com"
#: Conclusions of a check run that let a release through (GitHub counts these as passing).
GREEN_CONCLUSIONS = frozenset({"success", "neutral", "skipped"})


@dataclass(frozen=True)
class Verdict:
    """The answer to one question about GitHub: good or not, and why."""

    ok: bool
    reason: str


@dataclass(frozen=True)
class CiJob:
    """One job of a workflow run (GitHub shows it as one check of the commit)."""

    name: str
    #: The job's conclusion when it finished (success, failure, cancelled, skipped, ...), else
    #: its status (queued, in_progress, waiting).
    state: str
    seconds: float | None
    url: str

    @property
    def green(self) -> bool:
        return self.state in GREEN_CONCLUSIONS


@dataclass(frozen=True)
class CiRun:
    """The newest run of one workflow on one commit, with the jobs of its latest attempt."""

    workflow: str
    run_id: int
    attempt: int
    #: queued, in_progress, completed, ...
    status: str
    #: success, failure, cancelled, ... once completed; "" before.
    conclusion: str
    url: str
    jobs: tuple[CiJob, ...]

    @property
    def completed(self) -> bool:
        return self.status == "completed"

    @property
    def green(self) -> bool:
        return self.completed and self.conclusion == "success"


class GitHub:
    """A read-only view of one repository on GitHub."""

    def __init__(self, repository: str, token: str, *, gh_host: str = GITHUB_API) -> None:
        owner, _, name = repository.partition("/")
        self.repository = repository
        self.gh_host = gh_host.rstrip("/")
        # Imported here, not at the top: `deploytools --help` must not load ghapi (start-up time).
        from ghapi.core import GhApi

        self._api = GhApi(  # type: ignore[no-untyped-call] # ghapi has no annotations
            owner=owner, repo=name, token=token, gh_host=self.gh_host, sync=True
        )
        self._owner, self._name = owner, name

    def _get(self, path: str, **query: Any) -> Any:
        """GET `path` (relative to /repos/OWNER/NAME); None when GitHub answers 404."""
        import httpx2  # loaded by ghapi already: this only names its errors

        url = f"/repos/{self._owner}/{self._name}{path}"
        try:
            return self._api(url, "GET", query=query or None)
        except httpx2.HTTPStatusError as exc:
            if exc.response.status_code == 404:
                return None
            raise EnvironmentUnreachable(
                f"GitHub answered {exc.response.status_code} to GET {url}",
                untouched="nothing was changed on GitHub",
                hint="check the token's permissions (contents: read, checks: read, "
                "actions: read for environments)",
                facts={"url": url, "status": exc.response.status_code},
            ) from None
        except httpx2.HTTPError as exc:
            raise EnvironmentUnreachable(
                f"cannot reach GitHub at {self.gh_host}: {exc}",
                untouched="nothing was changed on GitHub",
                facts={"url": url},
            ) from None

    # -- Required checks -------------------------------------------------------------------

    def required_checks(self, branch: str) -> list[str]:
        """The status checks `branch` requires, from its protection and from rulesets.

        Read through endpoints a read-only token may use (`GET /branches/B` and
        `GET /rules/branches/B`): the protection endpoint itself needs admin rights, which the
        workflow's GITHUB_TOKEN never has.
        """
        names: list[str] = []
        info = self._get(f"/branches/{branch}") or {}
        protection = _get(info, "protection", None) or {}
        required = _get(protection, "required_status_checks", None) or {}
        candidates = [str(c) for c in _get(required, "contexts", None) or []]
        candidates += [str(_get(c, "context", "")) for c in _get(required, "checks", None) or []]
        for rule in self._get(f"/rules/branches/{branch}") or []:
            if _get(rule, "type", "") != "required_status_checks":
                continue
            parameters = _get(rule, "parameters", None) or {}
            for check in _get(parameters, "required_status_checks", None) or []:
                candidates.append(str(_get(check, "context", "")))
        for name in candidates:
            if name and name not in names:
                names.append(name)
        return names

    def commit_check_states(self, sha: str) -> dict[str, str]:
        """Each check of the commit (check runs and commit statuses) and its state: "success",
        "failure", "pending" and so on. A check reported twice keeps its worst state."""
        states: dict[str, str] = {}
        runs = self._get(f"/commits/{sha}/check-runs", per_page=100) or {}
        for run in _get(runs, "check_runs", []):
            status = str(_get(run, "status", ""))
            conclusion = str(_get(run, "conclusion", "") or "")
            state = "success" if conclusion in GREEN_CONCLUSIONS else (conclusion or status)
            _keep_worst(states, str(_get(run, "name", "")), state)
        combined = self._get(f"/commits/{sha}/status") or {}
        for status in _get(combined, "statuses", []):
            _keep_worst(states, str(_get(status, "context", "")), str(_get(status, "state", "")))
        return states

    def required_checks_green(self, sha: str, branch: str) -> Verdict:
        """Every check `branch` requires is green on commit `sha`."""
        required = self.required_checks(branch)
        if not required:
            # Not "every check on the commit": those include the running release's own jobs
            # (in progress) and, on a re-run, its earlier attempt's failures. The code-quality
            # gate's run (ci_run) is what holds such a release.
            return Verdict(
                True,
                f"{branch} requires no status checks (no branch protection or ruleset names "
                "one); the code-quality gate's run is checked on its own",
            )
        states = self.commit_check_states(sha)
        missing = [n for n in required if n not in states]
        bad = [f"{n} ({states[n]})" for n in required if n in states and states[n] != "success"]
        if missing or bad:
            parts = []
            if bad:
                parts.append("not green: " + ", ".join(bad))
            if missing:
                parts.append("never reported: " + ", ".join(missing))
            return Verdict(False, f"required checks on {sha[:12]}: " + "; ".join(parts))
        return Verdict(
            True,
            f"all {len(required)} required checks are green on {sha[:12]}: " + ", ".join(required),
        )

    # -- The code-quality gate's run ----------------------------------------------------------

    def ci_run(self, sha: str, workflow: str) -> CiRun | None:
        """The newest run of `workflow` (its file name, e.g. ci.yml) on commit `sha`, with the
        jobs of its latest attempt; None when it never ran on that commit (or does not exist).

        Read through the workflow's runs rather than the commit's check runs: those also hold
        the jobs of every other workflow on the commit, the running release among them.
        """
        answer = self._get(f"/actions/workflows/{workflow}/runs", head_sha=sha, per_page=20)
        runs = [
            r
            for r in _get(answer or {}, "workflow_runs", None) or []
            if str(_get(r, "head_sha", sha)) == sha
        ]
        if not runs:
            return None
        newest = max(runs, key=lambda r: (str(_get(r, "created_at", "")), int(_get(r, "id", 0))))
        run_id = int(_get(newest, "id", 0))
        answer = self._get(f"/actions/runs/{run_id}/jobs", filter="latest", per_page=100)
        jobs = tuple(
            CiJob(
                name=str(_get(job, "name", "")),
                state=str(_get(job, "conclusion", None) or _get(job, "status", "") or "unknown"),
                seconds=_seconds_between(
                    _get(job, "started_at", None), _get(job, "completed_at", None)
                ),
                url=str(_get(job, "html_url", "") or ""),
            )
            for job in _get(answer or {}, "jobs", None) or []
        )
        return CiRun(
            workflow=workflow,
            run_id=run_id,
            attempt=int(_get(newest, "run_attempt", 1) or 1),
            status=str(_get(newest, "status", "") or ""),
            conclusion=str(_get(newest, "conclusion", "") or ""),
            url=str(_get(newest, "html_url", "") or ""),
            jobs=jobs,
        )

    # -- The production environment ----------------------------------------------------------

    def environment_protected(
        self, environment: str, tag: str, *, reviewers: bool = True
    ) -> Verdict:
        """`environment` exists, requires reviewers (unless `reviewers` is False), and has a
        deployment policy admitting `tag`.

        GitHub creates a missing environment on the first deployment to it, with no protection
        at all, so "missing" is as bad as "unprotected".
        """
        env = self._get(f"/environments/{environment}")
        if env is None:
            return Verdict(
                False,
                f'environment "{environment}" does not exist on GitHub; a '
                "deployment would create it silently with no protection",
            )
        problems: list[str] = []
        rules = list(_get(env, "protection_rules", []) or [])
        rules_of_reviewers = [r for r in rules if _get(r, "type", "") == "required_reviewers"]
        if reviewers and not any(_get(r, "reviewers", []) for r in rules_of_reviewers):
            problems.append("no required reviewers")
        policy = _get(env, "deployment_branch_policy", None)
        if not policy:
            problems.append("no deployment branch/tag policy (any branch may deploy)")
        elif _get(policy, "protected_branches", False):
            problems.append("the deployment policy admits protected branches only, not tags")
        elif _get(policy, "custom_branch_policies", False):
            answer = self._get(f"/environments/{environment}/deployment-branch-policies") or {}
            patterns = [
                str(_get(p, "name", ""))
                for p in _get(answer, "branch_policies", [])
                if _get(p, "type", "branch") == "tag"
            ]
            if not any(fnmatch.fnmatchcase(tag, p) for p in patterns):
                shown = ", ".join(patterns) or "none"
                problems.append(f"no deployment tag rule admits {tag} (tag rules: {shown})")
        if problems:
            return Verdict(
                False, f'environment "{environment}" is not protected: ' + "; ".join(problems)
            )
        if not reviewers:
            return Verdict(True, f'environment "{environment}" admits {tag} by its tag rule')
        return Verdict(True, f'environment "{environment}" requires reviewers and admits {tag}')


_STATE_RANK = {"success": 0, "pending": 1, "queued": 1, "in_progress": 1, "completed": 1}


def _keep_worst(states: dict[str, str], name: str, state: str) -> None:
    if not name:
        return
    old = states.get(name)
    if old is None or _STATE_RANK.get(state, 9) > _STATE_RANK.get(old, 9):
        states[name] = state


def _seconds_between(start: Any, end: Any) -> float | None:
    """Seconds between two of GitHub's ISO 8601 times; None when one is missing or malformed."""
    try:
        first = datetime.fromisoformat(str(start).replace("Z", "+00:00"))
        last = datetime.fromisoformat(str(end).replace("Z", "+00:00"))
    except ValueError:
        return None
    return max(0.0, (last - first).total_seconds())


def _get(obj: Any, key: str, default: Any) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(key, default)
    return getattr(obj, key, default)
