"""HTTP probes: one request, its status, its JSON and how long it took.

Transport failures (refused, reset, timed out) are answers too: an `Answer` with status 0 and
the error in words, so that a check can fail with a clear message instead of raising mid-suite.
Credentials only ever travel in request bodies and headers; nothing here logs or returns them.
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from deploytools.config import BodyValue, CheckUser, JsonScalar, LoginSettings
from deploytools.errors import UsageError

if TYPE_CHECKING:
    import requests

# requests (and urllib3) are imported in the functions that use them, not at the top:
# `deploytools --help` must not load them (start-up time). After the first client they are in
# sys.modules and each import is a dictionary lookup.

_MISSING = object()


@dataclass(frozen=True)
class Answer:
    """What came back: status (0 when nothing did), parsed JSON (None if not JSON), elapsed ms;
    `text` is a body that is not JSON (its first KB), for assertions on a plain-text answer."""

    method: str
    path: str
    status: int
    elapsed_ms: float
    json: Any = None
    error: str = ""
    text: str = field(default="", repr=False)

    @property
    def route(self) -> str:
        return f"{self.method} {self.path}"

    def describe(self) -> str:
        if self.status == 0:
            return f"{self.route}: no answer ({self.error})"
        return f"{self.route}: status {self.status}"


def json_get(document: Any, dotted: str) -> Any:
    """`document["a"]["b"]` for "a.b"; a missing step gives the `_MISSING` marker."""
    current = document
    for part in dotted.split("."):
        if isinstance(current, dict) and part in current:
            current = current[part]
        elif isinstance(current, list) and part.isdigit() and int(part) < len(current):
            current = current[int(part)]
        else:
            return _MISSING
    return current


def has_field(document: Any, dotted: str) -> bool:
    return json_get(document, dotted) is not _MISSING


def json_mismatches(document: Any, expected: Mapping[str, JsonScalar]) -> list[str]:
    """Each expected dotted field that is missing or different, in words."""
    problems = []
    for dotted, want in expected.items():
        got = json_get(document, dotted)
        if got is _MISSING:
            problems.append(f"{dotted} missing")
        elif got != want or (type(got) is bool) != (type(want) is bool):
            problems.append(f"{dotted} is {json.dumps(got)}, want {json.dumps(want)}")
    return problems


def body_mismatch(answer: Answer, want: JsonScalar) -> str:
    """Why the whole body is not `want` (a bare JSON scalar such as `true`, or text), or ""."""
    got = answer.json
    if answer.json is None and answer.text:
        got = answer.text.strip()
    same = got == want and (type(got) is bool) == (type(want) is bool)
    if same:
        return ""
    shown = json.dumps(got) if got is not None else "empty"
    return f"body is {shown[:80]}, want {json.dumps(want)}"


@dataclass(frozen=True)
class Credentials:
    """A test user's name and password (or static token), read from the environment. repr()
    hides the password and the token."""

    username: str
    password: str = field(repr=False)
    token: str = field(default="", repr=False)


def read_credentials(
    name: str,
    user: CheckUser,
    environ: Mapping[str, str] | None = None,
    *,
    environment: str = "",
    style: str = "json",
) -> Credentials:
    """The credentials of test user `name` in `environment` (its variable names there); a
    UsageError naming the variables (never their values) when one is not set."""
    environ = os.environ if environ is None else environ
    names = user.secrets_in(environment)
    static = style == "token" or bool(names.token_env)
    wanted = [names.token_env] if static else [names.username_env, names.password_env]
    missing = [v for v in wanted if not environ.get(v)]
    if missing:
        where = f" for {environment}" if environment else ""
        raise UsageError(
            f"the credentials of check user {name!r}{where} are not set: "
            + ", ".join(missing)
            + " (environment variables)",
            untouched="no check ran",
            hint="export them (in GitHub Actions, from the environment's secrets)",
            facts={"user": name, "missing": missing},
        )
    if static:
        return Credentials(environ.get(names.username_env, name), "", environ[names.token_env])
    return Credentials(environ[names.username_env], environ[names.password_env])


def encode_body(body: Mapping[str, BodyValue]) -> dict[str, Any]:
    """A body from deploy.toml as the request sends it (lists for TOML arrays)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in body.items()}


def _form_value(value: Any) -> Any:
    # A form field holds text: true/false as HTML forms send them, lists as repeated fields.
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return [_form_value(v) for v in value]
    return value


