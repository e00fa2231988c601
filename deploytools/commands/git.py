"""Argv for git: every call names its repository with `-C`, so nothing depends on the cwd.

Refs that come from the user (a tag) are passed after the option that takes them and, where git
would otherwise read them as options, behind `--end-of-options` or as `refs/tags/NAME`, so a tag
can never become an option. Release verification validates the tag's format before any of these
run anyway.
"""

from __future__ import annotations

from pathlib import Path

GIT = "git"


def base(repo: Path | str) -> list[str]:
    """The head of every git call: the repository, and no pager or prompts."""
    return [GIT, "-C", str(repo), "--no-pager"]


def is_repository(repo: Path | str) -> list[str]:
    """Prints the top-level directory when `repo` is inside a work tree; fails otherwise."""
    return [*base(repo), "rev-parse", "--show-toplevel"]


def tag_ref(tag: str) -> str:
    return f"refs/tags/{tag}"


def object_type(repo: Path | str, ref: str) -> list[str]:
    """`tag` for an annotated tag, `commit` for a lightweight one."""
    return [*base(repo), "cat-file", "-t", ref]


def commit_of(repo: Path | str, ref: str) -> list[str]:
    """The commit a ref points at (peeling an annotated tag); fails when it does not exist."""
    return [*base(repo), "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"]


def is_ancestor(repo: Path | str, ancestor: str, descendant: str) -> list[str]:
    """Exit 0 when `ancestor` is reachable from `descendant`, 1 when not."""
    return [*base(repo), "merge-base", "--is-ancestor", ancestor, descendant]


def verify_tag(repo: Path | str, tag: str) -> list[str]:
    """Checks the tag's signature (exit 0 when it is signed by a trusted key)."""
    return [*base(repo), "verify-tag", "--end-of-options", tag]


def show_file(repo: Path | str, ref: str, path: str) -> list[str]:
    """The content of `path` (relative to the repository's root) at `ref`."""
    return [*base(repo), "show", f"{ref}:{path}"]


def status_porcelain(repo: Path | str) -> list[str]:
    """Changed and untracked files of the work tree, one per line; empty when clean."""
    return [*base(repo), "status", "--porcelain", "--untracked-files=normal"]


def unpushed_commits(repo: Path | str) -> list[str]:
    """Commits on local branches that no remote-tracking branch contains."""
    return [*base(repo), "log", "--branches", "--not", "--remotes", "--format=%H %s"]


def list_tags(repo: Path | str, pattern: str = "v*") -> list[str]:
    return [*base(repo), "tag", "--list", pattern]


def archive(repo: Path | str, ref: str, output: Path | str) -> list[str]:
    """Writes the tree of `ref` as a tar file (only committed files: no work-tree leftovers)."""
    return [*base(repo), "archive", "--format=tar", f"--output={output}", ref]


def tag_date(repo: Path | str, ref: str) -> list[str]:
    """The committer date of the tagged commit, strict ISO 8601 (a reproducible "created")."""
    return [*base(repo), "log", "-1", "--format=%cI", f"{ref}^{{commit}}"]


def remote_url(repo: Path | str, remote: str) -> list[str]:
    return [*base(repo), "remote", "get-url", remote]
