"""The upload service: the use cases behind the HTTP routes (start a group, and later parts/complete/cancel).

Handlers call these methods with an authenticated principal; storage work is handed to workers.
"""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

import msgspec

from app import errors
from app.apikeys import Principal
from app.models import (
    FileRecord,
    FileStatus,
    GroupRecord,
    StartUploadRequest,
    UploadFileView,
    UploadGroupCreated,
)
from app.rules import plan_parts, storage_key, validate_start_request
from app.settings import Settings
from app.state import JobSpec, UploadState, idempotency_key
from app.timefmt import iso_ms, now_ms

PROVISION_JOB = "provision_group"
MAX_IDEMPOTENCY_KEY_CHARS = 255

_json = msgspec.json.Encoder()


def provision_job_id(session_id: str) -> str:
    """Deterministic arq job id: a duplicated enqueue of the same group's provisioning is a no-op."""
    return f"provision:{session_id}"


def decode_json_body(body: bytes) -> Any:
    """Decode a request body as JSON, or raise a 400 that says where it broke."""
    try:
        return msgspec.json.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise errors.MALFORMED_JSON(f"The body is not valid JSON: {exc}.") from None
    except RecursionError:
        raise errors.MALFORMED_JSON("The body is nested too deeply.") from None


def _check_idempotency_key(value: str) -> str:
    if not 1 <= len(value) <= MAX_IDEMPOTENCY_KEY_CHARS or not value.isascii() or not value.isprintable():
        raise errors.INVALID_HEADER(
            f"Idempotency-Key must be 1-{MAX_IDEMPOTENCY_KEY_CHARS} printable ASCII characters.",
            errors=[errors.FieldError("Idempotency-Key", "must be 1-255 printable ASCII characters")],
        )
    return hashlib.sha256(value.encode()).hexdigest()


class Created(msgspec.Struct, frozen=True):
    """Outcome of a start call: the JSON answer and whether it replays an earlier one."""

    session_id: str
    body: bytes
    replayed: bool


class UploadService:
    """Use cases of the upload API over Redis state; never touches object storage itself."""

    def __init__(self, settings: Settings, state: UploadState) -> None:
        self.settings = settings
        self.state = state

    async def start_upload_group(self, principal: Principal, body: bytes, idem_header: str | None) -> Created:
        """Validate a start request, register the group and its files, and queue their provisioning."""
        payload = decode_json_body(body)
        request = validate_start_request(
            payload, max_file_bytes=self.settings.max_file_bytes, max_files=self.settings.max_files_per_group
        )
        idem_key = None
        body_digest = b""
        if idem_header is not None:
            idem_key = idempotency_key(principal.account, _check_idempotency_key(idem_header))
            # The body is compared after canonical re-encoding: whitespace or key order don't make it "different".
            body_digest = hashlib.sha256(msgspec.json.encode(payload, order="sorted")).hexdigest().encode()

        for _ in range(3):  # a uuid4 collision is astronomically unlikely; retrying keeps it harmless
            record = self._new_group(principal.account, request)
            answer = _json.encode(self._created_view(record))
            now = record.created_ms
            job = JobSpec.build(
                PROVISION_JOB,
                (record.session_id,),
                job_id=provision_job_id(record.session_id),
                now_ms=now,
                queue=self.settings.queue_name,
            )
            outcome, stored = await self.state.create_group(
                record,
                key_ttl_ms=(self.settings.session_ttl_seconds + self.settings.retention_seconds) * 1000,
                job=job,
                idem_key=idem_key,
                idem_value=body_digest + b"\n" + answer,
                idem_ttl_ms=self.settings.idempotency_ttl_seconds * 1000,
            )
            if outcome == "created":
                return Created(record.session_id, answer, replayed=False)
            if outcome == "replay":
                assert stored is not None
                first_digest, _, first_answer = stored.partition(b"\n")
                if first_digest != body_digest:
                    raise errors.IDEMPOTENCY_KEY_REUSED(
                        "This Idempotency-Key was already used with a different request body; use a new key."
                    )
                session_id = msgspec.json.decode(first_answer, type=dict[str, Any])["sessionId"]
                return Created(session_id, first_answer, replayed=True)
        raise RuntimeError("could not allocate a unique session id")

    def _new_group(self, account: str, request: StartUploadRequest) -> GroupRecord:
        session_id = str(uuid.uuid4())
        created = now_ms()
        files = []
        for spec in request.files:
            upload_id = str(uuid.uuid4())
            plan = plan_parts(spec.size_bytes, self.settings.part_size_bytes)
            files.append(
                FileRecord(
                    upload_id=upload_id,
                    role=spec.file_role,
                    name=spec.file_name,
                    total_bytes=spec.size_bytes,
                    part_size=plan.part_size,
                    total_parts=plan.total_parts,
                    strategy=plan.strategy,
                    language=spec.language_tag,
                    storage_key=storage_key(
                        self.settings.s3_key_prefix, account, session_id, upload_id, spec.file_name
                    ),
                )
            )
        return GroupRecord(
            session_id=session_id,
            account=account,
            video_name=request.video_name,
            description=request.description,
            layout=request.layout,
            perspective=request.perspective,
            folder_name=request.folder_name,
            created_ms=created,
            expires_ms=created + self.settings.session_ttl_seconds * 1000,
            files=tuple(files),
        )

    @staticmethod
    def _created_view(record: GroupRecord) -> UploadGroupCreated:
        return UploadGroupCreated(
            session_id=record.session_id,
            expires_at=iso_ms(record.expires_ms),
            video_name=record.video_name,
            file_count=len(record.files),
            files=[
                UploadFileView(
                    upload_id=f.upload_id,
                    file_role=f.role.value,
                    file_name=f.name,
                    total_bytes=f.total_bytes,
                    part_size_bytes=f.part_size,
                    total_parts=f.total_parts,
                    upload_strategy=f.strategy.value,
                    status=FileStatus.INITIALIZED.value,
                )
                for f in record.files
            ],
        )
