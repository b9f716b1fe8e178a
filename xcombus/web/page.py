"""The web page: one static HTML file, a stylesheet and a small vanilla script, no build step.

Served openly (it holds no data); its calls to ``/api/v1`` carry the token the user typed,
kept in ``sessionStorage``. The Content-Security-Policy allows only this origin's own
script and style, so nothing inline and nothing from elsewhere runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from litestar import Response, get
from litestar.exceptions import NotFoundException
from litestar.handlers import HTTPRouteHandler

from ..errors import XComConfigError

__all__ = ["STATIC_DIR", "page_handlers"]

STATIC_DIR: Final = Path(__file__).resolve().parent / "static"
_TYPES: Final = {"app.js": "text/javascript", "style.css": "text/css", "favicon.svg": "image/svg+xml"}
_HEADERS: Final = {
    "Content-Security-Policy": ("default-src 'none'; script-src 'self'; style-src 'self'; "
                                "connect-src 'self'; img-src 'self' data:; base-uri 'none'; "
                                "form-action 'none'; frame-ancestors 'none'"),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def page_handlers() -> list[HTTPRouteHandler]:
    """Handlers for ``/`` (the page) and ``/static/{name}`` (its script and stylesheet)."""
    try:
        index = (STATIC_DIR / "index.html").read_bytes()
        assets = {name: (STATIC_DIR / name).read_bytes() for name in _TYPES}
    except OSError as exc:
        raise XComConfigError(
            f"the web page's files are missing from {STATIC_DIR} ({exc.strerror}): the package was "
            "installed without its data files; reinstall xcombus") from exc

    @get("/", sync_to_thread=False, include_in_schema=False)
    def page() -> Response[bytes]:
        return Response(index, media_type="text/html", headers=_HEADERS)

    @get("/static/{name:str}", sync_to_thread=False, include_in_schema=False)
    def asset(name: str) -> Response[bytes]:
        if name not in assets:
            raise NotFoundException(f"no static file {name!r}")
        return Response(assets[name], media_type=_TYPES[name], headers=_HEADERS)

    return [page, asset]
