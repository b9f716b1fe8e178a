"""The ASGI app behind ``xcombus serve``: the read-only API, ``/health``, ``/openapi.json``
and the web page, over one XComLookup of the configured view.

    from xcombus.web import create_app
    app = create_app(Settings.from_env())       # any ASGI server can run it
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from litestar import Litestar, Router, get
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin
from litestar.openapi.spec import Components

from ..errors import XComViewError
from ..lookup import XComLookup
from ..settings import Settings
from .api import api_router
from .auth import SCHEME_NAME, bearer_guard, security_scheme
from .models import Health, ViewHealth
from .page import page_handlers
from .problems import exception_handlers

__all__ = ["create_app", "serve"]

_DESCRIPTION = """Read-only access to the XComs of an xcombus view, in Apache Airflow's REST
shape (`/api/v1`), plus the history of one XCom read from the Kafka topic. Errors are JSON
problems (`type`, `title`, `status`, `detail`)."""


def _version() -> str:
    try:
        return version("xcombus")
    except PackageNotFoundError:  # running from a source tree that is not installed
        return "0+unknown"


def _openapi(token_required: bool) -> OpenAPIConfig:
    # The document lives at /openapi.json: a router there whose root renders it.
    return OpenAPIConfig(
        title="xcombus", version=_version(), description=_DESCRIPTION,
        components=Components(security_schemes={SCHEME_NAME: security_scheme()} if token_required else None),
        render_plugins=[JsonRenderPlugin(path=["/"])],
        openapi_router=Router("/openapi.json", route_handlers=[], include_in_schema=False),
    )


def create_app(settings: Settings | None = None) -> Litestar:
    """The app for ``settings`` (default: from ``XCOMBUS_*``); its lookup is closed on shutdown."""
    settings = settings or Settings.from_env()
    lookup = XComLookup(settings)
    token = settings.api_token

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

    api = api_router(settings, lookup, guards=[bearer_guard(token)] if token else [],
                     security=[{SCHEME_NAME: []}] if token else None)
    return Litestar(
        route_handlers=[api, health, *page_handlers()],
        exception_handlers=exception_handlers,
        openapi_config=_openapi(bool(token)),
        on_shutdown=[lookup.close],
        debug=False,
    )


def serve(settings: Settings, host: str = "127.0.0.1", port: int = 8080) -> None:
    """Run the app with uvicorn until SIGINT/SIGTERM (the access log never shows headers)."""
    import uvicorn

    uvicorn.run(create_app(settings), host=host, port=port, log_level="info")
