"""The job format of our arq queues, the jobs the state scripts enqueue, and their deterministic ids.

Jobs are msgpack maps through arq's public `job_serializer`/`job_deserializer` hooks, never pickles, so
nothing read back from Redis can run code. The map is arq's own job document:
    {"t": job try or nil, "f": function name, "a": [args], "k": {kwargs}, "et": enqueued at (epoch ms)}
A worker of the processing queue sets `job_deserializer=app.state.jobs.deserialize` (or any msgpack
decoder, e.g. `msgpack.unpackb`) and `job_serializer=app.state.jobs.serialize` (README, "The processing job").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec
from arq.constants import default_queue_name, expires_extra_ms

from app.domain.clock import now_ms as wall_clock_ms
from app.settings import Settings


def _fallback(obj: Any) -> Any:
    # arq stores a failed job's exception as its result: keep its repr (a map of builtins cannot hold it).
    return repr(obj)


_encoder = msgspec.msgpack.Encoder(enc_hook=_fallback)
serialize = _encoder.encode
"""arq `job_serializer`: msgpack (unknown types, such as a failed job's exception, as their repr)."""
deserialize = msgspec.msgpack.decode
"""arq `job_deserializer`: msgpack to builtins (tuples arrive as lists)."""

# Function names of the jobs: the upload workers', and the downstream pipeline's on its own queue.
PROVISION_JOB = "provision_group"
COMPLETE_JOB = "complete_file"
PURGE_JOB = "purge_group"
REFRESH_PARTS_JOB = "refresh_parts"
REFRESH_GROUP_JOB = "refresh_group_parts"
PROCESS_JOB = "process_asset_set"
EXPIRE_CRON = "expire_due_groups"
ORPHAN_CRON = "abort_orphan_uploads"
RECONCILE_CRON = "reconcile_objects"
REDRIVE_CRON = "redrive"
DELIVER_WEBHOOK_JOB = "deliver_webhook"
"""One delivery attempt of one event to one endpoint, on the webhook queue (app/webhooks/delivery.py)."""


def provision_job_id(session_id: str) -> str:
    """Job that opens a group's multipart uploads."""
    return f"provision:{session_id}"


def complete_job_id(session_id: str, upload_id: str, attempt: int) -> str:
    """Job that completes one file; a rejected completion is retried under the next attempt number."""
    return f"complete:{session_id}:{upload_id}:{attempt}"


def purge_job_ids(session_id: str) -> tuple[str, str]:
    """Purge now, and once more after the last presigned URL has lapsed (a late PUT can't leave data)."""
    return f"purge:{session_id}", f"purge:{session_id}:late"


def refresh_job_id(session_id: str) -> str:
    """Parts refresh of a group's files. While one is queued, asking again is a no-op: that coalesces polling (one
    in flight per group, however many files and readers)."""
    return f"parts:{session_id}"


def process_job_id(session_id: str) -> str:
    """The processing job of a completed group."""
    return f"process:{session_id}"


def delivery_job_id(endpoint_id: str, event_id: str, round_id: str, attempt: int) -> str:
    """One attempt of one delivery; a redelivery is a new round ('0' is the first) with attempts of its own."""
    return f"webhook:{endpoint_id}:{event_id}:{round_id}:{attempt}"


def job_document(function: str, args: Sequence[Any], enqueued_ms: int) -> bytes:
    """A job as `ArqRedis.enqueue_job` writes it with our serializer (no kwargs, no explicit try)."""
    return serialize({"t": None, "f": function, "a": list(args), "k": {}, "et": enqueued_ms})


class JobSpec(msgspec.Struct, frozen=True):
    """An arq job ready to be written by a state script: id, queue, serialized document, score and key TTL."""

    job_id: str
    queue: str
    blob: bytes
    score_ms: int
    expires_ms: int

    @classmethod
    def build(
        cls,
        function: str,
        args: Sequence[Any],
        *,
        job_id: str,
        now_ms: int | None = None,
        queue: str = default_queue_name,
        defer_ms: int = 0,
    ) -> JobSpec:
        """The job arq's `enqueue_job(function, *args, _job_id=…, _defer_by=…)` would write.

        now_ms: when it is queued, by arq's clock (the wall clock) unless given.
        """
        now_ms = wall_clock_ms() if now_ms is None else now_ms
        score = now_ms + defer_ms
        return cls(job_id, queue, job_document(function, args, now_ms), score, defer_ms + expires_extra_ms)


def processing_job(session_id: str, library_record: dict[str, Any], queue: str, now_ms: int) -> JobSpec:
    """The processing job of a completed group (the library record is its one argument); it never expires."""
    job_id = process_job_id(session_id)
    return JobSpec(job_id, queue, job_document(PROCESS_JOB, (library_record,), now_ms), now_ms, 0)


TOMBSTONE_MARGIN_MS = 2 * 86_400_000
"""How long a group's end record outlives its late purge: time for the storage sweeps to catch what a purge that
gave up (storage down for hours) left behind."""


class Ending(msgspec.Struct, frozen=True):
    """How a group that ends without completing (canceled, expired, failed) is wound down."""

    retention_ms: int
    """How long its keys stay readable."""
    purges: tuple[JobSpec, JobSpec]
    """Purge now, and once its last URL has lapsed."""
    tombstone_ms: int
    """How long its end record (what authorises deleting its storage) is kept."""
    ended_cap: int = 0
    """The account's ended groups kept at most (0: no cap; see UploadState.trim_ended)."""


def ending(settings: Settings, session_id: str, key_prefix: str, *, retention_ms: int | None = None) -> Ending:
    """The wind-down of one group: its purges, retention, end-record lifetime and its account's cap."""
    return Ending(
        retention_ms=settings.uploads.retention_seconds * 1000 if retention_ms is None else retention_ms,
        purges=purge_jobs(settings, session_id),
        tombstone_ms=(settings.uploads.part_url_ttl_seconds + 60) * 1000 + TOMBSTONE_MARGIN_MS,
        ended_cap=settings.limits.retained_ended_groups,
    )


def purge_jobs(settings: Settings, session_id: str) -> tuple[JobSpec, JobSpec]:
    """Purge now, and again once every URL handed out has lapsed (a late PUT can't leave data).

    A purge that runs after the group's keys are gone (its account's cap of ended groups dropped them early) finds
    the group's storage prefix in its end record.
    """
    first, late = purge_job_ids(session_id)
    q = settings.worker.queue_name
    args = (session_id,)
    return (
        JobSpec.build(PURGE_JOB, args, job_id=first, queue=q),
        JobSpec.build(
            PURGE_JOB, args, job_id=late, queue=q,
            defer_ms=(settings.uploads.part_url_ttl_seconds + 60) * 1000,
        ),
    )  # fmt: skip


# A libraryId is minted inside the completing script, after the job document was built. The document
# carries a placeholder integer as a msgpack uint64 (0xcf + 8 bytes, big-endian): the script writes the
# id over those 8 bytes. msgpack allows an integer in a wider encoding than its minimum, so any decoder
# reads the id as a plain integer.
_PLACEHOLDER = 0x5A5A5A5A5A5A5A5A
_MARKER = b"\xcf" + _PLACEHOLDER.to_bytes(8, "big")


class LibraryTemplate(msgspec.Struct, frozen=True):
    """Library record and processing job, prepared before the libraryId exists.

    The record is JSON whose first member is the id (`record_tail` follows it); the job document is split
    around its 8-byte id (`job_head` ends with the uint64 marker byte 0xcf).
    """

    record_tail: bytes
    job_head: bytes
    job_tail: bytes

    @classmethod
    def build(cls, payload: dict[str, Any], *, now_ms: int) -> LibraryTemplate:
        """payload: the library document without libraryId (see README, "The processing job")."""
        rest = msgspec.json.encode(payload)
        blob = job_document(PROCESS_JOB, ({"libraryId": _PLACEHOLDER, **payload},), now_ms)
        if blob.count(_MARKER) != 1:  # pragma: no cover - the payload would have to contain the placeholder
            raise ValueError("could not place the libraryId in the processing job")
        head, tail = blob.split(_MARKER)
        return cls(b"," + rest[1:], head + b"\xcf", tail)
