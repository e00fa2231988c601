"""A stand-in for GitHub's REST API on 127.0.0.1, for tests: canned answers, recorded requests.

    with FakeGitHub() as github:
        github.respond("GET", "/repos/o/r/environments/production", {"name": "production", ...})
        ... GitHub("o/r", "token", gh_host=github.url) ...
        assert github.requests[0].path == "/repos/o/r/environments/production"

A path with no answer gets GitHub's own 404 body. `FakeGitHub.protected_repository(...)` fills in
the answers of a repository whose release branch requires checks and whose `production`
environment is protected the way `release verify` demands, for tests to spoil one piece of.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

#: The jobs of ci.yml (the code-quality gate), as GitHub names them.
CI_JOBS = ("test", "lint", "types", "security-scan", "dependency-audit", "pre-commit")
NOT_FOUND = {"message": "Not Found", "documentation_url": "https://docs.github.com/rest"}


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes = b""


#: A computed answer: given the request and the path's match, (HTTP status, JSON body).
Handler = Callable[[RecordedRequest, re.Match[str]], tuple[int, Any]]


@dataclass
class FakeGitHub:
    """The server; a context manager that starts it on a free port and stops it."""

    answers: dict[tuple[str, str], tuple[int, Any]] = field(default_factory=dict)
    requests: list[RecordedRequest] = field(default_factory=list)
    handlers: list[tuple[str, re.Pattern[str], Handler]] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = field(default=None, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        assert self._server is not None, "start the server first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def respond(self, method: str, path: str, body: Any, status: int = 200) -> None:
        self.answers[(method.upper(), path)] = (status, body)

    def handle(self, method: str, path_pattern: str, handler: Handler) -> None:
        """Answer requests whose path fully matches `path_pattern` by calling `handler` (for
        APIs with state, such as deployments); it takes precedence over `respond`."""
        self.handlers.append((method.upper(), re.compile(path_pattern), handler))

    def forget(self, method: str, path: str) -> None:
        """Make `path` answer 404, as GitHub does for what does not exist."""
        self.answers.pop((method.upper(), path), None)

    def paths(self) -> list[str]:
        return [r.path for r in self.requests]

    def __enter__(self) -> FakeGitHub:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                request = RecordedRequest(
                    method=self.command,
                    path=parts.path,
                    query=parse_qs(parts.query),
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=body,
                )
                fake.requests.append(request)
                status, payload = fake.answers.get((self.command, parts.path), (404, NOT_FOUND))
                for method, pattern, handler in fake.handlers:
                    match = pattern.fullmatch(parts.path)
                    if method == self.command and match:
                        status, payload = handler(request, match)
                        break
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("X-RateLimit-Limit", "5000")
                self.send_header("X-RateLimit-Remaining", "4999")
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _answer

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: the recorded requests are the log."""

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    # -- Canned repositories ---------------------------------------------------------------------

    def protected_repository(
        self,
        repository: str,
        *,
        sha: str,
        branch: str = "main",
        required: tuple[str, ...] = ("test", "lint"),
        tag_pattern: str = "v*",
        ci_workflow: str = "ci.yml",
        ci_jobs: tuple[str, ...] = CI_JOBS,
    ) -> None:
        """Answers for a repository that passes every GitHub check of `release verify`."""
        root = f"/repos/{repository}"
        self.ci_run(repository, sha=sha, workflow=ci_workflow, jobs=ci_jobs)
        self.respond(
            "GET",
            f"{root}/branches/{branch}",
            {
                "name": branch,
                "commit": {"sha": sha},
                "protected": True,
                "protection": {
                    "enabled": True,
                    "required_status_checks": {
                        "enforcement_level": "non_admins",
                        "contexts": list(required),
                        "checks": [{"context": name, "app_id": 15368} for name in required],
                    },
                },
                "protection_url": f"https://api.github.com{root}/branches/{branch}/protection",
            },
        )
        # Rulesets that apply to the branch (none here; tests add some).
        self.respond("GET", f"{root}/rules/branches/{branch}", [])
        self.respond(
            "GET",
            f"{root}/commits/{sha}/check-runs",
            {
                "total_count": len(required),
                "check_runs": [
                    {
                        "id": 1000 + i,
                        "head_sha": sha,
                        "name": name,
                        "status": "completed",
                        "conclusion": "success",
                    }
                    for i, name in enumerate(required)
                ],
            },
        )
        self.respond(
            "GET",
            f"{root}/commits/{sha}/status",
            {"state": "pending", "sha": sha, "total_count": 0, "statuses": []},
        )
        self.respond(
            "GET",
            f"{root}/environments/production",
            {
                "id": 161088068,
                "name": "production",
                "protection_rules": [
                    {"id": 3736, "type": "wait_timer", "wait_timer": 0},
                    {
                        "id": 3755,
                        "type": "required_reviewers",
                        "prevent_self_review": True,
                        "reviewers": [
                            {"type": "Team", "reviewer": {"id": 1, "slug": "release-managers"}}
                        ],
                    },
                    {"id": 3756, "type": "branch_policy"},
                ],
                "deployment_branch_policy": {
                    "protected_branches": False,
                    "custom_branch_policies": True,
                },
            },
        )
        self.respond(
            "GET",
            f"{root}/environments/production/deployment-branch-policies",
            {
                "total_count": 1,
                "branch_policies": [{"id": 361471, "name": tag_pattern, "type": "tag"}],
            },
        )
        # The environment holding production's secrets for the jobs after the approval: no
        # reviewers, only release tags admitted.
        self.respond(
            "GET",
            f"{root}/environments/production-deploy",
            {
                "id": 161088069,
                "name": "production-deploy",
                "protection_rules": [{"id": 3757, "type": "branch_policy"}],
                "deployment_branch_policy": {
                    "protected_branches": False,
                    "custom_branch_policies": True,
                },
            },
        )
        self.respond(
            "GET",
            f"{root}/environments/production-deploy/deployment-branch-policies",
            {
                "total_count": 1,
                "branch_policies": [{"id": 361472, "name": tag_pattern, "type": "tag"}],
            },
        )

    def ci_run(
        self,
        repository: str,
        *,
        sha: str,
        workflow: str = "ci.yml",
        jobs: tuple[str, ...] = CI_JOBS,
        run_id: int = 7001,
        status: str = "completed",
        conclusion: str | None = "success",
    ) -> dict[str, Any]:
        """Answers for one run of `workflow` on `sha` whose `jobs` all end as the run does;
        returns the jobs answer, for tests to spoil one job of."""
        root = f"/repos/{repository}"
        self.respond(
            "GET",
            f"{root}/actions/workflows/{workflow}/runs",
            {
                "total_count": 1,
                "workflow_runs": [
                    {
                        "id": run_id,
                        "name": "ci",
                        "path": f".github/workflows/{workflow}",
                        "head_sha": sha,
                        "event": "push",
                        "status": status,
                        "conclusion": conclusion,
                        "run_attempt": 1,
                        "created_at": "2026-01-12T00:40:00Z",
                        "html_url": f"https://github.com/{repository}/actions/runs/{run_id}",
                    }
                ],
            },
        )
        answer = {
            "total_count": len(jobs),
            "jobs": [
                {
                    "id": run_id * 10 + i,
                    "run_id": run_id,
                    "name": name,
                    "status": status,
                    "conclusion": conclusion,
                    "started_at": "2026-01-12T00:40:05Z",
                    "completed_at": f"2026-01-12T00:4{1 + i}:05Z" if conclusion else None,
                    "html_url": f"https://github.com/{repository}/actions/runs/{run_id}/job/{i}",
                }
                for i, name in enumerate(jobs)
            ],
        }
        self.respond("GET", f"{root}/actions/runs/{run_id}/jobs", answer)
        return answer
