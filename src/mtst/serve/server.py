"""Running the application: one process or several (uvicorn workers), the port checked and the model
loaded first so that a bad run or a busy port fails once, with its message."""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from mtst.config import ServeSettings
from mtst.errors import MtstError
from mtst.extras import require
from mtst.modeling.model import MultiTaskModel
from mtst.modeling.saved import is_export
from mtst.serve.app import create_app

SERVE_ENV = "MTST_SERVE_SPEC"


def check_port(host: str, port: int) -> None:
    """Fail with the port's name when it cannot be bound (before the server starts and logs)."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise MtstError(f"--host {host}: not an address this machine can bind ({exc.strerror})") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            sock.bind(address)
        except OSError as exc:
            reason = "already in use" if exc.errno == errno.EADDRINUSE else exc.strerror
            raise MtstError(f"--port {port}: cannot listen on {host}:{port} ({reason}); choose another port") from None


def serve(
    run: str | Path,
    host: str = "127.0.0.1",
    port: int = 8000,
    settings: ServeSettings | None = None,
    announce: Callable[[str], None] | None = None,
) -> None:
    """Load a model and serve it until interrupted, in one process or several (``settings.workers``).

    The model is loaded and the port checked first, so that a bad run or a busy port fails
    once, with its message; ``announce`` then hears where the server listens.
    """
    require("serve", "mtst serve")
    import uvicorn

    settings = settings or ServeSettings()
    if settings.api_key is None:
        settings.api_key = os.environ.get("MTST_API_KEY") or None
    model = load_served(run, settings)
    check_port(host, port)
    if announce is not None:
        announce(f"serving {run} on http://{host}:{port} (a page to try it at /, the API schema at /openapi.json)")
    from mtst.serve.http import protocol

    http = protocol(settings.read_timeout_s)  # a late request head closes its connection
    workers = settings.workers
    if workers == 1:
        uvicorn.run(create_app(model, settings, str(run)), host=host, port=port, log_level="info", http=http)
        return
    del model
    threads = max(1, torch.get_num_threads() // workers)
    os.environ[SERVE_ENV] = json.dumps({"run": str(run), "settings": asdict(settings), "threads": threads})
    uvicorn.run(
        f"{__name__}:app_from_env", factory=True, workers=workers, host=host, port=port, log_level="info", http=http
    )


def app_from_env() -> Any:
    """The application of one server process started by :func:`serve` (reads its spec from the environment)."""
    from mtst.serve.http import protocol

    spec = json.loads(os.environ[SERVE_ENV])
    torch.set_num_threads(spec["threads"])
    protocol(spec["settings"]["read_timeout_s"])  # this process's connections get the same head deadline
    settings = ServeSettings(**spec["settings"])
    return create_app(load_served(spec["run"], settings), settings, spec["run"])


def load_served(run: str | Path, settings: ServeSettings) -> Any:
    """The model to serve: a trained model (at ``settings.precision``, which is set to what it resolved to),
    or an export of ``mtst export --format onnx|openvino``, run as it was exported."""
    if is_export(run):
        from mtst.export import OnnxPredictor, check_precision

        check_precision(settings.precision)
        return OnnxPredictor(run, threads=torch.get_num_threads())
    model = MultiTaskModel.load(run)
    settings.precision = model.encoder.set_inference_precision(settings.precision)
    settings.packing = model.encoder.set_packing(settings.packing)
    return model
