"""Release versions: the tag's `vMAJOR.MINOR.PATCH[-PRE]`, parsed and ordered."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import total_ordering

from deploytools.errors import UsageError
from deploytools.visible import invisibles, visible

#: Used with fullmatch only: "$" also matches before a final newline ("v1.15.2\n").
TAG_RE = re.compile(
    r"v(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)"
    r"(?:-([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?"
)


@total_ordering
@dataclass(frozen=True)
class Version:
    """A release version from a tag `vMAJOR.MINOR.PATCH[-PRERELEASE]`, ordered as SemVer orders."""

    major: int
    minor: int
    patch: int
    prerelease: str = ""

    @classmethod
    def parse(cls, tag: str) -> Version | None:
        match = TAG_RE.fullmatch(tag)
        if not match:
            return None
        major, minor, patch, pre = match.groups()
        return cls(int(major), int(minor), int(patch), pre or "")

    def __str__(self) -> str:
        core = f"{self.major}.{self.minor}.{self.patch}"
        return f"{core}-{self.prerelease}" if self.prerelease else core

    @property
    def tag(self) -> str:
        return f"v{self}"

    def _key(self) -> tuple[int, int, int, int, tuple[tuple[int, int, str], ...]]:
        # A release sorts after its pre-releases; pre-release identifiers compare numerically
        # when numeric, and numeric ones before alphanumeric ones.
        pre = tuple(
            (0, int(p), "") if p.isdigit() else (1, 0, p) for p in self.prerelease.split(".") if p
        )
        return (self.major, self.minor, self.patch, 0 if self.prerelease else 1, pre)

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return self._key() < other._key()


def parse_tag(tag: str) -> Version:
    """The version of a release tag, or a UsageError for anything but `vMAJOR.MINOR.PATCH[-PRE]`."""
    version = Version.parse(tag)
    if version is None:
        hidden = invisibles(tag)
        because = f" (it holds {', '.join(hidden)})" if hidden else ""
        raise UsageError(
            f'"{visible(tag)}" is not a release tag{because}: expected vMAJOR.MINOR.PATCH, '
            "for example v1.15.2 (a pre-release may add -rc.1)",
            untouched="nothing was done",
            facts={"tag": tag},
        )
    return version
