"""The Alembic revisions of a source tree, read as text: never imported, never run.

The revision files' `revision = "..."` and `down_revision = ...` are literals Alembic's template
writes; reading them with `ast` gives the revision graph (its heads, each revision's file and
text, for the acknowledgements of the lint) of a tag that has no image yet, or of the release
before it, without running the service's code in deploytools' own interpreter. What the
migrations do is only ever learnt inside the release's image (`migration_render`).
"""

from __future__ import annotations

import ast
import configparser
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from deploytools.errors import CheckFailed

#: A revision file larger than this is not read (Alembic's files are a few KB).
MAX_FILE_BYTES = 1024 * 1024


@dataclass(frozen=True)
class RevisionFile:
    """One migration: its revision, the revisions it follows, its file (relative to the
    source directory) and its text."""

    revision: str
    down_revisions: tuple[str, ...]
    path: str
    text: str


@dataclass(frozen=True)
class Revisions:
    """The revisions of one source tree, by revision id."""

    files: Mapping[str, RevisionFile]

    @property
    def heads(self) -> tuple[str, ...]:
        """The revisions no other revision follows, sorted."""
        followed = {down for f in self.files.values() for down in f.down_revisions}
        return tuple(sorted(r for r in self.files if r not in followed))

    @property
    def paths(self) -> dict[str, str]:
        return {r: f.path for r, f in self.files.items()}

    @property
    def texts(self) -> dict[str, str]:
        return {r: f.text for r, f in self.files.items()}


def _literal(node: ast.expr | None) -> tuple[str, ...] | None:
    """A revision literal as a tuple: "a" -> ("a",), None -> (), ("a", "b") -> both; None when
    the value is not a literal."""
    if node is None:
        return None
    try:
        value = ast.literal_eval(node)
    except ValueError:
        return None
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, tuple | list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    return None


def _assignments(tree: ast.Module) -> dict[str, ast.expr | None]:
    """The module-level assignments to plain names (`x = ...` and `x: T = ...`)."""
    found: dict[str, ast.expr | None] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    found[target.id] = node.value
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            found[node.target.id] = node.value
    return found


def script_directories(source: Path, alembic_ini: str) -> list[Path]:
    """Where the revision files are, per `alembic_ini` (its script_location's versions/ and
    its version_locations); the whole source tree when the ini names a package resource."""
    ini = source / alembic_ini
    parser = configparser.ConfigParser(defaults={"here": str(ini.parent)})
    try:
        parser.read(ini, encoding="utf-8")
        section = parser["alembic"]
        location = section.get("script_location", "")
        extra = section.get("version_locations", "")
    except (configparser.Error, KeyError, UnicodeDecodeError) as exc:
        raise CheckFailed(
            f"{alembic_ini} is not an Alembic configuration with an [alembic] section: {exc}",
            untouched="nothing was built or changed",
            hint="fix release.alembic_ini in deploy.toml, or the file",
        ) from None
    places = [Path(p) for p in extra.replace(",", " ").split()]
    if location and ":" not in location:
        base = Path(location) if Path(location).is_absolute() else ini.parent / location
        places.append(base / "versions")
    found = [p for p in places if p.is_dir() and p.resolve().is_relative_to(source.resolve())]
    return found or [source]


def read_revisions(source: Path, alembic_ini: str) -> Revisions:
    """The revisions of the tree at `source` (an extracted tag), read with `ast`.

    :param source: the service's source directory in the extracted tree.
    :param alembic_ini: the Alembic configuration, relative to `source`.
    :raises CheckFailed: no `alembic_ini` at `source` (a wrong path is an error, never "no
        migrations"), or a revision file whose revision is not a literal.
    """
    if not (source / alembic_ini).is_file():
        raise CheckFailed(
            f"there is no {alembic_ini} in the release's source (release.alembic_ini)",
            untouched="nothing was built or changed",
            hint="set release.alembic_ini in deploy.toml to the Alembic configuration's path, "
            "relative to the service's source directory",
            facts={"alembic_ini": alembic_ini},
        )
    files: dict[str, RevisionFile] = {}
    for directory in script_directories(source, alembic_ini):
        for path in sorted(directory.rglob("*.py")):
            if path.is_symlink() or not path.is_file() or path.stat().st_size > MAX_FILE_BYTES:
                continue
            text = path.read_text(encoding="utf-8", errors="replace")
            try:
                module = ast.parse(text, filename=str(path))
            except SyntaxError:
                continue  # not a revision file Alembic could load either
            names = _assignments(module)
            if "revision" not in names or "down_revision" not in names:
                continue
            revision = _literal(names["revision"])
            down = _literal(names["down_revision"])
            relative = path.relative_to(source).as_posix()
            if revision is None or len(revision) != 1 or down is None:
                raise CheckFailed(
                    f"{relative}: its revision or down_revision is not a literal string, so "
                    "the revision graph cannot be read without running it",
                    untouched="nothing was built or changed",
                    hint="write revision and down_revision as plain strings, as Alembic does",
                    facts={"file": relative},
                )
            files[revision[0]] = RevisionFile(revision[0], down, relative, text)
    return Revisions(files)
