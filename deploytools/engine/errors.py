"""The engine's own errors: what the docker SDK and its transport raise, under our names.

Callers above the engine catch these, never the SDK's classes (they never import the SDK). An
error the caller does not catch is a bug (exit 70), as an SDK error was before: a caller that
can tell the user what happened turns it into a DeployError with what was left untouched.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


class EngineError(Exception):
    """The engine refused an operation, or the connection to it broke."""

    def __init__(self, message: str, *, explanation: str | None = None) -> None:
        super().__init__(message)
        #: The engine's own words, when it gave any (the SDK's `explanation`).
        self.explanation = explanation or message


class EngineAPIError(EngineError):
    """The engine answered with an error (the SDK's APIError)."""


class NotFound(EngineAPIError):
    """The container, image, volume or exec does not exist (any more)."""


class ImageNotFound(NotFound):
    """The image reference is not on the engine."""


@contextlib.contextmanager
def translated() -> Iterator[None]:
    """Turn the SDK's and its HTTP transport's exceptions raised in the block into ours."""
    # Loaded by the engine's first call already; deferred so importing this module is free.
    import docker.errors
    import requests.exceptions

    try:
        yield
    except docker.errors.ImageNotFound as exc:
        raise ImageNotFound(str(exc), explanation=_explanation(exc)) from exc
    except docker.errors.NotFound as exc:
        raise NotFound(str(exc), explanation=_explanation(exc)) from exc
    except docker.errors.APIError as exc:
        raise EngineAPIError(str(exc), explanation=_explanation(exc)) from exc
    except docker.errors.DockerException as exc:
        raise EngineError(str(exc)) from exc
    except requests.exceptions.RequestException as exc:
        raise EngineError(f"the connection to the engine broke: {exc}") from exc


def _explanation(exc: BaseException) -> str | None:
    value = getattr(exc, "explanation", None)
    return str(value) if value else None
