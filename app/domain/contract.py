"""The request contract, declared once: the msgspec Structs of every request body, with their constraints.

The same declarations decode requests (app/domain/rules.py: typed fast path), set the limits of the full walk
that reports every violation at once, and are the OpenAPI document's request schemas (app/http/openapi.py).
Wire names are camelCase (`rename="camel"`); Python attributes are snake_case.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Annotated, Any

import msgspec
from msgspec import Meta

MIB = 1024 * 1024
MAX_OBJECT_BYTES = 5 * 1024**4
"""S3's largest object (5 TiB): no file may be declared larger (SPATIALGEN_MAX_FILE_BYTES may lower it)."""
MAX_PARTS = 10_000
"""S3's multipart limit: at most 10,000 parts; every part but the last at least 5 MiB (settings check P)."""
MAX_NAME_CHARS = 255
MAX_DESCRIPTION_CHARS = 5000
MAX_FILES_PER_GROUP = 1000
"""The most files a group may ever hold; SPATIALGEN_MAX_FILES_PER_GROUP (64 by default) sets the real bound."""
ETAG_PATTERN = r'^(?:"[0-9a-fA-F]{32}(?:-[0-9]{1,5})?"|[0-9a-fA-F]{32}(?:-[0-9]{1,5})?)$'
"""What S3 (and MinIO, R2, Ceph, moto) answers a part PUT with: a 32-hex-digit digest, quoted (or not), with a
part count after a dash for an object assembled from parts. Anything else cannot be a part's ETag, so it is refused
before it costs a completion attempt."""
MAX_ETAG_CHARS = 40  # '"' + 32 hex + '-10000' + '"'
CHECKSUM_PATTERN = r"^[A-Za-z0-9+/]{6,43}={0,2}$"
"""The form of a checksum value: base64 of a digest, as S3's x-amz-checksum-* headers carry it (its exact length
per algorithm is checked by app/domain/checksums.py)."""
WHOLE_CHECKSUM_PATTERN = r"^[A-Za-z0-9+/]{6,43}={0,2}(?:-[0-9]{1,5})?$"
"""A whole file's checksum: for a COMPOSITE one, S3's `<base64>-<partCount>` form."""
MAX_CHECKSUM_CHARS = 44  # base64 of SHA-256's 32 bytes


class Layout(StrEnum):
    """Stereo layout of the asset set."""

    FLAT_2D = "2D"
    MVHEVC = "MVHEVC"
    SBS = "SBS"
    TB = "TB"
    SEPARATE = "Separate"
    AIV = "AIV"


class Perspective(StrEnum):
    """Projection of the video."""

    REGULAR = "Regular"
    HALF = "180"
    FULL = "360"


class FileRole(StrEnum):
    """What a file is in the asset set."""

    VIDEO = "video"
    VIDEO_LEFT = "video_left"
    VIDEO_RIGHT = "video_right"
    AUDIO = "audio"
    SUBTITLE = "subtitle"
    AIME = "aime"
    FCPXMLD = "fcpxmld"


class UploadStrategy(StrEnum):
    """How the client sends a file's bytes."""

    SINGLE_PUT = "single_put"
    MULTIPART = "multipart"


class ChecksumAlgorithm(StrEnum):
    """A checksum algorithm, by S3's name for it (SPEC 3.8)."""

    CRC64NVME = "CRC64NVME"
    CRC32C = "CRC32C"
    CRC32 = "CRC32"
    SHA256 = "SHA256"
    SHA1 = "SHA1"


class ChecksumType(StrEnum):
    """How an object's checksum is computed: over the whole object (the CRCs, and every single PUT), or as a
    checksum of the parts' checksums (SHA-256 and SHA-1 on multipart files)."""

    FULL_OBJECT = "FULL_OBJECT"
    COMPOSITE = "COMPOSITE"


DIGEST_BYTES: Mapping[ChecksumAlgorithm, int] = {
    ChecksumAlgorithm.CRC64NVME: 8,
    ChecksumAlgorithm.CRC32C: 4,
    ChecksumAlgorithm.CRC32: 4,
    ChecksumAlgorithm.SHA256: 32,
    ChecksumAlgorithm.SHA1: 20,
}
"""The size of each algorithm's digest (big-endian) before base64."""


def checksum_type(algorithm: ChecksumAlgorithm, strategy: UploadStrategy) -> ChecksumType:
    """FULL_OBJECT for the CRCs and for single PUTs, COMPOSITE for SHA-256/SHA-1 on multipart files."""
    composite = algorithm in (ChecksumAlgorithm.SHA256, ChecksumAlgorithm.SHA1)
    return ChecksumType.COMPOSITE if composite and strategy is UploadStrategy.MULTIPART else ChecksumType.FULL_OBJECT


EXTENSIONS: Mapping[FileRole, tuple[str, ...]] = {
    FileRole.VIDEO: (".aivu", ".mp4", ".mov"),
    FileRole.VIDEO_LEFT: (".mp4", ".mov"),
    FileRole.VIDEO_RIGHT: (".mp4", ".mov"),
    FileRole.AUDIO: (".mp4", ".m4a"),
    FileRole.SUBTITLE: (".srt",),
    FileRole.AIME: (".aime",),
    FileRole.FCPXMLD: (".zip",),
}
"""The extensions each role accepts (compared case-insensitively)."""

