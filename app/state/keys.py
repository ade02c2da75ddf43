"""The Redis key schema and the field names of a group's state hash: every key and field is named here only.

All keys of one group share the hash tag {sessionId}, so they sit on one Cluster slot; the indexes, the
libraryId counter and arq's queue keys are global by nature.
"""

from __future__ import annotations

from arq.constants import in_progress_key_prefix, job_key_prefix, result_key_prefix, retry_key_prefix

PREFIX = "sg:"
EXPIRY_INDEX = f"{PREFIX}expiry"
"""zset: live sessionIds scored by expiresAt (ms); the expiry sweep reads it, never a key scan."""
LIBRARY_COUNTER = f"{PREFIX}library:next"
"""The last libraryId handed out (see LIBRARY_EPOCH_US)."""
LIBRARY_EPOCH_US = 1_767_225_600_000_000
"""2026-01-01T00:00:00Z in µs. A libraryId is max(last + 1, µs since this epoch by Redis's clock), so ids only
grow, and an id handed out in the last second before a crash whose AOF lost it is never handed out again:
after the restart the clock is past it. (µs since 2026 stay below 2^53, JavaScript's exact integers, until
the year 2311.)"""
HANDOFF_INDEX = f"{PREFIX}handoff"
"""zset: sessionIds of completed groups scored by completion (ms), until their processing job is picked up."""
COMPLETING_INDEX = f"{PREFIX}completing"
"""zset: `sessionId:uploadId` of files that entered 'completing', scored by when (ms); the re-drive reads it."""
SETTLED_CHANNEL = f"{PREFIX}settled"
"""Pub/sub channel: `session_id:upload_id` each time a completion attempt ends (completed, handed back, failed,
re-driven), published by the script that ends it, so an API process waiting on that file looks at once."""
HANDOFF_FAILED_INDEX = f"{PREFIX}handoff:failed"
"""zset: sessionIds of completed groups whose processing job failed in its consumer, scored by when it was seen."""
INSTANCE_KEY = f"{PREFIX}instance"
"""This Redis's identity, written once when a service process first starts on it; the bucket's marker names the
Redis its objects were written with (app/upkeep/identity.py)."""
TRIM_QUEUE = f"{PREFIX}trim"
"""set: accounts whose ended index holds more groups than the cap; the expiry sweep trims them."""
API_KEYS_INDEX = f"{PREFIX}apikeys"
"""zset: API key digests scored by creation time (ms)."""
METRICS_KEY = f"{PREFIX}metrics"
"""hash of counters the workers keep: `MetricField`s and `job:{function}:{outcome}`."""

EVENTS_STREAM = f"{PREFIX}events"
"""stream: the event outbox. The scripts that change a group append its events here (only for accounts with a webhook
endpoint); the dispatchers read it through the consumer group EVENTS_GROUP (app/webhooks/dispatch.py)."""
EVENTS_GROUP = "dispatchers"
WEBHOOKS_INDEX = f"{PREFIX}webhooks"
"""zset: every webhook endpoint id, scored by creation (ms): the admin CLI's listing."""
WEBHOOKS_WAITING = f"{PREFIX}webhooks:waiting"
"""set: endpoint ids with parked deliveries; the dispatchers look at their lines every few seconds (a lapsed slot)."""
WEBHOOKS_DISABLED = f"{PREFIX}webhooks:disabled"
"""set: endpoint ids the service disabled (a 410, or failing for days); a metric counts them."""


def webhook_registry_key(account: str) -> str:
    """set: an account's webhook endpoint ids. The state scripts check that it EXISTS before recording an event."""
    return f"{PREFIX}webhooks:{account}"


def webhook_key(endpoint_id: str) -> str:
    """hash: one endpoint (url, event types, enabled, secrets, disabled reason, delivery health)."""
    return f"{PREFIX}webhook:{endpoint_id}"


def webhook_log_key(endpoint_id: str) -> str:
    """list: an endpoint's last delivery attempts, newest first (JSON each, capped)."""
    return f"{PREFIX}webhook:{endpoint_id}:log"


def webhook_busy_key(endpoint_id: str) -> str:
    """zset: deliveries to an endpoint in flight now (job id scored by when its lease lapses): its concurrency."""
    return f"{PREFIX}webhook:{endpoint_id}:busy"


def webhook_waiting_key(endpoint_id: str) -> str:
    """zset: deliveries parked while the endpoint's slots were taken (their ids, by when they parked): its line."""
    return f"{PREFIX}webhook:{endpoint_id}:waiting"


def webhook_parked_key(endpoint_id: str) -> str:
    """hash: the job documents of an endpoint's parked deliveries (id -> arq job), queued again when woken."""
    return f"{PREFIX}webhook:{endpoint_id}:parked"


def webhook_done_key(job_id: str) -> str:
    """Marks a delivery attempt recorded, so its job run again (a worker died before arq finished it) sends nothing."""
    return f"{PREFIX}whdone:{job_id}"


class MetricField:
    """Counters in METRICS_KEY written by the state scripts and the workers."""

    GROUPS_COMPLETED = "groups_completed"
    GROUPS_EXPIRED = "groups_expired"
    HANDOFFS_FAILED = "handoffs_failed"
    SWEEPS_REFUSED = "sweeps_refused"
    """Destructive sweeps that refused to run because the Redis is not the one the objects were written with."""
    DELETIONS_CAPPED = "deletions_capped"
    """Sweep runs that stopped at SPATIALGEN_SWEEP_MAX_DELETIONS."""
    WEBHOOK_PREFIX = "webhook:"
    """`webhook:<outcome>`: webhook delivery attempts by outcome (delivered, retrying, failed, disabled)."""


