"""Scoped bearer tokens of the HTTP API, and ``POST /auth/token`` for configured users.

Tokens come from configuration only: ``XCOMBUS_API_TOKENS`` (``NAME:SCOPE:SECRET``
entries, commas or newlines), the file named by ``XCOMBUS_API_TOKENS_FILE`` (one entry per
line), and the older ``XCOMBUS_API_TOKEN``, a read token of the principal ``api_token``.
A token's NAME is the principal: the actor its writes are recorded with. Scope ``read``
reads; ``write`` reads and writes.

* No token configured at all: reads are open and the server is read-only (a write is a
  403 that says how to configure a write token).
* Any token configured: every API request needs ``Authorization: Bearer <secret>`` (401
  without one, 403 for an unknown one, as Airflow 3), and writes need a write token (403).

Secrets are compared in constant time against every configured token (no early exit on
the first match), never logged, never echoed, masked in ``repr``.
"""

from __future__ import annotations

import hmac
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal, NamedTuple

import msgspec
from litestar import Request, post
from litestar.connection import ASGIConnection
from litestar.datastructures import State
from litestar.exceptions import HTTPException, NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import (
    OAuthFlow,
    OAuthFlows,
    OpenAPIMediaType,
    OpenAPIType,
    Operation,
    RequestBody,
    Schema,
    SecurityScheme,
)
from litestar.types import Guard

from ..errors import XComConfigError
from ..settings import Settings
from .models_v2 import HTTPExceptionResponse, LoginBody, LoginResponse

__all__ = ["OAUTH2_SCHEME", "BEARER_SCHEME", "Principal", "Scope", "TokenStore", "login_handler",
           "principal_of", "read_guard", "v2_security_schemes", "write_guard"]

Scope = Literal["read", "write"]
#: Names of the v2 security schemes in the OpenAPI document (Airflow 3's).
OAUTH2_SCHEME: Final = "OAuth2PasswordBearer"
BEARER_SCHEME: Final = "HTTPBearer"
#: The principal of XCOMBUS_API_TOKEN.
LEGACY_PRINCIPAL: Final = "api_token"
_NAME = re.compile(r"[A-Za-z0-9._@-]{1,128}")
_CHALLENGE: Final = {"WWW-Authenticate": "Bearer"}
_STATE_KEY: Final = "xcombus_principal"
_HOW_TO_WRITE: Final = ("configure a write token, e.g. XCOMBUS_API_TOKENS='alice:write:<secret>' (or a "
                        "line 'alice:write:<secret>' in the file named by XCOMBUS_API_TOKENS_FILE), and "
                        "send it as 'Authorization: Bearer <secret>'")


class Principal(NamedTuple):
    """Who a request is: a token's name and scope (``anonymous`` when no token is configured)."""

    name: str
    scope: Scope


def _entries(text: str) -> list[str]:
    lines = (line.split("#", 1)[0] if line.lstrip().startswith("#") else line for line in text.splitlines())
    return [e.strip() for line in lines for e in line.split(",") if e.strip()]


def _where(source: str, index: int) -> str:
    return f"{source} entry {index + 1}"


