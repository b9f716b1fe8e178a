"""The HTTP side of xcombus: a read-only API in Airflow's REST shape and a web page.

``xcombus serve`` runs :func:`serve`; :func:`create_app` gives the ASGI app itself.
See docs/http.md.
"""

from __future__ import annotations

from .app import create_app, serve

__all__ = ["create_app", "serve"]
