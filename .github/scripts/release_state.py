"""What release.yml's production job asks of production's records, read from deploytools' JSON.

Standard library only (it runs with the runner's Python before and after deploytools does).

  release_state.py previous IMAGE < history.json
      The release this run replaces: the newest record that served before this build's image
      was first deployed (prints its id; nothing when production has no release yet). The same
      answer on every attempt of the run, whatever an earlier attempt did: a re-run never rolls
      back one release too far. Exits 1 when this build's image already served and was then
      replaced (a re-run after its rollback must not deploy the rolled-back release again).

  release_state.py image RELEASE_ID < history.json
      The image of release RELEASE_ID.

  release_state.py serving IMAGE < status.json
      Exits 0 when production serves IMAGE (repository@sha256:...): its current release record
      names it (or, after a rollback, a tag deploytools kept in that repository), and every
      running container of that repository runs that digest (but the previous release's,
      which a rolling deploy keeps up, drained and taking no traffic, until the watch ends:
      status's `kept`); else 1.
"""

from __future__ import annotations

import json
import sys
from typing import Any


def _result(text: str) -> Any:
    data = json.loads(text)
    return data.get("result", data) if isinstance(data, dict) else data


def previous(image: str, history: dict[str, Any]) -> str | None:
    """The id of the release replaced by `image`'s first deploy (see the module's text)."""
    records = sorted(history.get("releases") or [], key=lambda r: str(r["id"]))

    def served(r: dict[str, Any]) -> bool:
        return r.get("kind") in ("deploy", "rollback") and r.get("outcome") == "succeeded"

    first = next(
        (i for i, r in enumerate(records) if r.get("kind") == "deploy" and r["image"] == image),
        None,
    )
    before = records if first is None else records[:first]
    replaced = [r for r in before if served(r)]
    if first is not None:
        ours = [i for i, r in enumerate(records) if served(r) and r["image"] == image]
        later = [r for r in records[ours[0] + 1 :] if served(r)] if ours else []
        if later and later[-1]["image"] != image:
            raise SystemExit(
                f"{image} served as release {records[ours[0]]['id']} and was replaced "
                f"(release {later[-1]['id']} serves {later[-1]['image']}): a rolled-back release "
                "is not deployed again by a re-run; push a new tag"
            )
    return str(replaced[-1]["id"]) if replaced else None


def serving(image: str, status: dict[str, Any]) -> list[str]:
    """What keeps production from serving exactly `image` (empty: it does)."""
    problems: list[str] = []
    repository = image.split("@", 1)[0]
    release = status.get("release") or {}
    recorded = str(release.get("image") or "")
    # A rollback records the tag deploytools kept of the release (REPOSITORY:TAG, the same
    # image); which digest it runs, the containers say below.
    kept = "@" not in recorded and recorded.rsplit(":", 1)[0] == repository
    if recorded != image and not kept:
        problems.append(f"the current release record names {recorded!r}")
    # The previous release's container kept for a rollback by switch takes no traffic.
    drained = (status.get("kept") or {}).get("container")
    same_repo = [
        s
        for s in status.get("services") or []
        if s.get("state") == "running"
        and s.get("container") != drained
        and any(d.split("@", 1)[0] == repository for d in s.get("repo_digests") or [])
    ]
    if not same_repo:
        problems.append(f"no running container of {repository}")
    for s in same_repo:
        if image not in (s.get("repo_digests") or []):
            problems.append(f"{s['container']} runs {', '.join(s['repo_digests'])}")
    return problems


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[1] not in ("previous", "image", "serving"):
        print(__doc__, file=sys.stderr)
        return 2
    what, image = argv[1], argv[2]
    data = _result(sys.stdin.read())
    if what == "previous":
        found = previous(image, data)
        print(found or "")
        return 0
    if what == "image":
        release = next((r for r in data.get("releases") or [] if r["id"] == image), None)
        if release is None:
            print(f"no release {image} in the history", file=sys.stderr)
            return 1
        print(release["image"])
        return 0
    problems = serving(image, data)
    for problem in problems:
        print(f"production does not serve {image}: {problem}", file=sys.stderr)
    if not problems:
        print(f"production serves {image}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
