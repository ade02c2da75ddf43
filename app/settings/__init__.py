"""Service settings: one typed object read from SPATIALGEN_* environment variables, grouped by concern.

The API, the arq workers, the admin CLI and the dev stack all load the same object; each part takes the slice it
needs (`settings.redis`, `settings.storage`, ...). A group's variables share its prefix (SPATIALGEN_S3_BUCKET is
`settings.storage.bucket`); every field's docstring is its one-line description (.env.example, the README table).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from typing import Annotated, Any, ClassVar

import msgspec
from msgspec import Meta

from app.domain.contract import MAX_FILES_PER_GROUP, MAX_OBJECT_BYTES
from app.domain.limits import DEFAULT_RATES, Quota, Rate, RouteClass, parse_rates
from app.domain.webhooks import SCHEDULE_PATTERN, SPEC_SCHEDULE

ENV_PREFIX = "SPATIALGEN_"
DEV_ENV_FILE = "dev.env"
"""Written by `make run` into the data dir: what it started, for the CLI tools to find with no flags."""
KIB = 1024
MIB = 1024 * KIB
TIB = 1024 * 1024 * MIB
MAX_PRESIGN_SECONDS = 604_800
"""SigV4 query-string signatures may live at most 7 days."""


class _Group(msgspec.Struct, frozen=True, kw_only=True):
    """A group of settings; its variables are SPATIALGEN_ + PREFIX + the field's name in capitals."""

    PREFIX: ClassVar[str] = ""


class ServerConfig(_Group, frozen=True):
    """How the processes run."""

    host: str = "127.0.0.1"
    """Interface the API binds to (its PORT and OPS_PORT)."""
    port: int = 8000
    """TCP port of the API."""
    ops_port: int = 0
    """Own TCP port of /health/live, /health/ready and /metrics, which PORT then answers 404; 0: on PORT."""
    api_workers: int = 1
    """API worker processes of one `spatialgen-api` (scale pods rather than this in Kubernetes)."""
    shutdown_grace_seconds: float = 20.0
    """On SIGTERM: how long the API finishes in-flight requests and a worker finishes its jobs."""
    data_dir: str = ".data"
    """Where `make run` keeps the embedded Valkey's AOF and dev.env (what it started, for the CLI tools)."""


class RedisConfig(_Group, frozen=True):
    """The one database and queue."""

    PREFIX: ClassVar[str] = "REDIS_"
    url: str = "redis://127.0.0.1:6379/0"
    """Redis/Valkey URL (state and arq queues); with Sentinel, only its password and database are used."""
    sentinels: str = ""
    """Comma-separated host:port of Redis Sentinels; when set, the primary is found through them."""
    sentinel_master: str = "spatialgen"
    """The Sentinel master name of the primary (with SPATIALGEN_REDIS_SENTINELS)."""
    write_replicas: int = 0
    """Replicas that must acknowledge (WAIT) a create or a completion before it is acknowledged; 0: off."""


CHECKSUM_ALGORITHMS = ("CRC64NVME", "CRC32C", "CRC32", "SHA256", "SHA1")
"""The x-amz-checksum-* algorithms S3 defines."""


class StorageConfig(_Group, frozen=True):
    """The S3-compatible object store."""

    PREFIX: ClassVar[str] = "S3_"
    endpoint_url: str = "http://127.0.0.1:9000"
    """S3-compatible endpoint (AWS, MinIO, R2, moto)."""
    public_endpoint_url: str = ""
    """Endpoint written into presigned URLs, if clients reach storage by another name (default: S3_ENDPOINT_URL)."""
    region: str = "us-east-1"
    """Region used for SigV4 signing."""
    bucket: str = "spatialgen-uploads"
    """Bucket every object goes to."""
    access_key_id: str = ""
    """Static access key id for the object store; empty: botocore's provider chain (AWS_* variables, profile,
    web identity / IRSA, container or instance role), temporary credentials refreshed before they expire."""
    secret_access_key: str = ""
    """Static secret access key (set together with S3_ACCESS_KEY_ID)."""
    session_token: str = ""
    """Session token of static temporary credentials (never refreshed: prefer the provider chain for those)."""
    addressing_style: str = "path"
    """`path` (MinIO, moto) or `virtual` (AWS virtual-host style)."""
    key_prefix: str = "uploads"
    """Prefix of every object key: {prefix}/{accountId}/{sessionId}/{uploadId}{ext}."""
    checksum_algorithms: str = "CRC64NVME,CRC32C,CRC32,SHA256,SHA1"
    """Checksum algorithms the store verifies (x-amz-checksum-*), comma-separated; clients may ask for these per
    file. Empty: none (Backblaze B2's S3 API refuses the headers). `spatialgen-admin storage check` probes them."""
    conditional_complete: bool = True
    """Send `If-None-Match: *` with CompleteMultipartUpload, so a completed object is never replaced; turn off
    for a store that refuses it (`spatialgen-admin storage check` says)."""

    def checksums(self) -> tuple[str, ...]:
        """The configured checksum algorithms, upper case, in order."""
        return tuple(a.strip().upper() for a in self.checksum_algorithms.split(",") if a.strip())


