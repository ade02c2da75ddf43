"""The server's console scripts: `spatialgen-api`, `spatialgen-worker`, `spatialgen-admin`.

The uploader's install (`pip install spatialgen-upload`) carries these too, without the libraries they run on;
there they stop with one line saying what to install, instead of an ImportError's traceback.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable

EXTRA_HINT = "pip install 'spatialgen-upload[server]'"


def _entry(module: str, command: str) -> Callable[[], None]:
    def run() -> None:
        try:
            main = importlib.import_module(module).main
        except ModuleNotFoundError as exc:
            sys.stderr.write(f"{command} needs the server's libraries ({exc.name} is not installed): {EXTRA_HINT}\n")
            raise SystemExit(2) from None
        main()

    run.__doc__ = f"`{command}`"
    return run


api = _entry("app.http.serve", "spatialgen-api")
worker = _entry("worker.run", "spatialgen-worker")
admin = _entry("app.admin.cli", "spatialgen-admin")
