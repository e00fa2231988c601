"""The engine boundary: the only code of deploytools that imports the docker SDK or starts a
child process.

- `engine.connection.connect(docker_host)` -> `engine.client.Engine`, the typed engine:
  containers (`Container`: state, logs, stats, stop/remove, and `exec` / `exec_stream` /
  `exec_attached` to run a program inside it), images (`Image`, build, push, tag, remove),
  volumes, and one-off containers (`OneOff` + `Engine.run`).
- `engine.exec`: `ExecResult`, the three ways a program runs in a container (buffered,
  streamed, attached), each with a deadline.
- `engine.process`: child processes (`run`, `ProcessResult`, the `Runner` protocol) with an
  environment built from an allow-list (`child_env`).
- `engine.compose`: which Compose is installed, and the environment a Compose child gets.
- `engine.git`: git as a child process (`run_git`, the `GitRunner` protocol).
- `engine.errors`: what the SDK raises, under our names (`EngineError`, `NotFound`, ...).

Argv is built elsewhere, by the pure functions of `deploytools.commands`. Nothing here imports
the docker SDK at module level: it loads when an engine is first connected.
"""

from __future__ import annotations

from deploytools.engine.client import Container, Engine, Image, Mount, OneOff, Volume
from deploytools.engine.connection import CONNECT_TIMEOUT_S, connect
from deploytools.engine.errors import EngineAPIError, EngineError, ImageNotFound, NotFound
from deploytools.engine.exec import AttachedExec, ExecResult, ExecStream
from deploytools.engine.process import ProcessResult, ProcessTimedOut, ProgramNotFound, Runner

__all__ = [
    "CONNECT_TIMEOUT_S",
    "AttachedExec",
    "Container",
    "Engine",
    "EngineAPIError",
    "EngineError",
    "ExecResult",
    "ExecStream",
    "Image",
    "ImageNotFound",
    "Mount",
    "NotFound",
    "OneOff",
    "ProcessResult",
    "ProcessTimedOut",
    "ProgramNotFound",
    "Runner",
    "Volume",
    "connect",
]
