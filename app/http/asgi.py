"""ASGI entry point for granian/uvicorn: `app.http.asgi:app`.

Settings come from SPATIALGEN_* variables at import, as servers import this module in each worker.
"""

from app.http.app import create_app

app = create_app()
