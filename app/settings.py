"""Service settings: one typed object read from SPATIALGEN_* environment variables.

The API, the arq workers, the admin CLI and the dev stack all load the same object.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator, Mapping
from typing import Any

import msgspec

from app.limits import DEFAULT_RATES, Quota, Rate, RouteClass, parse_rates

ENV_PREFIX = "SPATIALGEN_"
DEV_ENV_FILE = "dev.env"
"""Written by `make run` into the data dir: what it started, for the CLI tools to find with no flags."""
KIB = 1024
MIB = 1024 * KIB
TIB = 1024 * 1024 * MIB
MAX_PRESIGN_SECONDS = 604_800
"""SigV4 query-string signatures may live at most 7 days."""


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """Every tunable of the service; field docs are mirrored in .env.example and the README."""

    host: str = "127.0.0.1"
    """Interface the API binds to."""
    port: int = 8000
    """TCP port of the API."""
    api_workers: int = 1
    """API worker processes of one `spatialgen-api` (scale pods rather than this in Kubernetes)."""
    shutdown_grace_seconds: float = 20.0
    """On SIGTERM: how long the API finishes in-flight requests and a worker finishes its jobs."""
    redis_url: str = "redis://127.0.0.1:6379/0"
    """Redis/Valkey URL (state and arq queues); with Sentinel, only its password and database are used."""
    redis_sentinels: str = ""
    """Comma-separated host:port of Redis Sentinels; when set, the primary is found through them."""
    redis_sentinel_master: str = "spatialgen"
    """The Sentinel master name of the primary (with SPATIALGEN_REDIS_SENTINELS)."""
    redis_write_replicas: int = 0
    """Replicas that must acknowledge (WAIT) a create or a completion before it is acknowledged; 0: off."""
    s3_endpoint_url: str = "http://127.0.0.1:9000"
    """S3-compatible endpoint (AWS, MinIO, R2, moto)."""
    s3_public_endpoint_url: str = ""
    """Endpoint written into presigned URLs, if clients reach storage by another name (default: S3_ENDPOINT_URL)."""
    s3_region: str = "us-east-1"
    """Region used for SigV4 signing."""
    s3_bucket: str = "spatialgen-uploads"
    """Bucket every object goes to."""
    s3_access_key_id: str = ""
    """Static access key id for the object store; empty: botocore's provider chain (AWS_* variables, profile,
    web identity / IRSA, container or instance role), temporary credentials refreshed before they expire."""
    s3_secret_access_key: str = ""
    """Static secret access key (set together with S3_ACCESS_KEY_ID)."""
    s3_session_token: str = ""
    """Session token of static temporary credentials (never refreshed: prefer the provider chain for those)."""
    s3_addressing_style: str = "path"
    """`path` (MinIO, moto) or `virtual` (AWS virtual-host style)."""
    s3_key_prefix: str = "uploads"
    """Prefix of every object key: {prefix}/{accountId}/{sessionId}/{uploadId}{ext}."""
    part_size_bytes: int = 100 * MIB
    """Preferred multipart part size; files at or below it use a single PUT."""
    max_file_bytes: int = 5 * TIB
    """Largest file accepted (S3's object size limit by default)."""
    max_files_per_group: int = 64
    """Largest number of files in one upload group."""
    session_ttl_seconds: int = 432_000
    """Lifetime of an upload group before it expires (5 days)."""
    expiry_sweep_seconds: int = 60
    """Interval of the expiry sweep cron."""
    orphan_sweep_seconds: int = 3600
    """Interval of the sweep that aborts multipart uploads no live file owns."""
    orphan_grace_seconds: int = 3600
    """Minimum age of an unowned multipart upload or stored object before the sweeps remove it."""
    reconcile_seconds: int = 3600
    """Interval of the sweep deleting stored objects no live or retained group owns (0: off)."""
    redrive_seconds: int = 60
    """Interval of the re-drive: completions whose job is gone, processing jobs that were lost."""
    parts_staleness_seconds: float = 10.0
    """Received-parts tracking older than this is refreshed (ListParts) when a status endpoint reads it."""
    parts_wait_seconds: float = 2.0
    """How long GET .../parts waits for a fresh ListParts before answering with what it has."""
    retention_seconds: int = 2_592_000
    """How long terminal groups stay readable in Redis (30 days)."""
    part_url_ttl_seconds: int = 86_400
    """Lifetime of presigned part URLs (never past the group's expiry)."""
    sign_offload_min_parts: int = 256
    """part-urls answers with at least this many parts are signed in a helper process (0: never)."""
    provision_wait_seconds: float = 3.0
    """How long part-urls waits for the worker to open the multipart upload."""
    complete_wait_seconds: float = 5.0
    """How long complete waits for the worker before answering 202."""
    max_body_bytes: int = 1 * MIB
    """Largest accepted request body."""
    body_timeout_seconds: float = 30.0
    """How long the API waits for a request body to arrive before answering 408."""
    idle_group_seconds: int = 86_400
    """A group that gets no part-urls (or complete) call within this expires then, and is kept as long again."""
    rate_limits: str = DEFAULT_RATES
    """Per API key, per route class: `class=rate/burst,...` (create, part_urls, complete, reads), or `off`."""
    quota_live_groups: int = 1000
    """Default per-account quota: live (initialized/uploading) groups at once."""
    quota_live_bytes: int = 50 * TIB
    """Default per-account quota: declared bytes of its live groups (50 TiB)."""
    retained_ended_groups: int = 1000
    """Per account: groups that ended without completing (canceled, expired, failed) kept for their status; older
    ones are dropped by the expiry sweep before their retention lapses (0: no cap)."""
    idempotency_ttl_seconds: int = 86_400
    """How long an Idempotency-Key is remembered."""
    key_cache_seconds: float = 10.0
    """How long the API caches API-key lookups (a revocation bites within this)."""
    queue_name: str = "arq:queue"
    """arq queue of the upload workers."""
    processing_queue_name: str = "spatialgen:processing"
    """arq queue the finished asset sets are handed to."""
    worker_max_jobs: int = 50
    """Concurrent jobs per worker process."""
    worker_provision_concurrency: int = 4
    """Background provisioning calls to storage per worker process at once (a waiting client's go first)."""
    data_dir: str = ".data"
    """Where `make run` keeps the embedded Valkey's AOF and dev.env (what it started, for the CLI tools)."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read settings from SPATIALGEN_* variables; unknown or malformed values fail loudly."""
        env = os.environ if env is None else env
        raw: dict[str, Any] = {}
        for name in cls.__struct_fields__:
            value = env.get(ENV_PREFIX + name.upper())
            if value is None:
                continue
            raw[name] = value
        try:
            settings = msgspec.convert(raw, cls, strict=False)
        except msgspec.ValidationError as exc:
            raise SystemExit(f"invalid {ENV_PREFIX}* setting: {exc}") from exc
        settings.check()
        return settings

    def check(self) -> None:
        """Reject values and combinations that would break at run time, naming each variable; all at once."""
        problems = [*self._storage_problems(), *self._time_problems(), *self._process_problems()]
        if problems:
            raise SystemExit("invalid settings: " + "; ".join(f"{ENV_PREFIX}{p}" for p in problems))

    def _storage_problems(self) -> Iterator[str]:
        if not 5 * MIB <= self.part_size_bytes <= 5 * 1024 * MIB:
            yield "PART_SIZE_BYTES must be between 5 MiB and 5 GiB (S3's part size limits)"
        if not 1 <= self.max_file_bytes <= 5 * TIB:
            yield "MAX_FILE_BYTES must be between 1 and 5 TiB"
        if not 1 <= self.max_files_per_group <= 1000:
            yield "MAX_FILES_PER_GROUP must be between 1 and 1000"
        if bool(self.s3_access_key_id) != bool(self.s3_secret_access_key):
            yield "S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY must be set together (or both left empty for the chain)"
        if self.s3_session_token and not self.s3_access_key_id:
            yield "S3_SESSION_TOKEN needs S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY"
        if self.s3_addressing_style not in ("path", "virtual"):
            yield "S3_ADDRESSING_STYLE must be 'path' or 'virtual'"
        if not 1 <= self.part_url_ttl_seconds <= MAX_PRESIGN_SECONDS:
            yield f"PART_URL_TTL_SECONDS must be between 1 and {MAX_PRESIGN_SECONDS} (SigV4 allows 7 days at most)"

    def _time_problems(self) -> Iterator[str]:
        for name in ("expiry_sweep_seconds", "redrive_seconds", "reconcile_seconds", "orphan_sweep_seconds"):
            value = getattr(self, name)
            off_allowed = name == "reconcile_seconds"
            if value < 0 or (value == 0 and not off_allowed) or (0 < value < 60 and 60 % value):
                yield f"{name.upper()} must divide 60 (1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30) or be >= 60"
        for name in ("session_ttl_seconds", "retention_seconds", "idempotency_ttl_seconds", "max_body_bytes"):
            if getattr(self, name) <= 0:
                yield f"{name.upper()} must be positive"
        for name in ("provision_wait_seconds", "complete_wait_seconds", "parts_wait_seconds", "body_timeout_seconds",
                     "key_cache_seconds", "orphan_grace_seconds", "shutdown_grace_seconds",
                     "parts_staleness_seconds"):  # fmt: skip
            if getattr(self, name) < 0:
                yield f"{name.upper()} must not be negative"

    def rates(self) -> dict[RouteClass, Rate]:
        """The default rate limits by route class (accounts may have their own)."""
        return parse_rates(self.rate_limits)

    def quota(self) -> Quota:
        """The default account quotas."""
        return Quota(self.quota_live_groups, self.quota_live_bytes)

    def _process_problems(self) -> Iterator[str]:
        try:
            self.rates()
        except ValueError as exc:
            yield f"RATE_LIMITS: {exc}"
        if self.quota_live_groups < 1 or self.quota_live_bytes < 1:
            yield "QUOTA_LIVE_GROUPS and QUOTA_LIVE_BYTES must be at least 1"
        if not 0 < self.idle_group_seconds <= self.session_ttl_seconds:
            yield "IDLE_GROUP_SECONDS must be positive and at most SESSION_TTL_SECONDS"
        if not 1 <= self.port <= 65535:
            yield "PORT must be between 1 and 65535"
        for name in ("api_workers", "worker_max_jobs", "worker_provision_concurrency"):
            if getattr(self, name) < 1:
                yield f"{name.upper()} must be at least 1"
        if self.redis_write_replicas < 0:
            yield "REDIS_WRITE_REPLICAS must not be negative"
        if self.retained_ended_groups < 0:
            yield "RETAINED_ENDED_GROUPS must not be negative (0: no cap)"
        for item in filter(None, (x.strip() for x in self.redis_sentinels.split(","))):
            host, _, port = item.rpartition(":")
            if not host or not port.isdigit():
                yield f"REDIS_SENTINELS entries must be host:port (got {item!r})"


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


def _shown(value: Any) -> str:
    return str(value)


def render_env_example() -> str:
    """The whole `.env.example`: every setting with its description and default (`make docs` writes it)."""
    defaults = Settings()
    lines = [
        "# SpatialGen Direct Upload service settings (all optional; defaults shown).",
        "# With nothing set, `make run` starts embedded Valkey and S3 (moto) on loopback.",
        "",
    ]
    for env, doc in field_docs().items():
        lines += [f"# {doc}", f"# {env}={_shown(getattr(defaults, env.removeprefix(ENV_PREFIX).lower()))}"]
    return "\n".join(lines) + "\n"


def render_settings_table() -> str:
    """The README's configuration table (`make docs` writes it between its markers)."""
    defaults = Settings()
    rows = ["| variable | default | what it is |", "|---|---|---|"]
    for env, doc in field_docs().items():
        value = _shown(getattr(defaults, env.removeprefix(ENV_PREFIX).lower()))
        rows.append(f"| `{env}` | {f'`{value}`' if value else '(empty)'} | {doc} |")
    return "\n".join(rows) + "\n"


def field_docs() -> dict[str, str]:
    """Map each env var name to its one-line description (used to check .env.example)."""
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(Settings))
    docs: dict[str, str] = {}
    body = tree.body[0].body  # type: ignore[attr-defined]
    for node, nxt in itertools.pairwise(body):
        is_field = isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
        if is_field and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant):
            assert isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
            docs[ENV_PREFIX + node.target.id.upper()] = str(nxt.value.value)
    return docs
