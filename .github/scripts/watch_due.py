"""Whether monitor.yml's scheduled watch has anything to watch, asked of GitHub before any
production secret is opened (standard library only).

  watch_due.py HOURS    prints `due=true` or `due=false` (for $GITHUB_OUTPUT) and why.

Not due in a fork (it has no production of its own), nor when the newest approval of the
"production" environment (a release's or a rollback's) is older than HOURS: after the runbook's
24 hours, plus the production job's longest run. Within that, `monitor --only-after-release 24h`
decides from production's own records. Reads GITHUB_API_URL, GITHUB_REPOSITORY, GITHUB_TOKEN.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.request
from datetime import UTC, datetime
from typing import Any

APPROVAL_ENVIRONMENT = "production"


def _get(path: str) -> Any:
    api = os.environ.get("GITHUB_API_URL", "https://api.github.com").rstrip("/")
    if not api.startswith(("https://", "http://")):
        raise SystemExit(f"GITHUB_API_URL is not an http(s) URL: {api}")
    request = urllib.request.Request(  # noqa: S310 - http(s) only, checked above
        f"{api}/repos/{os.environ['GITHUB_REPOSITORY']}{path}",
        headers={
            "Accept": "application/vnd.github+json",
            "Authorization": f"Bearer {os.environ['GITHUB_TOKEN']}",
        },
    )
    with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310 - http(s) only
        return json.load(answer)


def due(within_h: float, now: datetime | None = None) -> tuple[bool, str]:
    repository = _get("")
    if repository.get("fork"):
        return False, f"{repository.get('full_name')} is a fork: it has no production to watch"
    deployments = _get(f"/deployments?environment={APPROVAL_ENVIRONMENT}&per_page=1")
    if not deployments:
        return False, f'no approval of the "{APPROVAL_ENVIRONMENT}" environment yet'
    newest = datetime.fromisoformat(str(deployments[0]["created_at"]).replace("Z", "+00:00"))
    age_h = ((now or datetime.now(UTC)) - newest).total_seconds() / 3600
    if age_h > within_h:
        return False, f"the newest production approval is {age_h:.1f} h old (> {within_h:g} h)"
    return True, f"the newest production approval is {age_h:.1f} h old"


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    answer, why = due(float(argv[1]))
    print(why, file=sys.stderr)
    print(f"due={'true' if answer else 'false'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
