"""``mtst serve``: a trained model behind HTTP (FastAPI + uvicorn).

:mod:`~mtst.serve.app` builds the application and its routes, :mod:`~mtst.serve.batcher` gathers the
texts of concurrent requests into shared forward passes, :mod:`~mtst.serve.guard` bounds every request
before it is parsed, :mod:`~mtst.serve.http` bounds how long a client may take to send it,
:mod:`~mtst.serve.metrics` counts what happened, and :mod:`~mtst.serve.server` runs it all.
"""

from __future__ import annotations

from mtst.config import ServeSettings
from mtst.serve.app import create_app, text_problems
from mtst.serve.server import serve

__all__ = ["ServeSettings", "create_app", "serve", "text_problems"]
