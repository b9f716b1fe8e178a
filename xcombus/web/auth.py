"""The ``/api/v1`` bearer guard: when any token is configured (XCOMBUS_API_TOKEN, or the
scoped tokens of :mod:`xcombus.web.tokens`, either scope: v1 only reads), every /api/v1
route needs ``Authorization: Bearer <token>``. Compared in constant time; never logged or echoed."""

from __future__ import annotations

from typing import Final

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException
from litestar.handlers.base import BaseRouteHandler
from litestar.openapi.spec import SecurityScheme
from litestar.types import Guard

from .tokens import TokenStore

__all__ = ["SCHEME_NAME", "bearer_guard", "security_scheme"]

#: The name of the security scheme in the OpenAPI document.
SCHEME_NAME: Final = "BearerToken"
_CHALLENGE: Final = {"WWW-Authenticate": 'Bearer realm="xcombus"'}


def security_scheme() -> SecurityScheme:
    """The OpenAPI description of the token."""
    return SecurityScheme(type="http", scheme="bearer",
                          description="The server's XCOMBUS_API_TOKEN, as `Authorization: Bearer <token>`.")


def bearer_guard(tokens: TokenStore) -> Guard:
    """A guard that admits a request only when it carries one of ``tokens`` as its bearer token."""

    def guard(connection: ASGIConnection, _handler: BaseRouteHandler) -> None:  # type: ignore[type-arg]
        header = connection.headers.get("authorization")
        if header is None:
            raise NotAuthorizedException(
                detail="this API needs a token: send 'Authorization: Bearer <token>' "
                       "(the server's XCOMBUS_API_TOKEN)", headers=_CHALLENGE)
        scheme, _sep, given = header.partition(" ")
        # Headers arrive decoded as latin-1: TokenStore encodes back to the bytes sent and
        # compares in constant time.
        if scheme.lower() != "bearer" or not given.strip() or tokens.principal(given.strip()) is None:
            raise NotAuthorizedException(detail="the bearer token is not valid", headers=_CHALLENGE)

    return guard
