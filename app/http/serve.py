"""`spatialgen-api`: the API server process (granian serving app.http.asgi:app), as run by the image and `make run`.

SIGTERM is graceful: granian stops accepting, lets in-flight requests finish for up to
SPATIALGEN_SHUTDOWN_GRACE_SECONDS, then ends its workers. With SPATIALGEN_OPS_PORT set, each worker process also
serves the operations routes on that port (app/http/ops_port.py).
"""

from __future__ import annotations

import socket

from granian import Granian
from granian.constants import Interfaces

from app.settings import ServerConfig, Settings
from app.storage.credentials import require_credentials

ASGI_TARGET = "app.http.asgi:app"


def main() -> None:
    """Console-script entry point: serve the API with the SPATIALGEN_* settings."""
    settings = Settings.from_env()
    require_credentials(settings.storage)  # no S3 credentials at all: stop here, not in a crash-looping server worker
    check_ops_port(settings.server)  # the same for an operations port taken by another program
    Granian(
        ASGI_TARGET,
        address=settings.server.host,
        port=settings.server.port,
        interface=Interfaces.ASGI,
        workers=settings.server.api_workers,
        websockets=False,
        log_access=False,
        workers_kill_timeout=max(1, round(settings.server.shutdown_grace_seconds)),
        respawn_failed_workers=True,
    ).serve()


def check_ops_port(server: ServerConfig) -> None:
    """Exit when SPATIALGEN_OPS_PORT is set and cannot be bound the way the workers will bind it (SO_REUSEPORT)."""
    if not server.ops_port:
        return
    family = socket.AF_INET6 if ":" in server.host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if hasattr(socket, "SO_REUSEPORT"):
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            probe.bind((server.host, server.ops_port))
        except OSError as exc:
            where = f"{server.host}:{server.ops_port}"
            raise SystemExit(f"spatialgen: cannot bind SPATIALGEN_OPS_PORT {where}: {exc}") from None