CONTENT_TYPES: Mapping[str, str] = {
    ".mov": "video/quicktime",
    ".mp4": "video/mp4",
    ".aivu": "video/quicktime",  # Apple Immersive Video: a QuickTime movie
    ".m4a": "audio/mp4",
    ".srt": "application/x-subrip",
    ".aime": "application/octet-stream",
    ".zip": "application/zip",
}
"""The Content-Type a file is stored with, by its extension: signed into a single PUT's URL (storage refuses
another) and given to CreateMultipartUpload."""


def content_type(ext: str) -> str:
    """The stored Content-Type of a file with this extension."""
    return CONTENT_TYPES.get(ext.lower(), "application/octet-stream")


class LanguageTag(StrEnum):
    """Every accepted languageTag: language-only ISO 639-1 tags in SPEC 3.1's order, then `zxx` (no speech, audio
    only). Region or script subtags (`en-US`) and three-letter codes (`eng`) are not taken; the service lowercases
    what it receives first."""

    EN = "en"
    ES = "es"
    FR = "fr"
    DE = "de"
    IT = "it"
    JA = "ja"
    KO = "ko"
    PT = "pt"
    RU = "ru"
    ZH = "zh"
    AF = "af"
    AM = "am"
    AR = "ar"
    AZ = "az"
    BG = "bg"
    BN = "bn"
    BS = "bs"
    CA = "ca"
    CS = "cs"
    DA = "da"
    EL = "el"
    ET = "et"
    FA = "fa"
    FI = "fi"
    GU = "gu"
    HE = "he"
    HI = "hi"
    HR = "hr"
    HU = "hu"
    HY = "hy"
    ID = "id"
    IS = "is"
    KA = "ka"
    KN = "kn"
    LT = "lt"
    LV = "lv"
    ML = "ml"
    MR = "mr"
    MS = "ms"
    NL = "nl"
    NO = "no"
    PA = "pa"
    PL = "pl"
    RO = "ro"
    SK = "sk"
    SL = "sl"
    SQ = "sq"
    SR = "sr"
    SV = "sv"
    SW = "sw"
    TA = "ta"
    TE = "te"
    TH = "th"
    TL = "tl"
    TR = "tr"
    UK = "uk"
    UR = "ur"
    VI = "vi"
    ZXX = "zxx"


INSTRUMENTAL = LanguageTag.ZXX
SPOKEN_LANGUAGES = tuple(t.value for t in LanguageTag if t is not INSTRUMENTAL)
LANGUAGES_BY_ROLE: Mapping[FileRole, frozenset[str]] = {
    FileRole.AUDIO: frozenset(t.value for t in LanguageTag),
    FileRole.SUBTITLE: frozenset(SPOKEN_LANGUAGES),
}
"""The roles that carry a languageTag, and the tags each accepts; every other role must omit it."""

_EXTENSIONS_DOC = "; ".join(f"{role.value}: {' '.join(exts)}" for role, exts in EXTENSIONS.items())


class _Body(msgspec.Struct, rename="camel", kw_only=True, forbid_unknown_fields=True, frozen=True):
    """A request body: camelCase on the wire, unknown fields refused (a typo like `langaugeTag` is caught)."""


class StartFile(_Body, frozen=True):
    """One file of the asset set."""

    file_name: Annotated[
        str,
        Meta(min_length=1, max_length=MAX_NAME_CHARS,
             description=f"The client's file name; only its extension is kept, and it must suit the role "
                         f"({_EXTENSIONS_DOC}). No control, bidirectional-override or separator characters."),
    ]  # fmt: skip
    file_role: FileRole
    size_bytes: Annotated[
        int,
        Meta(ge=1, le=MAX_OBJECT_BYTES,
             description="Exact size in bytes; at most SPATIALGEN_MAX_FILE_BYTES (5 TiB by default)."),
    ]  # fmt: skip
    language_tag: Annotated[
        LanguageTag | None,
        Meta(description="Required for audio and subtitle files, omitted for the others. A language-only tag "
                         "(`en`, not `en-US` or `eng`), compared case-insensitively; `zxx` (no speech) is for "
                         "audio only.",
             examples=["en"]),
    ] = None  # fmt: skip
    checksum_algorithm: Annotated[
        ChecksumAlgorithm | None,
        Meta(description="Optional: the checksum algorithm of this file's parts (one the store verifies: "
                         "SPATIALGEN_S3_CHECKSUM_ALGORITHMS). May also be named at the first part-urls call.",
             examples=["CRC64NVME"]),
    ] = None  # fmt: skip


