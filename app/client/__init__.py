"""The uploader client: a typed Python API (UploadClient) and the `spatialgen-upload` command over the public API.

It imports nothing of the server (no litestar, arq, redis, aiobotocore, no other app.* module): it can ship alone.
"""

from app.client.errors import (
    ChecksumMismatch,
    ChecksumUnsupported,
    InvalidUpload,
    LocalFileChanged,
    PartFailed,
    Problem,
    ServiceError,
    StateFileError,
    UploadError,
)
from app.client.events import Event, Reporter
from app.client.retry import Backoff
from app.client.run import UploadResult
from app.client.spec import LocalFile, UploadSpec
from app.client.upload import UploadClient

__all__ = [
    "Backoff",
    "ChecksumMismatch",
    "ChecksumUnsupported",
    "Event",
    "InvalidUpload",
    "LocalFile",
    "LocalFileChanged",
    "PartFailed",
    "Problem",
    "Reporter",
    "ServiceError",
    "StateFileError",
    "UploadClient",
    "UploadError",
    "UploadResult",
    "UploadSpec",
]