class TokenStore:
    """The configured tokens and users; the one place secrets are compared."""

    def __init__(self, tokens: list[tuple[str, Scope, str]], users: list[tuple[str, str]]) -> None:
        self._tokens = [(name, scope, secret.encode()) for name, scope, secret in tokens]
        by_name: dict[str, str] = {}
        for name, scope, secret in tokens:  # a user logs in to its write token if it has one
            if name not in by_name or scope == "write":
                by_name[name] = secret
        self._users = []
        for index, (name, password) in enumerate(users):
            if name not in by_name:
                raise XComConfigError(
                    f"XCOMBUS_API_USERS {_where('', index).strip()}: user {name!r} has no token: add "
                    f"'{name}:read:<secret>' or '{name}:write:<secret>' to XCOMBUS_API_TOKENS")
            self._users.append((name, password.encode(), by_name[name]))

    @classmethod
    def from_settings(cls, settings: Settings) -> TokenStore:
        """Read XCOMBUS_API_TOKENS, XCOMBUS_API_TOKENS_FILE, XCOMBUS_API_TOKEN and XCOMBUS_API_USERS;
        raise XComConfigError (naming the entry, never its secret) for a malformed one."""
        sources = [("XCOMBUS_API_TOKENS", settings.api_tokens)]
        if settings.api_tokens_file:
            try:
                sources.append((settings.api_tokens_file, Path(settings.api_tokens_file).read_text()))
            except OSError as exc:
                raise XComConfigError(f"XCOMBUS_API_TOKENS_FILE {settings.api_tokens_file!r} cannot be "
                                      f"read: {exc.strerror}") from None
        tokens: list[tuple[str, Scope, str]] = []
        for source, text in sources:
            for index, entry in enumerate(_entries(text)):
                name, _, rest = entry.partition(":")
                scope, _, secret = rest.partition(":")
                if not _NAME.fullmatch(name) or scope not in ("read", "write") or not secret \
                        or not secret.isprintable() or not secret.isascii():
                    raise XComConfigError(
                        f"{_where(source, index)} is not NAME:SCOPE:SECRET (NAME: 1-128 of letters, "
                        "digits and ._@-; SCOPE: read or write; SECRET: printable ASCII, no commas)")
                tokens.append((name, "write" if scope == "write" else "read", secret))
        if settings.api_token:
            tokens.append((LEGACY_PRINCIPAL, "read", settings.api_token))
        users = []
        for index, entry in enumerate(_entries(settings.api_users)):
            name, _, password = entry.partition(":")
            if not _NAME.fullmatch(name) or not password:
                raise XComConfigError(f"{_where('XCOMBUS_API_USERS', index)} is not NAME:PASSWORD")
            users.append((name, password))
        return cls(tokens, users)

    def __repr__(self) -> str:
        return f"TokenStore(tokens={[(n, s, '***') for n, s, _ in self._tokens]}, users={len(self._users)})"

    @property
    def configured(self) -> bool:
        """Whether any token is configured (then every API request needs one)."""
        return bool(self._tokens)

    @property
    def writable(self) -> bool:
        """Whether any write token is configured (else the server is read-only)."""
        return any(scope == "write" for _, scope, _ in self._tokens)

    def principal(self, secret: str) -> Principal | None:
        """The principal of a presented secret, or None; every token is compared, in constant time."""
        given = secret.encode("latin-1", "replace")
        found: Principal | None = None
        for name, scope, expected in self._tokens:
            if hmac.compare_digest(given, expected) and found is None:
                found = Principal(name, scope)
        return found

    def login(self, username: str, password: str) -> str | None:
        """The token of a configured user whose password matches, or None."""
        given = password.encode()
        token = None
        for name, expected, secret in self._users:
            if hmac.compare_digest(given, expected) and name == username and token is None:
                token = secret
        return token


def _bearer(connection: ASGIConnection[Any, Any, Any, Any]) -> str | None:
    header = connection.headers.get("authorization")
    if header is None:
        return None
    scheme, _sep, given = header.partition(" ")
    return given.strip() if scheme.lower() == "bearer" and given.strip() else ""


def _authenticate(store: TokenStore, connection: ASGIConnection[Any, Any, Any, Any]) -> Principal:
    if not store.configured:
        return Principal("anonymous", "read")
    given = _bearer(connection)
    if given is None:
        raise NotAuthorizedException(detail="Not authenticated", headers=_CHALLENGE)
    principal = store.principal(given) if given else None
    if principal is None:
        raise PermissionDeniedException(detail="Invalid token: send one of the server's configured "
                                               "tokens as 'Authorization: Bearer <secret>'")
    return principal


def read_guard(store: TokenStore) -> Guard:
    """Admit a request with any valid token (or any request when no token is configured)."""

    def guard(connection: ASGIConnection[Any, Any, Any, Any], _handler: BaseRouteHandler) -> None:
        State(connection.scope.setdefault("state", {}))[_STATE_KEY] = _authenticate(store, connection)

    return guard


