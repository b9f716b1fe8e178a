"""The ASGI app behind ``xcombus serve``: Airflow 2's read-only ``/api/v1``, Airflow 3's
``/api/v2`` (reads, and writes as override events) with ``/auth/token``, ``/health``,
``/openapi.json`` and the web page, over one XComLookup of the configured view.

    from xcombus.web import create_app
    app = create_app(Settings.from_env())       # any ASGI server can run it
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from litestar import Litestar, Router, get
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin
from litestar.openapi.spec import Components, Reference, SecurityScheme

from ..errors import XComViewError
from ..lookup import XComLookup
from ..settings import Settings
from .api import api_router
from .api_v2 import api_v2_router
from .auth import SCHEME_NAME, bearer_guard, security_scheme
from .errors_v2 import by_path
from .models import Health, ViewHealth
from .page import page_handlers
from .problems import exception_handlers
from .tokens import (
    BEARER_SCHEME,
    OAUTH2_SCHEME,
    TokenStore,
    login_handler,
    read_guard,
    v2_security_schemes,
    write_guard,
)
from .writes import ApiWriter

__all__ = ["create_app", "serve"]

_DESCRIPTION = """The XComs of an xcombus view in Apache Airflow's REST shapes: Airflow 2's
read-only `/api/v1` (errors are JSON problems: `type`, `title`, `status`, `detail`) and
Airflow 3's `/api/v2` (reads and writes; a write is an audited override event; errors are
`{"detail": ...}`), with `POST /auth/token`. Operations tagged `xcombus` are extensions:
the history of one XCom and what one try wrote."""


def _version() -> str:
    try:
        return version("xcombus")
    except PackageNotFoundError:  # running from a source tree that is not installed
        return "0+unknown"


def _openapi(token_required: bool) -> OpenAPIConfig:
    # The document lives at /openapi.json: a router there whose root renders it.
    schemes: dict[str, SecurityScheme | Reference] | None = (
        {SCHEME_NAME: security_scheme(), **v2_security_schemes()} if token_required else None)
    return OpenAPIConfig(
        title="xcombus", version=_version(), description=_DESCRIPTION,
        components=Components(security_schemes=schemes),
        render_plugins=[JsonRenderPlugin(path=["/"])],
        openapi_router=Router("/openapi.json", route_handlers=[], include_in_schema=False),
    )


def create_app(settings: Settings | None = None) -> Litestar:
    """The app for ``settings`` (default: from ``XCOMBUS_*``); its lookup is closed on shutdown."""
    settings = settings or Settings.from_env()
    lookup = XComLookup(settings)
    tokens = TokenStore.from_settings(settings)
    token = tokens.configured
    writer = ApiWriter(settings)

    @get("/health", sync_to_thread=False, tags=["Monitoring"], operation_id="get_health",
         summary="Health of the server and its view")
    def health() -> Health:
        """Always 200, as Airflow's /health: the body says whether the view is readable."""
        try:
            applied = sum(lookup.reader.applied_events().values())
        except XComViewError:  # the detail stays generic: /health is open, paths are not for it
            view = ViewHealth(status="unhealthy",
                              detail="the view is not readable yet: is the materializer running?")
        else:
            view = ViewHealth(status="healthy", detail="the view is readable", applied_events=applied)
        return Health(status=view.status, view=view)

    api = api_router(settings, lookup, guards=[bearer_guard(tokens)] if token else [],
                     security=[{SCHEME_NAME: []}] if token else None)
    api_v2 = api_v2_router(settings, lookup, writer, read_guards=[read_guard(tokens)],
                           write_guards=[write_guard(tokens)],
                           security=[{OAUTH2_SCHEME: []}, {BEARER_SCHEME: []}] if token else None)
    return Litestar(
        route_handlers=[api, api_v2, login_handler(tokens), health, *page_handlers()],
        exception_handlers=by_path(exception_handlers),
        openapi_config=_openapi(token),
        on_shutdown=[writer.close, lookup.close],
        debug=False,
    )


def serve(settings: Settings, host: str = "127.0.0.1", port: int = 8080) -> None:
    """Run the app with uvicorn until SIGINT/SIGTERM (the access log never shows headers)."""
    import uvicorn

    uvicorn.run(create_app(settings), host=host, port=port, log_level="info")
