"""The git argv builders: exact argv, the repository named with -C, no shell anywhere."""

from __future__ import annotations

from pathlib import Path

from deploytools.commands import git

REPO = Path("/srv/release")
HEAD = ["git", "-C", "/srv/release", "--no-pager"]


def test_every_call_names_the_repository() -> None:
    assert git.is_repository(REPO) == [*HEAD, "rev-parse", "--show-toplevel"]


def test_object_type_of_a_tag() -> None:
    assert git.object_type(REPO, git.tag_ref("v1.15.2")) == [
        *HEAD,
        "cat-file",
        "-t",
        "refs/tags/v1.15.2",
    ]


def test_commit_of_peels_the_tag() -> None:
    assert git.commit_of(REPO, "refs/tags/v1.15.2") == [
        *HEAD,
        "rev-parse",
        "--verify",
        "--quiet",
        "refs/tags/v1.15.2^{commit}",
    ]


def test_is_ancestor() -> None:
    assert git.is_ancestor(REPO, "abc", "refs/remotes/origin/main") == [
        *HEAD,
        "merge-base",
        "--is-ancestor",
        "abc",
        "refs/remotes/origin/main",
    ]


def test_verify_tag_cannot_take_the_tag_as_an_option() -> None:
    argv = git.verify_tag(REPO, "--help")
    assert argv == [*HEAD, "verify-tag", "--end-of-options", "--help"]


def test_show_file_at_a_ref() -> None:
    assert git.show_file(REPO, "refs/tags/v1.15.2", "VERSION") == [
        *HEAD,
        "show",
        "refs/tags/v1.15.2:VERSION",
    ]


def test_work_tree_and_unpushed() -> None:
    assert git.status_porcelain(REPO) == [
        *HEAD,
        "status",
        "--porcelain",
        "--untracked-files=normal",
    ]
    assert git.unpushed_commits(REPO) == [
        *HEAD,
        "log",
        "--branches",
        "--not",
        "--remotes",
        "--format=%H %s",
    ]


def test_archive_and_metadata() -> None:
    assert git.archive(REPO, "refs/tags/v1.15.2", "/tmp/x.tar") == [
        *HEAD,
        "archive",
        "--format=tar",
        "--output=/tmp/x.tar",
        "refs/tags/v1.15.2",
    ]
    assert git.list_tags(REPO) == [*HEAD, "tag", "--list", "v*"]
    assert git.tag_date(REPO, "refs/tags/v1.15.2") == [
        *HEAD,
        "log",
        "-1",
        "--format=%cI",
        "refs/tags/v1.15.2^{commit}",
    ]
    assert git.remote_url(REPO, "origin") == [*HEAD, "remote", "get-url", "origin"]
