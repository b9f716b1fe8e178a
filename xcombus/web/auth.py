"""The optional bearer token: every /api route needs ``Authorization: Bearer <token>``
when ``XCOMBUS_API_TOKEN`` is set. Compared in constant time; never logged or echoed."""

from __future__ import annotations

import hmac
from typing import Final

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException
from litestar.handlers.base import BaseRouteHandler
from litestar.openapi.spec import SecurityScheme
from litestar.types import Guard

__all__ = ["SCHEME_NAME", "bearer_guard", "security_scheme"]

#: The name of the security scheme in the OpenAPI document.
SCHEME_NAME: Final = "BearerToken"
_CHALLENGE: Final = {"WWW-Authenticate": 'Bearer realm="xcombus"'}


def security_scheme() -> SecurityScheme:
    """The OpenAPI description of the token."""
    return SecurityScheme(type="http", scheme="bearer",
                          description="The server's XCOMBUS_API_TOKEN, as `Authorization: Bearer <token>`.")


def bearer_guard(token: str) -> Guard:
    """A guard that admits a request only when it carries ``token`` as its bearer token."""
    expected = token.encode()

    def guard(connection: ASGIConnection, _handler: BaseRouteHandler) -> None:  # type: ignore[type-arg]
        header = connection.headers.get("authorization")
        if header is None:
            raise NotAuthorizedException(
                detail="this API needs a token: send 'Authorization: Bearer <token>' "
                       "(the server's XCOMBUS_API_TOKEN)", headers=_CHALLENGE)
        scheme, _sep, given = header.partition(" ")
        # Headers arrive decoded as latin-1: encoding back gives the bytes sent. compare_digest
        # takes as long wherever the tokens differ.
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode("latin-1"), expected):
            raise NotAuthorizedException(detail="the bearer token is not valid", headers=_CHALLENGE)

    return guard
