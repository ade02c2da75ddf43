"""`spatialgen-api`: the API server process (granian serving app.http.asgi:app), as run by the image and `make run`.

SIGTERM is graceful: granian stops accepting, lets in-flight requests finish for up to
SPATIALGEN_SHUTDOWN_GRACE_SECONDS, then ends its workers.
"""

from __future__ import annotations

from granian import Granian
from granian.constants import Interfaces

from app.settings import Settings
from app.storage.credentials import require_credentials

ASGI_TARGET = "app.http.asgi:app"


def main() -> None:
    """Console-script entry point: serve the API with the SPATIALGEN_* settings."""
    settings = Settings.from_env()
    require_credentials(settings.storage)  # no S3 credentials at all: stop here, not in a crash-looping server worker
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