class UploadConfig(_Group, frozen=True):
    """What an upload group may hold and how long its parts live."""

    part_size_bytes: int = 100 * MIB
    """Preferred multipart part size; files at or below it use a single PUT."""
    max_file_bytes: int = MAX_OBJECT_BYTES
    """Largest file accepted (S3's object size limit by default)."""
    max_files_per_group: int = 64
    """Largest number of files in one upload group."""
    session_ttl_seconds: int = 432_000
    """Lifetime of an upload group before it expires (5 days)."""
    idle_group_seconds: int = 86_400
    """A group that gets no part-urls (or complete) call within this expires then, and is kept as long again."""
    retention_seconds: int = 2_592_000
    """How long terminal groups stay readable in Redis (30 days)."""
    part_url_ttl_seconds: int = 86_400
    """Lifetime of presigned part URLs (never past the group's expiry)."""
    idempotency_ttl_seconds: int = 86_400
    """How long an Idempotency-Key is remembered."""
    parts_staleness_seconds: float = 10.0
    """Received-parts tracking older than this is refreshed (ListParts) when a status endpoint reads it."""


class ApiConfig(_Group, frozen=True):
    """The API process: bodies, the key cache, and how long a call waits for a worker."""

    max_body_bytes: int = 1 * MIB
    """Largest accepted request body."""
    body_timeout_seconds: float = 30.0
    """How long the API waits for a request body to arrive before answering 408."""
    key_cache_seconds: float = 10.0
    """How long the API caches API-key lookups (a revocation bites within this)."""
    provision_wait_seconds: float = 3.0
    """How long part-urls waits for the worker to open the multipart upload."""
    complete_wait_seconds: float = 5.0
    """How long complete waits for the worker before answering 202."""
    parts_wait_seconds: float = 2.0
    """How long GET .../parts waits for a fresh ListParts before answering with what it has."""
    sign_offload_min_parts: int = 256
    """part-urls answers with at least this many parts are signed in a helper process (0: never)."""


class LimitConfig(_Group, frozen=True):
    """What one key or account may cost (SPEC 3.6); accounts may have their own (spatialgen-admin accounts)."""

    rate_limits: str = DEFAULT_RATES
    """Per API key, per route class: `class=rate/burst,...` (create, part_urls, complete, reads, webhooks), or `off`."""
    quota_live_groups: int = 1000
    """Default per-account quota: live (initialized/uploading) groups at once."""
    quota_live_bytes: int = 50 * TIB
    """Default per-account quota: declared bytes of its live groups (50 TiB)."""
    complete_attempts: int = 20
    """Per file: completions that may start (each complete that hands a part list to storage is one; repeats while
    one runs are not). Past it, complete answers 409 completion_attempts_exhausted: cancel and start again."""
    retained_ended_groups: int = 1000
    """Per account: groups that ended without completing (canceled, expired, failed) kept for their status; older
    ones are dropped by the expiry sweep before their retention lapses (0: no cap)."""

    def rates(self) -> dict[RouteClass, Rate]:
        """The default rate limits by route class (accounts may have their own)."""
        return parse_rates(self.rate_limits)

    def quota(self) -> Quota:
        """The default account quotas."""
        return Quota(self.quota_live_groups, self.quota_live_bytes)


class WorkerConfig(_Group, frozen=True):
    """The arq workers and their queues."""

    queue_name: str = "arq:queue"
    """arq queue of the upload workers."""
    processing_queue_name: str = "spatialgen:processing"
    """arq queue the finished asset sets are handed to."""
    worker_max_jobs: int = 50
    """Concurrent jobs per worker process."""
    worker_provision_concurrency: int = 4
    """Background provisioning calls to storage per worker process at once (a waiting client's go first)."""

    @property
    def queues(self) -> list[str]:
        """Both queues, each once."""
        return list(dict.fromkeys((self.queue_name, self.processing_queue_name)))


class SweepConfig(_Group, frozen=True):
    """The periodic upkeep jobs (app/upkeep)."""

    expiry_sweep_seconds: int = 60
    """Interval of the expiry sweep cron."""
    orphan_sweep_seconds: int = 3600
    """Interval of the sweep that aborts multipart uploads of ended groups and second uploads of one file."""
    orphan_grace_seconds: int = 3600
    """Minimum age of an unowned multipart upload or stored object before the sweeps remove it."""
    reconcile_seconds: int = 3600
    """Interval of the sweep deleting stored objects of groups recorded as canceled, expired or failed (0: off)."""
    redrive_seconds: int = 60
    """Interval of the re-drive: completions whose job is gone, and where each group's processing job stands."""
    sweep_max_deletions: int = 1000
    """Most objects and multipart uploads one run of a storage sweep removes; the rest waits for the next run."""


