"""Plain JSON values from the library's results: dataclasses, enums, paths, tuples.

One conversion for everything that leaves as JSON (`--json` output, the evidence a pipeline run
stores, an error's facts), so a result reads the same wherever it is read back.
"""

from __future__ import annotations

import dataclasses
import enum
from pathlib import Path
from typing import Any


def jsonable(value: Any) -> Any:
    """`value` as dicts, lists, strings and numbers (what json.dumps takes)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value
