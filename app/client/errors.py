"""The uploader's failures: one exception per way a run can end badly, each saying what to do next.

The command maps them to exit codes: InvalidUpload, StateFileError and ConfigError are usage errors (2), the rest
failures (1).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One violation, located like the service locates it (`files[2].languageTag`), with the service's sentence."""

    path: str
    message: str
    origin: str = ""
    """Where the value came from on the command line (`--audio xx=a.mp4`), if known."""

    def __str__(self) -> str:
        return f"{self.path} {self.message}" + (f" ({self.origin})" if self.origin else "")


class UploadError(Exception):
    """Base of every failure the client reports."""


class InvalidUpload(UploadError):
    """The asset set breaks a rule or a local file cannot be used; found before any request."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        n = len(self.problems)
        super().__init__(f"{n} problem{'s' if n != 1 else ''} before upload: " + "; ".join(map(str, self.problems)))


class StateFileError(UploadError):
    """A state file is missing, unreadable, or does not match the local files."""


class ConfigError(UploadError):
    """The URL or the key cannot be used as found (a state file's URL this run did not configure, a key file others
    can read); found before any request, so nothing was sent."""


class LocalFileChanged(UploadError):
    """A local file no longer has the size (or content) it had when its upload group was created."""


class ServiceError(UploadError):
    """The service refused a call (problem+json), or stopped answering after every retry."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        *,
        call: str = "",
        problems: Sequence[Problem] = (),
        supported: Sequence[str] | None = None,
        part_number: int | None = None,
    ) -> None:
        self.status = status
        self.code = code
        self.detail = detail
        self.call = call
        self.problems = list(problems)
        self.supported = list(supported) if supported is not None else None
        """The algorithms a 400 checksum_unsupported lists."""
        self.part_number = part_number
        """The part a 409 checksum_mismatch names, when it names one."""
        where = f"{call}: " if call else ""
        listed = "".join(f"\n  {p}" for p in self.problems)
        super().__init__(f"{where}{status} {code}: {detail}{listed}")


class ServiceUnreachable(ServiceError):
    """Nothing answered at the API's URL on first contact (connection refused, no such host): a wrong URL or a
    service that is not running. Reported at once, not retried for a minute; nothing was sent."""

    def __init__(self, base_url: str, reason: str, *, call: str = "") -> None:
        self.base_url = base_url
        super().__init__(0, "unreachable", f"cannot connect to {base_url} ({reason})", call=call)
        self.args = (f"{call}: {self.detail}" if call else self.detail,)


class SessionGone(ServiceError):
    """A group this client knows of (a state file, a resume) is unknown to the service: 404 session_not_found."""

    def __init__(self, session_id: str, base_url: str, state_file: str | None = None, *, call: str = "") -> None:
        self.session_id = session_id
        where = f" (named by the state file {state_file})" if state_file else ""
        super().__init__(
            404, "session_not_found",
            f"upload group {session_id}{where} is unknown to {base_url}: the service no longer has it (a `make run` "
            "stack starts empty every time; ended groups go after their retention), or it belongs to another "
            "account than this API key's. Start a new group: the same send command with --new",
            call=call,
        )  # fmt: skip


class PartFailed(UploadError):
    """One part failed too many times in a row; the run stops and can be resumed."""

    def __init__(self, file_name: str, part_number: int, failures: int, reason: str) -> None:
        self.file_name = file_name
        self.part_number = part_number
        self.failures = failures
        self.reason = reason
        super().__init__(f"part {part_number} of {file_name} failed {failures} times in a row (last: {reason})")


class ChecksumUnsupported(ServiceError):
    """The service (its store) does not take the checksum algorithm asked for: 400 checksum_unsupported, or a
    service older than checksums refusing the field. Says which algorithms it takes and how to go on."""

    def __init__(self, algorithm: str, supported: Sequence[str] | None, *, call: str = "", detail: str = "") -> None:
        self.algorithm = algorithm
        offer = [a for a in supported or () if a in ("CRC64NVME", "CRC32C", "SHA256")]
        if supported is None:
            why = f"the service does not take checksums ({detail})" if detail else "the service does not take checksums"
        elif supported:
            why = f"the service's storage does not verify {algorithm} checksums (it verifies {', '.join(supported)})"
        else:
            why = "the service's storage verifies no checksums"
        then = f"pass --checksum {offer[0]}, or " if offer else "pass "
        super().__init__(400, "checksum_unsupported", f"{why}: {then}--checksum none to upload without checksums",
                         call=call, supported=supported)  # fmt: skip


class ChecksumMismatch(UploadError):
    """Storage recorded another checksum for a completed file than the local file's: what it holds is not the file."""

    def __init__(self, file_name: str, algorithm: str, recorded: str, local: str) -> None:
        self.file_name = file_name
        super().__init__(
            f"{file_name}: storage recorded the {algorithm} checksum {recorded}, but the local file's is {local}: "
            "the stored object is not this file; upload it again in a new group (send --new)"
        )


def first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The error to report from a failed task group: the first UploadError if any, else the first error."""
    leaves: list[BaseException] = []
    todo: list[BaseException] = [group]
    while todo:
        exc = todo.pop(0)
        if isinstance(exc, BaseExceptionGroup):
            todo[:0] = list(exc.exceptions)
        else:
            leaves.append(exc)
    return next((e for e in leaves if isinstance(e, UploadError)), leaves[0])
