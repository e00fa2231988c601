"""The retry policy of the checks' HTTP connections: send again only what cannot have been
answered. Its own module so that `deploytools.checks.http` loads urllib3 only with a client."""

from __future__ import annotations

import http.client
from types import TracebackType
from typing import TYPE_CHECKING, Self

from urllib3.exceptions import NewConnectionError, ProtocolError
from urllib3.util.retry import Retry

if TYPE_CHECKING:
    from urllib3.connectionpool import ConnectionPool
    from urllib3.response import BaseHTTPResponse

#: How a connection ends when the other side closed it before any byte of an answer came.
_CLOSED_BEFORE_ANSWER = (
    http.client.RemoteDisconnected,
    ConnectionResetError,
    BrokenPipeError,
    ConnectionAbortedError,
)


class SendAgainIfUnanswered(Retry):
    """Retry only what cannot have been answered: a connection that could not be made, or a
    kept-alive connection that was closed under a request before any byte of an answer came.

    A proxy closes idle kept-alive connections when it likes (HAProxy's http-keep-alive
    timeout); a request sent on one just then gets no answer at all, and would be taken for a
    service that refused a login. It is sent again, once or twice, on a new connection, whatever
    its method: nothing came back, so nothing was answered. A request that got any part of an
    answer (its body is read outside this), or timed out waiting for one, is never sent again.
    """

    def increment(
        self,
        method: str | None = None,
        url: str | None = None,
        response: BaseHTTPResponse | None = None,
        error: Exception | None = None,
        _pool: ConnectionPool | None = None,
        _stacktrace: TracebackType | None = None,
    ) -> Self:
        if error is not None and not _unanswered(error):
            raise error
        return super().increment(method, url, response, error, _pool, _stacktrace)


def _unanswered(error: Exception) -> bool:
    if isinstance(error, NewConnectionError):  # refused or unreachable: nothing was sent
        return True
    cause = error.args[1] if isinstance(error, ProtocolError) and len(error.args) > 1 else None
    return isinstance(cause, _CLOSED_BEFORE_ANSWER)


def unanswered_retry() -> Retry:
    """The retry policy of the checks' connections (see SendAgainIfUnanswered)."""
    return SendAgainIfUnanswered(
        total=2,
        connect=1,
        read=2,
        status=0,
        other=0,
        redirect=False,
        allowed_methods=None,  # any method: only unanswered requests get here
        backoff_factor=0,
        raise_on_status=False,
        respect_retry_after_header=False,
    )
