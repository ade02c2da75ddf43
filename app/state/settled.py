"""`Settled`: wakes the API's completion waits when a completion attempt ends, instead of polling Redis for it.

The scripts that end an attempt (finish_complete, reject_complete, fail_file, redrive_completion) PUBLISH
`session_id:upload_id` on keys.SETTLED_CHANNEL in the same step. Each API process holds one subscription and wakes
the requests waiting on that file, which then read the group once. A wait registers before its job is queued, so
a message cannot pass it by while the subscription is up; while it is not (Redis restarting, a failover), waits
fall back to polling (`listening` is False), and a wait always keeps a slow poll as a backstop, so a lost message
costs latency, never an answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from typing import Any

from redis.exceptions import RedisError

from app.state.keys import SETTLED_CHANNEL

log = logging.getLogger("spatialgen.api")

STOP_RETRY_SECONDS = 0.5
"""How long `stop` waits for the task to end before cancelling it again."""
RECONNECT_SECONDS = 1.0
"""Pause before subscribing again after the subscription broke."""
READ_SECONDS = 1.0
"""Longest single wait for a message (the loop then checks it is still wanted)."""


class Settled:
    """One pub/sub subscription per process; `waiting(token)` yields an Event set when `token` settles."""

    def __init__(self, redis: Any) -> None:
        self._redis = redis
        self._waiters: dict[str, set[asyncio.Event]] = {}
        self._task: asyncio.Task[None] | None = None
        self.listening = False
        """True while the subscription is confirmed; waits poll as before when it is not."""

    def start(self) -> None:
        """Subscribe in the background (idempotent)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="settled-subscription")

    async def stop(self) -> None:
        """Unsubscribe and stop the background task."""
        task, self._task = self._task, None
        if task is not None:
            # A cancellation that lands in redis-py's read timeout comes out as TimeoutError; _run re-raises it, and
            # this loop makes sure of it whatever redis-py does (the task ends, or stop would hang the shutdown).
            while not task.done():
                task.cancel()
                await asyncio.wait({task}, timeout=STOP_RETRY_SECONDS)
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.listening = False

    @contextlib.contextmanager
    def waiting(self, token: str) -> Iterator[asyncio.Event]:
        """Register interest in `token` (`session_id:upload_id`) for the duration of the block."""
        event = asyncio.Event()
        self._waiters.setdefault(token, set()).add(event)
        try:
            yield event
        finally:
            waiters = self._waiters.get(token)
            if waiters is not None:
                waiters.discard(event)
                if not waiters:
                    del self._waiters[token]

    def _wake(self, token: str) -> None:
        for event in self._waiters.get(token, ()):
            event.set()

    def _wake_all(self) -> None:
        """The subscription broke: messages may have been missed, so every wait looks for itself."""
        for events in self._waiters.values():
            for event in events:
                event.set()

    async def _run(self) -> None:
        while True:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(SETTLED_CHANNEL)
                # The confirmation is the first message: only then can no publication pass a waiter by.
                confirmed = await pubsub.get_message(ignore_subscribe_messages=False, timeout=READ_SECONDS)
                self.listening = confirmed is not None
                while True:
                    message = await pubsub.get_message(timeout=READ_SECONDS)
                    if message is not None and message.get("type") == "message":
                        data = message["data"]
                        self._wake(data.decode() if isinstance(data, bytes) else str(data))
                    elif not self.listening and message is None:
                        self.listening = pubsub.subscribed
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                # redis-py's read timeout turns a cancellation into TimeoutError (an OSError): stop, as asked.
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise asyncio.CancelledError from exc
                log.info("completion notifications paused (%r); waits poll meanwhile", exc)
            finally:
                self.listening = False
                self._wake_all()
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
            await asyncio.sleep(RECONNECT_SECONDS)