class WebhookConfig(_Group, frozen=True):
    """Webhook deliveries (SPEC 3.9, app/webhooks)."""

    PREFIX: ClassVar[str] = "WEBHOOK_"
    queue_name: str = "spatialgen:webhooks"
    """arq queue of webhook deliveries, run by every worker process beside (never instead of) its upload jobs."""
    max_jobs: Annotated[int, Meta(ge=1)] = 100
    """Deliveries in flight per worker process."""
    endpoint_concurrency: Annotated[int, Meta(ge=1)] = 4
    """Deliveries in flight to one endpoint across all workers (a slow endpoint holds no more than this)."""
    retry_schedule: Annotated[str, Meta(pattern=SCHEDULE_PATTERN)] = SPEC_SCHEDULE
    """Seconds before each attempt (the first is the first attempt's), each jittered by up to 10 %."""
    timeout_seconds: Annotated[float, Meta(gt=0)] = 15.0
    """Longest wait for an endpoint's answer, connection included."""
    allow_private_targets: bool = False
    """Allow http:// and loopback/private/link-local addresses (dev stack and tests only; metadata IPs never)."""
    disable_after_seconds: int = 432_000
    """An endpoint whose every delivery failed for this long is disabled, with the reason shown (5 days)."""
    event_retention_seconds: int = 2_592_000
    """How long events are kept in the outbox stream for redelivery (30 days)."""
    rotation_overlap_seconds: int = 86_400
    """After a secret rotation, how long the previous secret also signs each delivery."""


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """Every tunable of the service, by concern."""

    server: ServerConfig = ServerConfig()
    redis: RedisConfig = RedisConfig()
    storage: StorageConfig = StorageConfig()
    uploads: UploadConfig = UploadConfig()
    api: ApiConfig = ApiConfig()
    limits: LimitConfig = LimitConfig()
    worker: WorkerConfig = WorkerConfig()
    sweeps: SweepConfig = SweepConfig()
    webhooks: WebhookConfig = WebhookConfig()

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read settings from SPATIALGEN_* variables; malformed values and bad combinations fail loudly."""
        env = os.environ if env is None else env
        found = {name: env[ENV_PREFIX + name.upper()] for name in _LOCATIONS if ENV_PREFIX + name.upper() in env}
        settings = cls().override(**found)
        settings.check()
        return settings

    def override(self, **values: Any) -> Settings:
        """A copy with some settings changed, named as their variables are without SPATIALGEN_ (`s3_bucket=...`).

        Values may be strings, as in the environment; they are converted and checked for type (not for ranges:
        `check` does that).
        """
        by_group: dict[str, dict[str, Any]] = {}
        for name, value in values.items():
            if name not in _LOCATIONS:
                raise TypeError(f"no setting {ENV_PREFIX}{name.upper()}")
            group, field = _LOCATIONS[name]
            by_group.setdefault(group, {})[field] = value
        groups: dict[str, Any] = {}
        for group, fields in by_group.items():
            current = msgspec.to_builtins(getattr(self, group))
            try:
                groups[group] = msgspec.convert({**current, **fields}, type(getattr(self, group)), strict=False)
            except msgspec.ValidationError as exc:
                raise SystemExit(f"invalid {ENV_PREFIX}* setting: {exc}") from exc
        return msgspec.structs.replace(self, **groups)

    def check(self) -> None:
        """Reject values and combinations that would break at run time, naming each variable; all at once."""
        problems = [*self._storage_problems(), *self._time_problems(), *self._process_problems()]
        if problems:
            raise SystemExit("invalid settings: " + "; ".join(f"{ENV_PREFIX}{p}" for p in problems))

    def _storage_problems(self) -> Iterator[str]:
        up, s3 = self.uploads, self.storage
        if not 5 * MIB <= up.part_size_bytes <= 5 * 1024 * MIB:
            yield "PART_SIZE_BYTES must be between 5 MiB and 5 GiB (S3's part size limits)"
        if not 1 <= up.max_file_bytes <= MAX_OBJECT_BYTES:
            yield "MAX_FILE_BYTES must be between 1 and 5 TiB"
        if not 1 <= up.max_files_per_group <= MAX_FILES_PER_GROUP:
            yield f"MAX_FILES_PER_GROUP must be between 1 and {MAX_FILES_PER_GROUP}"
        if bool(s3.access_key_id) != bool(s3.secret_access_key):
            yield "S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY must be set together (or both left empty for the chain)"
        if s3.session_token and not s3.access_key_id:
            yield "S3_SESSION_TOKEN needs S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY"
        if s3.addressing_style not in ("path", "virtual"):
            yield "S3_ADDRESSING_STYLE must be 'path' or 'virtual'"
        unknown = [a for a in s3.checksums() if a not in CHECKSUM_ALGORITHMS]
        if unknown:
            yield f"S3_CHECKSUM_ALGORITHMS: unknown {', '.join(unknown)} (known: {', '.join(CHECKSUM_ALGORITHMS)})"
        if not 1 <= up.part_url_ttl_seconds <= MAX_PRESIGN_SECONDS:
            yield f"PART_URL_TTL_SECONDS must be between 1 and {MAX_PRESIGN_SECONDS} (SigV4 allows 7 days at most)"

    def _time_problems(self) -> Iterator[str]:
        for name in ("expiry_sweep_seconds", "redrive_seconds", "reconcile_seconds", "orphan_sweep_seconds"):
            value = getattr(self.sweeps, name)
            off_allowed = name == "reconcile_seconds"
            if value < 0 or (value == 0 and not off_allowed) or (0 < value < 60 and 60 % value):
                yield f"{name.upper()} must divide 60 (1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30) or be >= 60"
        for name in ("session_ttl_seconds", "retention_seconds", "idempotency_ttl_seconds", "max_body_bytes"):
            if self.value(name) <= 0:
                yield f"{name.upper()} must be positive"
        for name in ("provision_wait_seconds", "complete_wait_seconds", "parts_wait_seconds", "body_timeout_seconds",
                     "key_cache_seconds", "orphan_grace_seconds", "shutdown_grace_seconds",
                     "parts_staleness_seconds"):  # fmt: skip
            if self.value(name) < 0:
                yield f"{name.upper()} must not be negative"

    def _process_problems(self) -> Iterator[str]:
        limits = self.limits
        try:
            limits.rates()
        except ValueError as exc:
            yield f"RATE_LIMITS: {exc}"
        if limits.quota_live_groups < 1 or limits.quota_live_bytes < 1:
            yield "QUOTA_LIVE_GROUPS and QUOTA_LIVE_BYTES must be at least 1"
        if not 0 < self.uploads.idle_group_seconds <= self.uploads.session_ttl_seconds:
            yield "IDLE_GROUP_SECONDS must be positive and at most SESSION_TTL_SECONDS"
        if not 1 <= self.server.port <= 65535:
            yield "PORT must be between 1 and 65535"
        if not 0 <= self.server.ops_port <= 65535 or self.server.ops_port == self.server.port:
            yield "OPS_PORT must be 0 (the operations routes on PORT) or another port than PORT, up to 65535"
        for name in ("api_workers", "worker_max_jobs", "worker_provision_concurrency", "complete_attempts"):
            if self.value(name) < 1:
                yield f"{name.upper()} must be at least 1"
        if self.redis.write_replicas < 0:
            yield "REDIS_WRITE_REPLICAS must not be negative"
        if limits.retained_ended_groups < 0:
            yield "RETAINED_ENDED_GROUPS must not be negative (0: no cap)"
        for item in filter(None, (x.strip() for x in self.redis.sentinels.split(","))):
            host, _, port = item.rpartition(":")
            if not host or not port.isdigit():
                yield f"REDIS_SENTINELS entries must be host:port (got {item!r})"

    def value(self, name: str) -> Any:
        """A setting by its variable's name without SPATIALGEN_ (`s3_bucket`), wherever it is grouped."""
        group, field = _LOCATIONS[name]
        return getattr(getattr(self, group), field)


def groups() -> dict[str, type[_Group]]:
    """The groups of Settings, by attribute name."""
    info = msgspec.structs.fields(Settings)
    return {f.name: f.type for f in info}


_LOCATIONS: dict[str, tuple[str, str]] = {
    (cls.PREFIX + field).lower(): (group, field) for group, cls in groups().items() for field in cls.__struct_fields__
}
"""Each setting's variable name (lowercase, without SPATIALGEN_) -> (group, field)."""


def with_dev_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment, completed from `make run`'s dev.env when SPATIALGEN_REDIS_URL is not set.

    Only the CLI tools read it, so `spatialgen-admin` works with no flags next to a running `make run`.
    """
    merged = dict(os.environ if env is None else env)
    if ENV_PREFIX + "REDIS_URL" in merged:
        return merged
    path = os.path.join(merged.get(ENV_PREFIX + "DATA_DIR", ".data"), DEV_ENV_FILE)
    try:
        with open(path, encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return merged
    for line in lines:
        name, sep, value = line.partition("=")
        if sep and not line.startswith("#") and name.startswith(ENV_PREFIX):
            merged.setdefault(name.strip(), value.strip())
    return merged