def write_guard(store: TokenStore) -> Guard:
    """Admit a request only with a write token; a read-only server says how to configure one."""

    def guard(connection: ASGIConnection[Any, Any, Any, Any], _handler: BaseRouteHandler) -> None:
        if not store.configured:
            raise PermissionDeniedException(
                detail=f"this xcombus server is read-only: no write token is configured; {_HOW_TO_WRITE}")
        principal = _authenticate(store, connection)
        if principal.scope != "write":
            raise PermissionDeniedException(
                detail=f"Forbidden: the token of {principal.name!r} has the read scope and writes need "
                       f"the write scope; {_HOW_TO_WRITE}")
        State(connection.scope.setdefault("state", {}))[_STATE_KEY] = principal

    return guard


def principal_of(request: Request[Any, Any, Any]) -> Principal:
    """The principal a guard admitted this request as."""
    principal = request.state.get(_STATE_KEY)
    if not isinstance(principal, Principal):  # a route without a guard: a bug, not the caller's fault
        raise RuntimeError("no guard authenticated this request")
    return principal


def v2_security_schemes() -> dict[str, SecurityScheme]:
    """Airflow 3's two schemes: both come down to ``Authorization: Bearer <token>``."""
    return {
        OAUTH2_SCHEME: SecurityScheme(type="oauth2", flows=OAuthFlows(
            password=OAuthFlow(token_url="/auth/token", scopes={}))),
        BEARER_SCHEME: SecurityScheme(type="http", scheme="bearer", description=(
            "A token of XCOMBUS_API_TOKENS (read or write scope), XCOMBUS_API_TOKENS_FILE or "
            "XCOMBUS_API_TOKEN (read), as `Authorization: Bearer <token>`.")),
    }


_FORM = "application/x-www-form-urlencoded"
_CREDENTIAL = Schema(type=OpenAPIType.STRING, min_length=1)
_LOGIN_SCHEMA = Schema(type=OpenAPIType.OBJECT, properties={"username": _CREDENTIAL, "password": _CREDENTIAL},
                       required=["username", "password"], additional_properties=False)


@dataclass
class _LoginOperation(Operation):
    """The login's body, documented as Airflow does: JSON or a form (the handler reads either)."""

    def __post_init__(self) -> None:
        self.request_body = RequestBody(required=True, content={
            media: OpenAPIMediaType(schema=_LOGIN_SCHEMA) for media in ("application/json", _FORM)})
_LOGIN_DECODER = msgspec.json.Decoder(LoginBody)


def login_handler(store: TokenStore) -> Any:
    """``POST /auth/token`` as Airflow 3's simple auth manager answers it: JSON or form
    ``{username, password}`` of a configured user -> 201 ``{"access_token": ...}``."""

    def error(status: int, detail: str) -> HTTPException:
        return HTTPException(status_code=status, detail=detail)

    @post("/auth/token", status_code=201, tags=["Login"], operation_id="create_token",
          summary="Get a token for a configured user", security=[], operation_class=_LoginOperation,
          responses={status: ResponseSpec(data_container=HTTPExceptionResponse, description=text,
                                          generate_examples=False)
                     for status, text in ((400, "Username or password is empty."),
                                          (401, "Invalid credentials."),
                                          (415, "The body is neither JSON nor a form."),
                                          (422, "The body is not {username, password}."))})
    async def create_token(request: Request[Any, Any, Any]) -> LoginResponse:
        """Exchange a configured user's password (XCOMBUS_API_USERS) for its token; the
        body is JSON or a form with `username` and `password`."""
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media == "application/json":
            try:
                body = _LOGIN_DECODER.decode(await request.body())
            except msgspec.DecodeError as exc:
                raise error(422, f"the body must be a JSON object {{username, password}}: {exc}") from None
        elif media == _FORM:
            form = await request.form()
            username, password = form.get("username"), form.get("password")
            if not isinstance(username, str) or not isinstance(password, str):
                raise error(422, "the form needs the fields username and password")
            body = LoginBody(username=username, password=password)
        else:
            raise error(415, "Unsupported Media Type")
        if not body.username or not body.password:
            raise error(400, "Username and password must be provided")
        token = store.login(body.username, body.password)
        if token is None:
            raise error(401, "Invalid credentials")
        return LoginResponse(access_token=token)

    return create_token

