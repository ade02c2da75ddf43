"""Uploading a whole group: create it (or find it again from a state file), then run it (app/client/run.py).

`UploadClient` is the API client (app/client/api.py) with whole-group uploads on top, the way httpx's top-level
functions sit on its client: the transfer engine depends on the API client, never the other way round.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

from app.client.api import ServiceClient
from app.client.errors import ChecksumUnsupported, InvalidUpload, LocalFileChanged, ServiceError, StateFileError
from app.client.events import Reporter, ignore
from app.client.models import GroupCreated, GroupStatus
from app.client.run import GroupRun, UploadResult
from app.client.spec import LocalFile, PreparedSpec, UploadSpec, measure, prepare
from app.client.state import (
    FileState,
    SessionState,
    find_state,
    fingerprint,
    idempotency_key,
    load_state,
    save_state,
    state_path,
)


class UploadClient(ServiceClient):
    """Client of the SpatialGen Direct Upload API; use as `async with UploadClient(url, key) as client:`.

    Every call of the contract (ServiceClient), plus whole-group uploads and resumes.
    """

    async def upload_group(
        self,
        spec: UploadSpec,
        *,
        on_progress: Reporter = ignore,
        state_dir: Path | None = None,
        state_file: Path | None = None,
        fresh: bool = False,
    ) -> UploadResult:
        """Create the group (idempotently), upload and complete every file; returns the libraryId.

        With a state folder or file, the run can be resumed (resume_group), and an earlier run with the same
        inputs is continued rather than started again. `fresh` always creates a new group.
        """
        return await upload_group(
            self, spec, on_progress=on_progress, state_dir=state_dir, state_file=state_file, fresh=fresh
        )

    async def resume_group(
        self,
        session_id: str,
        *,
        state_file: Path | None = None,
        files: Sequence[LocalFile] | None = None,
        on_progress: Reporter = ignore,
    ) -> UploadResult:
        """Continue an upload from its state file, or from local files matched against the group (another machine)."""
        return await resume_group(self, session_id, state_file=state_file, files=files, on_progress=on_progress)


async def upload_group(
    client: ServiceClient,
    spec: UploadSpec,
    *,
    on_progress: Reporter,
    state_dir: Path | None,
    state_file: Path | None,
    fresh: bool,
) -> UploadResult:
    """Check the spec, create the group with a derived Idempotency-Key (or continue an earlier run), upload it."""
    prepared = prepare(spec)
    fingerprints = await asyncio.to_thread(
        lambda: [fingerprint(f.path, size) for f, size in zip(spec.files, prepared.sizes, strict=True)]
    )
    key = idempotency_key(prepared.body, fingerprints, fresh=fresh)
    earlier = None if fresh else _earlier_run(client.base_url, key, state_dir, state_file)
    if fresh and state_dir is not None:
        await _forget_lost_runs(client, idempotency_key(prepared.body, fingerprints), state_dir, on_progress)
    if earlier is not None:
        if earlier[1].status != "completed":  # a finished upload is only reported, whatever the files are now
            _check_local_files(earlier[1], prepared)
        return await GroupRun(client, earlier[1], earlier[0], on_progress).run(resumed=True)
    try:
        created = await client.start_group(prepared.body, idempotency_key=key, on_progress=on_progress)
    except ServiceError as exc:
        raise _unsupported(exc, spec.checksum) or exc from None
    state = _new_state(client.base_url, key, prepared, created)
    path = state_file or (state_path(state_dir, created.session_id) if state_dir is not None else None)
    if path is not None:
        save_state(state, path)
    return await GroupRun(client, state, path, on_progress).run(resumed=created.replayed)


async def resume_group(
    client: ServiceClient,
    session_id: str,
    *,
    state_file: Path | None,
    files: Sequence[LocalFile] | None,
    on_progress: Reporter,
) -> UploadResult:
    """Continue a group from its state file, or (no state here: another machine) from local files matched to it."""
    if not files:
        if state_file is None:
            raise StateFileError(f"resuming {session_id} needs its state file or the local files")
        state = load_state(state_file)
        if state.session_id != session_id:
            raise StateFileError(f"{state_file} holds session {state.session_id}, not {session_id}")
        for fs in state.files:
            _check_file_unchanged(fs)
        # The command only gets here talking to the state file's URL or to one named by --api-url for this run
        # (config.locate): from now on the state file records that one, so a later plain resume agrees with it.
        state.api_url = client.base_url
    else:
        sizes, mtimes, problems = measure(files)
        if problems:
            raise InvalidUpload(problems)
        status = await client.group_status(session_id, on_progress=on_progress)
        state = _match_files(client.base_url, status, files, sizes, mtimes)
        if state_file is not None:
            save_state(state, state_file)
    return await GroupRun(client, state, state_file, on_progress).run(resumed=True)


def _earlier_run(
    api_url: str, key: str, state_dir: Path | None, state_file: Path | None
) -> tuple[Path, SessionState] | None:
    if state_file is not None:
        if not state_file.exists():
            return None
        state = load_state(state_file)
        if state.idempotency_key != key:
            raise StateFileError(f"{state_file} belongs to another upload (session {state.session_id})")
        return state_file, state
    return find_state(state_dir, api_url, key) if state_dir is not None else None


async def _forget_lost_runs(client: ServiceClient, key: str, state_dir: Path, on_progress: Reporter) -> None:
    """With --new: drop the state file of an earlier run of the same inputs whose group the service no longer has
    (a `make run` restarted empty), which every later plain send would otherwise find, and fail on, again."""
    earlier = find_state(state_dir, client.base_url, key)
    if earlier is None:
        return
    try:
        await client.group_status(earlier[1].session_id, on_progress=on_progress)
    except ServiceError as exc:
        if (exc.status, exc.code) == (404, "session_not_found"):
            earlier[0].unlink(missing_ok=True)


def _unsupported(exc: ServiceError, algorithm: str | None) -> ChecksumUnsupported | None:
    """The service refused the checksum algorithm: 400 checksum_unsupported, or (a service older than checksums)
    a 400 naming the field it does not know."""
    if algorithm is None or exc.status != 400:
        return None
    if exc.code == "checksum_unsupported":
        return ChecksumUnsupported(algorithm, exc.supported or [], call=exc.call)
    field = next((p for p in exc.problems if p.path.endswith("checksumAlgorithm")), None)
    if field is not None:
        return ChecksumUnsupported(algorithm, None, call=exc.call, detail=f"{field.path} {field.message}")
    return None


def _new_state(api_url: str, key: str, prepared: PreparedSpec, created: GroupCreated) -> SessionState:
    spec = prepared.spec
    if [(f.file_role, f.file_name, f.total_bytes) for f in created.files] != [
        (f.role, f.file_name, size) for f, size in zip(spec.files, prepared.sizes, strict=True)
    ]:
        raise ServiceError(
            502, "inconsistent_answer", "the created group's files differ from the request", call="start"
        )
    files = [
        FileState(
            upload_id=view.upload_id,
            path=str(local.path.resolve()),
            file_name=view.file_name,
            file_role=view.file_role,
            size_bytes=view.total_bytes,
            part_size_bytes=view.part_size_bytes,
            total_parts=view.total_parts,
            upload_strategy=view.upload_strategy,
            language_tag=local.language,
            mtime_ns=mtime,
            checksum_algorithm=view.checksum_algorithm,
        )
        for view, local, mtime in zip(created.files, spec.files, prepared.mtimes_ns, strict=True)
    ]
    return SessionState(
        api_url=api_url, session_id=created.session_id, video_name=created.video_name, files=files,
        idempotency_key=key,
    )  # fmt: skip


def _match_files(
    api_url: str, status: GroupStatus, files: Sequence[LocalFile], sizes: Sequence[int], mtimes: Sequence[int]
) -> SessionState:
    """Pair the group's files with local ones by role, name, size and language (resuming without a state file)."""
    local = {
        (f.role, f.file_name, size, (f.language or "").lower() or None): (f, mtime)
        for f, size, mtime in zip(files, sizes, mtimes, strict=True)
    }
    matched = []
    for view in status.files:
        match = local.pop((view.file_role, view.file_name, view.total_bytes, view.language_tag), None)
        if match is None:
            what = f"{view.file_name} ({view.file_role}, {view.total_bytes} bytes)"
            raise StateFileError(f"no local file matches {what} of upload group {status.session_id}")
        f, mtime = match
        matched.append(FileState(
            upload_id=view.upload_id, path=str(f.path.resolve()), file_name=view.file_name, file_role=view.file_role,
            size_bytes=view.total_bytes, part_size_bytes=view.part_size_bytes, total_parts=view.total_parts,
            upload_strategy=view.upload_strategy, language_tag=view.language_tag, mtime_ns=mtime,
            checksum_algorithm=view.checksum_algorithm,
        ))  # fmt: skip
    if local:
        extra = ", ".join(str(f.path) for f, _ in local.values())
        raise StateFileError(f"not part of upload group {status.session_id}: {extra}")
    return SessionState(api_url=api_url, session_id=status.session_id, video_name=status.video_name, files=matched)


def _check_local_files(state: SessionState, prepared: PreparedSpec) -> None:
    for fs, local, size in zip(state.files, prepared.spec.files, prepared.sizes, strict=True):
        if str(local.path.resolve()) != fs.path or size != fs.size_bytes:
            raise StateFileError(f"the state of {state.session_id} lists {fs.path} ({fs.size_bytes} bytes)")
        _check_file_unchanged(fs)


def _check_file_unchanged(fs: FileState) -> None:
    try:
        st = Path(fs.path).stat()
    except OSError as exc:
        raise LocalFileChanged(f"{fs.path}: {exc.strerror}; it is part of the upload") from None
    if st.st_size != fs.size_bytes or (fs.mtime_ns and st.st_mtime_ns != fs.mtime_ns):
        raise LocalFileChanged(
            f"{fs.path} changed since its upload started ({fs.size_bytes} → {st.st_size} bytes, or a newer "
            "modification time); start a new group with send --new"
        )
