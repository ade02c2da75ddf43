"""Step 4, worker half, the storage calls: CompleteMultipartUpload with the checksums and `If-None-Match: *`, and
what storage then holds (HeadObject: size, ETag, checksum).

Storage's refusals become stable reasons (app/domain/reasons.py) and the file goes back to `uploading`; a checksum
storage refuses is `checksum_mismatch`, naming the part (and the values) when they can be known.
"""

from __future__ import annotations

import hashlib
import logging
from typing import TYPE_CHECKING

from botocore.exceptions import ClientError

from app.domain import reasons
from app.domain.checksums import Checksum, composite_of
from app.domain.contract import ChecksumAlgorithm, ChecksumType
from app.domain.reasons import Reason

if TYPE_CHECKING:
    from app.storage.s3 import HeadResult, ObjectStore

log = logging.getLogger("spatialgen.uploads")
_CHECKSUM_CODES = ("BadDigest", "InvalidRequest", "InvalidPart", "InvalidArgument")
_PRECONDITION_CODES = ("PreconditionFailed", "412", "ConditionalRequestConflict")


class Completion:
    """One file's CompleteMultipartUpload as the worker runs it."""

    def __init__(
        self, store: ObjectStore, key: str, s3_id: str | None, parts: list[tuple[int, str]], *,
        algorithm: ChecksumAlgorithm | None, kind: ChecksumType | None, part_checksums: dict[int, str],
        whole: str | None, conditional: bool,
    ) -> None:  # fmt: skip
        self.store, self.key, self.s3_id, self.parts = store, key, s3_id, parts
        self.algorithm, self.kind, self.whole, self.conditional = algorithm, kind, whole, conditional
        self.client_sums = dict(part_checksums)
        self.sums = dict(part_checksums)

    async def run(self) -> str | None:
        """None when the object is assembled (now or by an earlier try), else the stored reason the file is handed
        back with (storage refused the part list or a checksum, or there is no upload to complete)."""
        if self.s3_id is None:
            return reasons.stored(Reason.STORAGE_NOT_PROVISIONED)
        if self.algorithm is not None and len(self.sums) < len(self.parts):
            await self._storage_sums()  # parts the client sent no checksum for: storage's own (ListParts)
        if self.kind is ChecksumType.COMPOSITE and self.whole is not None and len(self.sums) == len(self.parts):
            computed = composite_of(self.algorithm or ChecksumAlgorithm.SHA256, [self.sums[n] for n, _ in self.parts])
            if computed.partition("-")[0] != self.whole.partition("-")[0]:
                return reasons.checksum_mismatch(None, self.whole, computed)
        try:
            await self._complete(conditional=self.conditional)
        except ClientError as exc:
            return await self._refused(exc)
        return None

    async def _storage_sums(self) -> None:
        assert self.s3_id is not None and self.algorithm is not None
        for p in await self.store.list_parts(self.key, self.s3_id, self.algorithm.value):
            if p.checksum and p.part_number not in self.sums:
                self.sums[p.part_number] = p.checksum

    async def _complete(self, *, conditional: bool) -> None:
        assert self.s3_id is not None
        whole = None
        if self.whole is not None and self.kind is ChecksumType.FULL_OBJECT:
            whole = (self.whole, self.kind.value)
        try:
            await self.store.complete_multipart(
                self.key, self.s3_id, self.parts, algorithm=self.algorithm.value if self.algorithm else None,
                part_checksums=self.sums, whole=whole, if_none_match=conditional,
            )  # fmt: skip
        except ClientError as exc:
            if conditional and _code(exc) in ("NotImplemented", "501"):
                # A store that does not take conditional writes on CompleteMultipartUpload: say so, complete
                # without (SPATIALGEN_S3_CONDITIONAL_COMPLETE=false stops trying).
                log.warning("storage refused If-None-Match on CompleteMultipartUpload of %s (%s); completing "
                            "without it: set SPATIALGEN_S3_CONDITIONAL_COMPLETE=false for this store", self.key,
                            _message(exc))  # fmt: skip
                await self._complete(conditional=False)
                return
            raise

    async def _refused(self, exc: ClientError) -> str | None:
        code = _code(exc)
        if code == "NoSuchUpload" and await self.store.head_size(self.key) is not None:
            return None  # an earlier try assembled it; the caller verifies it
        if code in _PRECONDITION_CODES:
            return await self._already_there()
        if code in _CHECKSUM_CODES and (mismatch := await self._checksum_refusal(exc)) is not None:
            return mismatch
        refusal = reasons.from_storage_error(code)
        if refusal is None:
            raise exc
        # Storage's own message stays in the log; the client gets the stable reason.
        log.info("complete %s refused by storage: %s %s", self.key, code, _message(exc))
        return refusal

    async def _already_there(self) -> str | None:
        """If-None-Match refused: an object is at the key. A retried completion whose first try assembled it finds
        its own object (the ETag S3 gives an object assembled from these parts); anything else is not ours."""
        head = await self.store.head(self.key)
        if head is not None and head.etag.strip('"') == multipart_etag([etag for _, etag in self.parts]):
            return None
        log.warning("complete %s: another object is already stored under the key", self.key)
        return reasons.stored(Reason.OBJECT_REPLACED)

    async def _checksum_refusal(self, exc: ClientError) -> str | None:
        """The checksum_mismatch reason when storage refused a checksum, naming the part when it can be known."""
        if self.algorithm is None:
            return None
        error = exc.response.get("Error", {})
        message, code = str(error.get("Message", "")), _code(exc)
        if code == "BadDigest" or (code != "InvalidPart" and "checksum" in message.lower()):
            log.info("complete %s: storage refused the checksum: %s %s", self.key, code, message)
            return reasons.checksum_mismatch(None, self.whole, None)
        if code != "InvalidPart" or not self.client_sums:
            return None
        assert self.s3_id is not None
        held = {p.part_number: p for p in await self.store.list_parts(self.key, self.s3_id, self.algorithm.value)}
        etags = dict(self.parts)
        named = int(str(error.get("PartNumber") or 0)) or None
        for n in [named] if named else sorted(self.client_sums):
            stored = held.get(n)
            if n not in self.client_sums or stored is None or stored.etag.strip('"') != etags[n].strip('"'):
                continue  # not uploaded, or another ETag: a missing part (missing_parts), not a checksum
            if stored.checksum and stored.checksum != self.client_sums[n]:
                return reasons.checksum_mismatch(n, self.client_sums[n], stored.checksum)
            if not stored.checksum and named and "checksum" in message.lower():
                log.info("complete %s: storage refused part %s's checksum: %s", self.key, n, message)
                return reasons.checksum_mismatch(n, self.client_sums[n], None)
        return None


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _message(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Message", ""))


def multipart_etag(part_etags: list[str]) -> str:
    """The ETag S3 gives an object assembled from parts with these ETags: MD5 of their digests, `-<count>`."""
    joined = b"".join(bytes.fromhex(e.strip('"').partition("-")[0]) for e in part_etags)
    return f"{hashlib.md5(joined, usedforsecurity=False).hexdigest()}-{len(part_etags)}"


def verified_checksum(
    head: HeadResult, algorithm: ChecksumAlgorithm | None, kind: ChecksumType | None
) -> Checksum | None:
    """The checksum to record from what storage holds (HeadObject), or None (no algorithm, or none reported)."""
    if algorithm is None or kind is None:
        return None
    value = head.checksums.get(algorithm.value)
    if not value:
        return None
    return Checksum(algorithm.value, head.checksum_type or kind.value, value)
