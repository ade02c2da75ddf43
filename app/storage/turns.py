"""Fair turns at a shared resource: one holder at a time, waiters served round-robin by who asks.

The API's signing helper is one process per API process; a key sending fifty 10,000-URL requests at once would
otherwise queue all of them ahead of everyone else's. Here each waiting key gets the next turn in rotation, so
another key's request waits for at most one turn per key ahead of it, not for a whole burst.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import AsyncIterator


class FairTurns:
    """`async with turns.turn(who):` runs one holder at a time; waiting callers take turns key by key."""

    def __init__(self) -> None:
        self._waiting: collections.OrderedDict[str, collections.deque[asyncio.Future[None]]] = collections.OrderedDict()
        self._busy = False

    @property
    def waiting(self) -> int:
        """Callers waiting for a turn."""
        return sum(len(q) for q in self._waiting.values())

    @contextlib.asynccontextmanager
    async def turn(self, who: str) -> AsyncIterator[None]:
        """Hold the resource for one turn."""
        if self._busy:
            ticket: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiting.setdefault(who, collections.deque()).append(ticket)
            try:
                await ticket
            except asyncio.CancelledError:
                if ticket.done() and not ticket.cancelled():
                    self._pass_on()  # handed the turn just as it was cancelled: give it to the next
                else:
                    self._forget(who, ticket)
                raise
        else:
            self._busy = True
        try:
            yield
        finally:
            self._pass_on()

    def _pass_on(self) -> None:
        while self._waiting:
            who, queue = next(iter(self._waiting.items()))
            ticket = queue.popleft()
            if queue:
                self._waiting.move_to_end(who)  # this key's next request waits for every other key's turn
            else:
                del self._waiting[who]
            if not ticket.done():
                ticket.set_result(None)
                return
        self._busy = False

    def _forget(self, who: str, ticket: asyncio.Future[None]) -> None:
        queue = self._waiting.get(who)
        if queue is not None and ticket in queue:
            queue.remove(ticket)
            if not queue:
                del self._waiting[who]