JOB_FIELD_PREFIX = "job:"
JOB_OUTCOMES = ("ok", "retried", "failed")
"""ok: returned; retried: raised arq Retry (a retryable error); failed: raised, or gave up after the last try."""


def job_field(function: str, outcome: str) -> str:
    """Field of METRICS_KEY counting one outcome of one job function, e.g. `job:complete_file:ok`."""
    return f"{JOB_FIELD_PREFIX}{function}:{outcome}"


def group_key(session_id: str) -> str:
    """Immutable group record (msgpack GroupRecord)."""
    return f"{PREFIX}{{{session_id}}}:g"


def state_key(session_id: str) -> str:
    """Mutable state hash of a group: the `Field`s below and the per-file fields of `FileField`."""
    return f"{PREFIX}{{{session_id}}}:s"


def upload_ids_key(session_id: str) -> str:
    """The files' S3 multipart upload ids, newline-joined in file order ('' for single-PUT files).

    Kept out of the state hash on purpose: S3 upload ids are ~100+ bytes, and one value over
    hash-max-listpack-value (64) turns the whole hash into a far bigger hashtable encoding.
    """
    return f"{PREFIX}{{{session_id}}}:u"


def parts_key(session_id: str, upload_id: str) -> str:
    """Parts the store has received for a file (msgpack list of [partNumber, etag, size]); a short-lived cache."""
    return f"{PREFIX}{{{session_id}}}:parts:{upload_id}"


def tombstone_key(session_id: str) -> str:
    """The end record of a group that ended without completing: "status\nkey prefix". It outlives the group's
    other keys for as long as deletion may be pending, and is what authorises deleting the group's storage."""
    return f"{PREFIX}{{{session_id}}}:end"


def library_key(session_id: str) -> str:
    """The library record created when the group completes (JSON, see README)."""
    return f"{PREFIX}{{{session_id}}}:library"


def account_index_key(account: str) -> str:
    """zset of an account's sessionIds scored by creation time (ms)."""
    return f"{PREFIX}account:{account}"


def ended_index_key(account: str) -> str:
    """zset of an account's groups that ended without completing (canceled, expired, failed), scored by when (ms)."""
    return f"{PREFIX}ended:{account}"


def limits_key(account: str) -> str:
    """hash of an account's own limits (`rate:<class>`, `burst:<class>`, `live_groups`, `live_bytes`)."""
    return f"{PREFIX}limits:{account}"


def usage_key(account: str) -> str:
    """hash of an account's live use: `groups` and declared `bytes` of its live groups."""
    return f"{PREFIX}usage:{account}"


def bucket_key(key_id: str, route_class: str) -> str:
    """The token bucket of one API key for one route class (`tk` tokens, `ts` last refill ms)."""
    return f"{PREFIX}rl:{key_id}:{route_class}"


def idempotency_key(account: str, key_digest: str) -> str:
    """Remembered answer of a create carrying an Idempotency-Key."""
    return f"{PREFIX}idem:{account}:{key_digest}"


def api_key_key(key_digest: str) -> str:
    """Hash describing one API key (account, role, label, created)."""
    return f"{PREFIX}apikey:{key_digest}"


def arq_job_key(job_id: str) -> str:
    """arq's key holding a queued job."""
    return job_key_prefix + job_id


def arq_in_progress_key(job_id: str) -> str:
    """arq's key marking a job a worker is running (its lock)."""
    return in_progress_key_prefix + job_id


def arq_retry_key(job_id: str) -> str:
    """arq's count of a job's tries (set when a try begins; gone when the job ends)."""
    return retry_key_prefix + job_id


def arq_result_key(job_id: str) -> str:
    """arq's key holding a finished job's result."""
    return result_key_prefix + job_id


class Field:
    """Group-wide fields of the state hash (short names: the hash stays a compact listpack)."""

    STATUS = "st"
    CREATED = "tc"
    UPDATED = "tu"
    CANCELED = "tx"
    COMPLETED = "td"
    FAILED = "tf"
    EXPIRED = "te"
    LIBRARY = "lib"
    CANCELED_FILES = "cx"
    HANDOFF = "ho"
    """Where the processing job of a completed group stands: `HandoffState`."""


class HandoffState:
    """Values of the state hash's HANDOFF field."""

    PENDING = "pending"
    """Queued for the processing pipeline, not yet taken."""
    TAKEN = "taken"
    """A consumer took the job and finished it (arq removed the document)."""
    FAILED = "failed"
    """The consumer finished it with an error (its kept result says so); an operator retries it."""


class FileField:
    """Per-file fields of the state hash: a prefix followed by the file's uploadId."""

    STATUS = "f:"
    """The file's FileStatus."""
    REASON = "r:"
    """Why the file failed, or why its last completion was refused."""
    PROGRESS = "p:"
    """"parts:bytes:refreshed_ms" the store had received when last tracked."""
    ATTEMPT = "n:"
    """Completion attempts started (part of the complete job's id)."""
    PROVISIONING = "v:"
    """When a try to open the file's multipart upload began (ms): a later try lists and adopts what it opened."""
    CHECKSUM_ALGORITHM = "k:"
    """The checksum algorithm fixed at the file's first part-urls call (absent: the create's, or none)."""
    CHECKSUM = "c:"
    """The checksum storage verified at completion: `ALGORITHM:F|C:value` (app/domain/checksums.Checksum)."""


def file_field(prefix: str, upload_id: str) -> str:
    """A per-file field: `file_field(FileField.STATUS, uid)` -> 'f:<uid>'."""
    return prefix + upload_id
