"""The API process's storage client, opened in the background: aiobotocore's import and S3 model loading
block for ~1.5 s, so they run in a thread at startup and never on a request's path.

Readiness checks storage through it, and part-urls provisions a file a client is waiting for through it.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

from app.settings import StorageConfig

if TYPE_CHECKING:
    from app.storage.s3 import ObjectStore


class LazyObjectStore:
    """One S3 client, created on first need (or at startup by `warm`), kept until `aclose`."""

    def __init__(self, config: StorageConfig, *, timeout: float) -> None:
        self.config = config
        self.timeout = timeout
        self._stack = contextlib.AsyncExitStack()
        self._opening: asyncio.Task[ObjectStore] | None = None

    def warm(self) -> None:
        """Start creating the client now (API startup), so the first caller does not pay for it."""
        if self._opening is None:
            self._opening = asyncio.create_task(self._open())

    async def get(self) -> ObjectStore:
        """The client; a caller that gives up meanwhile leaves the creation running for the next one."""
        if self._opening is None:
            self._opening = asyncio.create_task(self._open())
        opening = self._opening
        try:
            return await asyncio.shield(opening)
        except Exception:
            if self._opening is opening and opening.done():
                self._opening = None  # creating the client failed: try again next time
            raise

    async def get_if_ready(self) -> ObjectStore | None:
        """The client if it exists already (starting its creation if nobody has), else None at once."""
        if self._opening is None:
            self._opening = asyncio.create_task(self._open())
        if not self._opening.done():
            return None
        return await self.get()

    async def aclose(self) -> None:
        """Close the client, if one was created."""
        if self._opening is not None:
            with contextlib.suppress(Exception):
                await self._opening  # creation does no network I/O; let it finish so its client can be closed
        await self._stack.aclose()

    async def _open(self) -> ObjectStore:
        session = await asyncio.to_thread(_prepared_session)
        from app.storage.s3 import ObjectStore

        # One attempt, short timeouts: a dead store is reported now, not after retries and backoff.
        return await self._stack.enter_async_context(
            ObjectStore.connect(
                self.config, connect_timeout=self.timeout, read_timeout=self.timeout, attempts=1, pool_size=16,
                session=session,
            )
        )  # fmt: skip


def _prepared_session() -> Any:
    """An aiobotocore session with S3's model already loaded (run in a thread: imports and file reads block)."""
    from aiobotocore.session import get_session

    session = get_session()
    loader = session.get_component("data_loader")
    with contextlib.suppress(Exception):  # best effort: whatever is not cached here is loaded by create_client
        for kind in ("service-2", "endpoint-rule-set-1"):
            loader.load_service_model("s3", kind)
        for name in ("endpoints", "partitions", "sdk-default-configuration"):
            loader.load_data(name)
    return session
