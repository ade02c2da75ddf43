"""Running the state scripts: a script's reply, the runner every typed call stands on, and the reads of groups.

Scripts run on the shared pipelined connection (one write per event-loop tick) or queued in a redis-py pipeline.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from app.domain.lifecycle import Reply
from app.domain.records import GroupRecord
from app.state import keys
from app.state.jobs import Ending
from app.state.keys import (
    COMPLETING_INDEX,
    EXPIRY_INDEX,
    group_key,
    state_key,
    upload_ids_key,
)
from app.state.pipeline import ScriptPipeline
from app.state.scripts import StateScript, all_scripts
from app.state.snapshot import GroupSnapshot, decode_group


class ScriptReply(NamedTuple):
    """A state script's answer: what happened, and the values that go with it (see each .lua header)."""

    code: Reply
    values: tuple[Any, ...] = ()

    def text(self, i: int = 0) -> str:
        """Value i as text."""
        v = self.values[i]
        return v.decode() if isinstance(v, bytes) else str(v)


def reply_of(raw: list[Any], *, keep_bytes: bool = False) -> ScriptReply:
    code = Reply(raw[0].decode() if isinstance(raw[0], bytes) else raw[0])
    values = raw[1:] if keep_bytes else [v.decode() if isinstance(v, bytes) else v for v in raw[1:]]
    return ScriptReply(code, tuple(values))


class ScriptRunner:
    """Runs the state scripts (app/state/lua) and reads a group: what UploadState's calls stand on."""

    def __init__(self, redis: Redis, *, write_replicas: int = 0) -> None:
        self.redis = redis
        self.write_replicas = write_replicas  # creates and completions wait for this many replicas (WAIT)
        self._pipeline = ScriptPipeline(redis)
        self._scripts = all_scripts()
        self._registered: dict[str, AsyncScript] = {
            name: redis.register_script(s.source) for name, s in self._scripts.items()
        }

    def close(self) -> None:
        """Close the pipelined connection (the redis-py client is closed by its owner)."""
        self._pipeline.close()

    async def load_scripts(self) -> None:
        """SCRIPT LOAD every script now, so a broken one stops the process at start, not on first use."""
        for script in self._scripts.values():
            sha = await self.redis.script_load(script.source)
            if sha != script.sha:  # pragma: no cover - Redis hashes what we hashed
                raise RuntimeError(f"{script.name}: Redis loaded it as {sha}, expected {script.sha}")

    async def _run(self, name: str, *, client: Any = None, replicated: bool = False, **values: Any) -> Any:
        """Run a script: on the shared pipelined connection, or queued in a redis-py pipeline (`client`).

        replicated: the write must reach SPATIALGEN_REDIS_WRITE_REPLICAS replicas before it counts.
        """
        script: StateScript = self._scripts[name]
        keys_, args = script.bind(**values)
        registered = self._registered[name]
        if client is None:
            return await self._pipeline(registered, keys_, args, replicas=self.write_replicas if replicated else 0)
        return await registered(keys=keys_, args=args, client=client)

    async def snapshot(self, session_id: str) -> GroupSnapshot | None:
        """Read a group's record and state in one round trip; None if unknown or removed."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.get(group_key(session_id))
            pipe.hgetall(state_key(session_id))
            pipe.get(upload_ids_key(session_id))
            blob, raw_state, raw_ids = await pipe.execute()
        if blob is None or not raw_state:
            return None
        state = {k.decode(): v.decode() for k, v in raw_state.items()}
        ids = tuple(raw_ids.decode().split("\n")) if raw_ids else ()
        return GroupSnapshot(decode_group(blob), state, ids)

    async def records(self, session_ids: Sequence[str]) -> list[GroupRecord | None]:
        """The records of several groups in one round trip (None where the keys are gone)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for sid in session_ids:
                pipe.get(group_key(sid))
            blobs = await pipe.execute()
        return [decode_group(b) if b is not None else None for b in blobs]

    def _ending_values(self, record: GroupRecord | None, session_id: str, end: Ending) -> dict[str, Any]:
        """What every script that ends a group takes (lib/end_group.lua's contract)."""
        account, declared, prefix = (
            ("", 0, "") if record is None else (record.account, record.declared_bytes, record.key_prefix)
        )
        return {
            "state": state_key(session_id), "group": group_key(session_id), "expiry_index": EXPIRY_INDEX,
            "completing_index": COMPLETING_INDEX, "usage": keys.usage_key(account),
            "ended": keys.ended_index_key(account), "trim": keys.TRIM_QUEUE,
            "tombstone": keys.tombstone_key(session_id), "webhooks": keys.webhook_registry_key(account),
            "events": keys.EVENTS_STREAM,
            "session_id": session_id, "declared_bytes": declared, "account": account, "ended_cap": end.ended_cap,
            "key_prefix": prefix, "tombstone_ms": end.tombstone_ms, "purge": end.purges[0],
            "late_purge": end.purges[1],
        }  # fmt: skip