class HttpClient:
    """Requests to one service's base URL, with bearer tokens cached per test user."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout_s: float,
        login: LoginSettings | None = None,
        session: requests.Session | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.login_settings = login or LoginSettings()
        if session is None:
            import requests.adapters  # start-up time: see the top

            from deploytools.checks.http_retry import unanswered_retry  # start-up time: see the top

            session = requests.Session()
            # Enough kept-alive connections for a load test's workers: a smaller pool would
            # open and close a connection per request and measure that instead of the service.
            adapter = requests.adapters.HTTPAdapter(
                pool_connections=2, pool_maxsize=64, max_retries=unanswered_retry()
            )
            session.mount("http://", adapter)
            session.mount("https://", adapter)
        self.session = session
        self._tokens: dict[str, str] = {}

    def close(self) -> None:
        self.session.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        body: Mapping[str, Any] | None = None,
        body_format: str = "json",
        timeout_s: float | None = None,
        started: float | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Answer:
        """One request; `token` goes in the configured header with its scheme, `body` as JSON
        or form-encoded. `started` (a perf_counter time) lets a load test time a request from
        its scheduled start rather than from when a worker got to it."""
        import requests  # start-up time: see the top

        sent = {"Accept": "application/json", **(headers or {})}
        if token:
            scheme = self.login_settings.header_scheme
            sent[self.login_settings.header] = f"{scheme} {token}" if scheme else token
        encoded = encode_body(body) if body is not None else None
        form = body_format == "form" and encoded is not None
        begin = time.perf_counter() if started is None else started
        try:
            response = self.session.request(
                method,
                self.base_url + path,
                headers=sent,
                json=None if form else encoded,
                data={k: _form_value(v) for k, v in encoded.items()} if form and encoded else None,
                timeout=timeout_s or self.timeout_s,
                allow_redirects=False,
            )
        except requests.Timeout:
            elapsed = (time.perf_counter() - begin) * 1000
            return Answer(method, path, 0, elapsed, error=f"timed out after {elapsed:.0f} ms")
        except requests.RequestException as exc:
            elapsed = (time.perf_counter() - begin) * 1000
            return Answer(method, path, 0, elapsed, error=_reason(exc))
        elapsed = (time.perf_counter() - begin) * 1000
        try:
            document = response.json()
        except ValueError:
            # Plain text is kept (its start) for assertions; a JSON body is not kept as text:
            # a login answer holds a token.
            return Answer(method, path, response.status_code, elapsed, text=response.text[:1024])
        return Answer(method, path, response.status_code, elapsed, document)

    def text(self, path: str) -> tuple[Answer, str]:
        """GET a non-JSON document (Prometheus metrics): the answer and its body as text."""
        import requests  # start-up time: see the top

        begin = time.perf_counter()
        try:
            response = self.session.get(self.base_url + path, timeout=self.timeout_s)
        except requests.RequestException as exc:
            elapsed = (time.perf_counter() - begin) * 1000
            return Answer("GET", path, 0, elapsed, error=_reason(exc)), ""
        elapsed = (time.perf_counter() - begin) * 1000
        return Answer("GET", path, response.status_code, elapsed), response.text

    def login(self, credentials: Credentials) -> Answer:
        """The login request of styles "json" and "form" (an OAuth2 password grant)."""
        s = self.login_settings
        body: dict[str, Any] = {
            s.username_field: credentials.username,
            s.password_field: credentials.password,
        }
        if s.style == "form":
            body.setdefault("grant_type", "password")
        body.update(s.extra)
        return self.request("POST", s.path, body=body, body_format=s.style)

    def login_token(self, credentials: Credentials) -> str | None:
        """What goes in the auth header for these credentials, or None when login is refused.
        A static token and basic credentials need no request; their refusal shows on use."""
        s = self.login_settings
        if credentials.token:
            return credentials.token
        if s.style == "basic":
            pair = f"{credentials.username}:{credentials.password}".encode()
            return base64.b64encode(pair).decode("ascii")
        answer = self.login(credentials)
        token = json_get(answer.json, s.token_field)
        if answer.status != s.expect_status or not isinstance(token, str) or not token:
            return None
        return token

    def token_for(self, name: str, credentials: Credentials) -> str | None:
        """The token of test user `name` (cached), or None when the login is refused."""
        if name not in self._tokens:
            token = self.login_token(credentials)
            if token is None:
                return None
            self._tokens[name] = token
        return self._tokens[name]

    def forget_tokens(self) -> None:
        self._tokens.clear()


def _reason(exc: BaseException) -> str:
    """A short reason for a transport failure ("connection refused"), not a 300-character repr."""
    text = str(exc)
    for known in ("Connection refused", "Connection reset", "Name or service not known"):
        if known in text:
            return known.lower()
    first = text.splitlines()[0] if text else type(exc).__name__
    return first if len(first) <= 160 else first[:157] + "..."
