"""GitHub's deployments API with state, on top of FakeGitHub (tests/fakes/github_server.py).

    with FakeGitHub() as github:
        deployments = FakeDeploymentsApi.install(github, "o/r")
        ...
        assert deployments.statuses[1][-1]["state"] == "success"

The answers have the shapes of GitHub's REST API (trimmed to the fields that matter): create
answers 201 with the deployment, list filters by environment, ref and task, newest first; a
status on an unknown deployment answers 404.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from tests.fakes.github_server import NOT_FOUND, FakeGitHub, RecordedRequest


@dataclass
class FakeDeploymentsApi:
    repository: str
    deployments: dict[int, dict[str, Any]] = field(default_factory=dict)
    statuses: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    next_id: int = 1_000_000

    @classmethod
    def install(cls, github: FakeGitHub, repository: str) -> FakeDeploymentsApi:
        api = cls(repository)
        root = re.escape(f"/repos/{repository}")
        github.handle("POST", rf"{root}/deployments", api.create)
        github.handle("GET", rf"{root}/deployments", api.list)
        github.handle("POST", rf"{root}/deployments/(\d+)/statuses", api.add_status)
        return api

    def _api_url(self, path: str) -> str:
        return f"https://api.github.com/repos/{self.repository}{path}"

    def create(self, request: RecordedRequest, _: re.Match[str]) -> tuple[int, Any]:
        body = json.loads(request.body)
        if "ref" not in body:
            return 422, {"message": 'Invalid request.\n\n"ref" wasn\'t supplied.'}
        self.next_id += 1
        deployment = {
            "url": self._api_url(f"/deployments/{self.next_id}"),
            "id": self.next_id,
            "node_id": "DE_fake",
            "sha": "0123456789abcdef0123456789abcdef01234567",
            "ref": body["ref"],
            "task": body.get("task", "deploy"),
            "payload": body.get("payload", {}),
            "original_environment": body.get("environment", "production"),
            "environment": body.get("environment", "production"),
            "description": body.get("description"),
            "creator": {"login": "github-actions[bot]"},
            "created_at": "2026-01-12T01:20:00Z",
            "updated_at": "2026-01-12T01:20:00Z",
            "statuses_url": self._api_url(f"/deployments/{self.next_id}/statuses"),
            "transient_environment": body.get("transient_environment", False),
            "production_environment": body.get("production_environment", False),
        }
        self.deployments[self.next_id] = deployment
        self.statuses[self.next_id] = []
        return 201, deployment

    def list(self, request: RecordedRequest, _: re.Match[str]) -> tuple[int, Any]:
        wanted = {k: v[0] for k, v in request.query.items() if k in ("environment", "ref", "task")}
        found = [
            d
            for d in reversed(self.deployments.values())
            if all(str(d.get(k)) == v for k, v in wanted.items())
        ]
        return 200, found

    def add_status(self, request: RecordedRequest, match: re.Match[str]) -> tuple[int, Any]:
        deployment_id = int(match.group(1))
        if deployment_id not in self.deployments:
            return 404, NOT_FOUND
        body = json.loads(request.body)
        status = {
            "id": len(self.statuses[deployment_id]) + 1,
            "state": body["state"],
            "description": body.get("description", ""),
            "environment": self.deployments[deployment_id]["environment"],
            "log_url": body.get("log_url", ""),
            "environment_url": body.get("environment_url", ""),
            "auto_inactive": body.get("auto_inactive", True),
        }
        self.statuses[deployment_id].append(status)
        return 201, status
