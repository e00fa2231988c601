"""Release tags and VERSION files as they go wrong: a trailing newline, a tag naming a blob, a
byte-order mark that makes "1.15.3" differ from "1.15.3". Each gets a message that says so."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from deploytools.errors import ExitCode, UsageError
from deploytools.steps.release import (
    Version,
    check_version_file,
    parse_tag,
    run_git,
    tag_commit,
)


@pytest.mark.parametrize("tag", ["v1.15.2\n", "v1.15.2\r\n", "\nv1.15.2", "v1.15.2\x00"])
def test_a_tag_with_a_newline_is_not_a_release_tag(tag: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_tag(tag)
    assert caught.value.exit_code == ExitCode.USAGE
    assert "\n" not in caught.value.message
    assert "is not a release tag" in caught.value.message
    assert Version.parse(tag) is None


def test_a_tag_with_a_zero_width_space_is_named() -> None:
    with pytest.raises(UsageError) as caught:
        parse_tag("v1.15.2\u200b")
    assert "zero-width space" in caught.value.message


def git(root: Path, *args: str, stdin: str | None = None) -> str:
    done = subprocess.run(
        ["git", "-C", str(root), *args],
        input=stdin,
        capture_output=True,
        text=True,
        check=True,
        env={
            "GIT_AUTHOR_NAME": "t",
            "GIT_AUTHOR_EMAIL": "t@example.com",
            "GIT_COMMITTER_NAME": "t",
            "GIT_COMMITTER_EMAIL": "t@example.com",
            "HOME": str(root),
            "PATH": "/usr/bin:/bin",
        },
    )
    return done.stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    git(tmp_path, "init", "-q", "-b", "main")
    (tmp_path / "VERSION").write_text("1.15.3\n")
    git(tmp_path, "add", "VERSION")
    git(tmp_path, "commit", "-qm", "release")
    return tmp_path


@pytest.mark.parametrize(("kind", "make"), [("blob", "hash-object"), ("tree", "write-tree")])
def test_a_tag_naming_a_blob_or_tree_says_so(repo: Path, kind: str, make: str) -> None:
    obj = git(repo, "hash-object", "-w", "VERSION") if make == "hash-object" else git(repo, make)
    git(repo, "tag", "-a", "-m", "not a commit", "v1.15.3", obj)
    with pytest.raises(UsageError) as caught:
        tag_commit(repo, "v1.15.3", run_git)
    assert f"names a {kind}, not a commit" in caught.value.message
    assert "fetch" not in caught.value.one_line()


def test_a_missing_tag_still_says_fetch(repo: Path) -> None:
    with pytest.raises(UsageError) as caught:
        tag_commit(repo, "v9.9.9", run_git)
    assert "does not exist" in caught.value.message


@pytest.mark.parametrize(
    ("content", "named"),
    [
        ("\ufeff1.15.3\n", "byte-order mark (U+FEFF) at the start"),
        ("1.15.3\u200b\n", "zero-width space (U+200B) at the end"),
        ("1.1\u200d5.3\n", "zero-width joiner (U+200D)"),
    ],
)
def test_version_and_tag_compared_after_naming_invisible_characters(
    repo: Path, content: str, named: str
) -> None:
    (repo / "VERSION").write_text(content, encoding="utf-8")
    git(repo, "commit", "-qam", "invisible")
    git(repo, "tag", "-a", "-m", "release", "v1.15.3")
    result = check_version_file(repo, "v1.15.3", Version(1, 15, 3), ".", run_git)
    assert result.verdict == "failed"
    assert named in result.reason
    assert "\ufeff" not in result.reason and "\u200b" not in result.reason


def test_a_plain_version_file_passes(repo: Path) -> None:
    git(repo, "tag", "-a", "-m", "release", "v1.15.3")
    result = check_version_file(repo, "v1.15.3", Version(1, 15, 3), ".", run_git)
    assert result.verdict == "passed"