class StartUploadRequest(_Body, frozen=True):
    """Start Upload Group request (SPEC 3.1). Validated: names trimmed, language tags lowercased."""

    video_name: Annotated[str, Meta(min_length=1, max_length=MAX_NAME_CHARS, description="Title (trimmed).")]
    layout: Layout
    files: Annotated[
        list[StartFile],
        Meta(min_length=1, max_length=MAX_FILES_PER_GROUP,
             description="1 to SPATIALGEN_MAX_FILES_PER_GROUP (64 by default) files. Layout Separate needs exactly one "
                         "video_left and one video_right, the other layouts exactly one video; at most one aime and "
                         "one fcpxmld; AIV needs perspective 180 and an .aivu video, or an aime plus an fcpxmld."),
    ]  # fmt: skip
    description: Annotated[str, Meta(max_length=MAX_DESCRIPTION_CHARS, description="Free text; tabs and newlines "
                                     "allowed.")] | None = None  # fmt: skip
    perspective: Perspective | None = None
    folder_name: Annotated[str, Meta(min_length=1, max_length=MAX_NAME_CHARS,
                                     description="Folder of the library (trimmed).")] | None = None  # fmt: skip


PartNumber = Annotated[int, Meta(ge=1, le=MAX_PARTS)]
ChecksumValue = Annotated[
    str, Meta(min_length=8, max_length=MAX_CHECKSUM_CHARS, pattern=CHECKSUM_PATTERN,
              description="base64 of the big-endian digest (CRC64NVME 8 bytes, CRC32C/CRC32 4, SHA256 32, SHA1 20).",
              examples=["AAAAAAAAAAA="])
]  # fmt: skip


class PartUrlsRequest(_Body, frozen=True):
    """Which parts to sign: partNumbers, or a range startPartNumber/count. No body (or {}) means every part."""

    part_numbers: Annotated[list[PartNumber], Meta(min_length=1, max_length=MAX_PARTS,
                                                   description="Distinct part numbers.")] | None = None  # fmt: skip
    start_part_number: PartNumber | None = None
    count: Annotated[int, Meta(ge=1, le=MAX_PARTS, description="Clipped to totalParts.")] | None = None
    checksum_algorithm: Annotated[
        ChecksumAlgorithm | None,
        Meta(description="Fixes the file's checksum algorithm at its first part-urls call if the create did not; "
                         "naming another than the file's is a 409 checksum_algorithm_conflict."),
    ] = None  # fmt: skip
    checksums: Annotated[
        dict[str, ChecksumValue],
        Meta(min_length=1, max_length=MAX_PARTS,
             description="Each requested part's checksum by part number (`{\"1\": \"<base64>\"}`), base64 of the "
                         "big-endian digest as S3's x-amz-checksum-* headers carry it; required for every part of "
                         "a file with a checksum algorithm. Alone it selects exactly those parts. A single_put file's "
                         "part 1 carries the whole object's checksum."),
    ] | None = None  # fmt: skip


class CompletedPart(_Body, frozen=True):
    """A part as the client uploaded it."""

    part_number: PartNumber
    etag: Annotated[
        str, Meta(min_length=1, max_length=MAX_ETAG_CHARS, pattern=ETAG_PATTERN,
                  description="The ETag header storage answered the PUT with (a quoted 32-hex-digit digest).")
    ]  # fmt: skip
    checksum: Annotated[
        ChecksumValue | None,
        Meta(description="Optional: the part's checksum (files with a checksum algorithm); storage's is used when "
                         "omitted."),
    ] = None  # fmt: skip


class CompleteRequest(_Body, frozen=True):
    """Every part 1..totalParts exactly once (multipart files). A single_put file needs no body."""

    parts: Annotated[list[CompletedPart], Meta(max_length=MAX_PARTS)] | None = None
    checksum: Annotated[
        str,
        Meta(min_length=8, max_length=MAX_CHECKSUM_CHARS + 6, pattern=WHOLE_CHECKSUM_PATTERN,
             description="Optional: the whole file's checksum (files with a checksum algorithm): the CRC of the "
                         "whole object for FULL_OBJECT, S3's `<base64>-<partCount>` form for COMPOSITE. Storage "
                         "verifies it; a mismatch is a 409 checksum_mismatch and the file stays uploading.",
             examples=["j6cFt2eoaMM="]),
    ] | None = None  # fmt: skip


def declared(struct: type[msgspec.Struct], attribute: str) -> dict[str, Any]:
    """The constraints declared on one field of a contract Struct (min_length, max_length, ge, le, pattern).

    The full validation walk reads its limits here, so a limit is written once, in the Struct above.
    """
    info = msgspec.inspect.type_info(struct)
    assert isinstance(info, msgspec.inspect.StructType)
    for field in info.fields:
        if field.name == attribute:
            kind = field.type
            if isinstance(kind, msgspec.inspect.UnionType):  # `T | None`: the constraints are T's
                kind = next(t for t in kind.types if not isinstance(t, msgspec.inspect.NoneType))
            if isinstance(kind, msgspec.inspect.Metadata):  # a description beside the constraints
                kind = kind.type
            keys = ("min_length", "max_length", "ge", "le", "pattern")
            return {k: getattr(kind, k) for k in keys if getattr(kind, k, None) is not None}
    raise KeyError(f"{struct.__name__} has no field {attribute}")
