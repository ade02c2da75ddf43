"""ASGI entry point for granian/uvicorn: `app.asgi:app`.

Settings come from SPATIALGEN_* variables at import, as servers import this module in each worker.
"""

from app.api import create_app

app = create_app()
