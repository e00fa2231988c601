""".github/scripts/release_state.py: what release.yml's production job rolls back to, and
whether production serves the build's digest (read from deploytools' --json output)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / ".github" / "scripts" / "release_state.py"
_spec = importlib.util.spec_from_file_location("release_state", SCRIPT)
assert _spec is not None and _spec.loader is not None
release_state = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(release_state)

OLD = "ghcr.io/example/api@sha256:" + "1" * 64
PG = "postgres@sha256:" + "9" * 64
NEW = "ghcr.io/example/api@sha256:" + "2" * 64


def rec(id_: str, kind: str, image: str, outcome: str = "succeeded") -> dict[str, Any]:
    return {"id": id_, "kind": kind, "image": image, "outcome": outcome}


def history(*records: dict[str, Any]) -> dict[str, Any]:
    # deploytools history lists the newest first
    return {"releases": list(reversed(records))}


def test_the_release_replaced_is_the_one_serving_before_the_first_deploy() -> None:
    before = history(rec("0001", "deploy", OLD), rec("0002", "migrate", NEW))
    assert release_state.previous(NEW, before) == "0001"
    # After the deploy (a re-run of the production job after verify failed and its rollback
    # failed): still 0001, not the new release itself.
    after = history(rec("0001", "deploy", OLD), rec("0002", "deploy", NEW))
    assert release_state.previous(NEW, after) == "0001"
    assert release_state.previous(NEW, history()) is None


def test_a_rolled_back_release_is_not_deployed_again_by_a_rerun() -> None:
    rolled = history(
        rec("0001", "deploy", OLD), rec("0002", "deploy", NEW), rec("0003", "rollback", OLD)
    )
    with pytest.raises(SystemExit, match="rolled-back release is not deployed again"):
        release_state.previous(NEW, rolled)
    # A deploy that never served (it rolled back by itself) may be retried.
    failed = history(rec("0001", "deploy", OLD), rec("0002", "deploy", NEW, "rolled-back"))
    assert release_state.previous(NEW, failed) == "0001"


def status(release_image: str, *digests: str) -> dict[str, Any]:
    return {
        "release": {"image": release_image},
        "services": [
            {"container": f"app-{i}", "state": "running", "repo_digests": [d]}
            for i, d in enumerate(digests)
        ]
        + [
            {"container": "db", "state": "running", "repo_digests": ["postgres@sha256:" + "9" * 64]}
        ],
    }


def test_serving_means_the_record_and_every_container_run_the_digest() -> None:
    assert release_state.serving(NEW, status(NEW, NEW, NEW)) == []
    assert release_state.serving(NEW, status(OLD, NEW))  # the record disagrees
    assert release_state.serving(NEW, status(NEW, NEW, OLD))  # one container is behind
    assert release_state.serving(NEW, status(NEW))  # nothing runs
    # After a rollback the record names the tag deploytools kept (same repository): the
    # containers say which digest runs (release.yml's check after its rollback, test_c).
    kept = NEW.split("@")[0] + ":production-release-0003"
    assert release_state.serving(NEW, status(kept, NEW)) == []
    assert release_state.serving(OLD, status(kept, NEW))  # the kept tag runs another digest
    assert release_state.serving(NEW, status("elsewhere/app:production-release-0003", NEW))


def test_the_command_line_reads_deploytools_json() -> None:
    text = json.dumps({"ok": True, "result": status(NEW, NEW)})
    ok = subprocess.run(
        [sys.executable, str(SCRIPT), "serving", NEW], input=text, capture_output=True, text=True
    )
    assert ok.returncode == 0, ok.stderr
    bad = subprocess.run(
        [sys.executable, str(SCRIPT), "serving", OLD], input=text, capture_output=True, text=True
    )
    assert bad.returncode == 1 and "does not serve" in bad.stderr


def test_the_previous_release_kept_drained_during_the_watch_is_not_serving() -> None:
    """After a rolling deploy the previous release's container stays up, drained, taking no
    traffic, until the watch ends (steps/watch_keep.py; `status` names it under `kept`): it
    runs the old digest and is not what production serves."""
    rolled = status(NEW, NEW, OLD)
    rolled["kept"] = {"container": "app-1", "state": "running", "release": "0002"}
    assert release_state.serving(NEW, rolled) == []
    # Only the container status names as kept; any other one behind still fails the check.
    rolled["kept"] = {"container": "app-0", "state": "running", "release": "0002"}
    assert release_state.serving(NEW, rolled)
    # The kept one alone is not production serving the release.
    alone = status(NEW, OLD)
    alone["kept"] = {"container": "app-0", "state": "running", "release": "0002"}
    assert release_state.serving(NEW, alone)
