"""Where S3 credentials come from: static keys from the settings, or botocore's provider chain.

With SPATIALGEN_S3_ACCESS_KEY_ID empty, credentials are resolved the way every AWS SDK does it: environment
variables, the shared config/credentials files (profiles, `credential_process`, SSO), web identity (EKS IRSA,
`AWS_WEB_IDENTITY_TOKEN_FILE`), the container credentials endpoint and the instance role.  Temporary
credentials are refreshed before they expire (botocore refreshes 15 minutes ahead, and blocks a caller only
in the last 10).  The S3 clients of workers and the API resolve and refresh on their own; the presigner,
which signs without a client, asks `CredentialSource.current()` for the credentials valid right now.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any, cast

from app.settings import StorageConfig
from app.storage.presign import PresignCredentials

if TYPE_CHECKING:
    from aiobotocore.credentials import AioCredentials


log = logging.getLogger("spatialgen.storage")


class StorageCredentialsError(Exception):
    """No usable S3 credentials: none found in the provider chain, or refreshing them failed."""


class NoStorageCredentials(StorageCredentialsError):
    """The provider chain found no credentials at all: a configuration error, reported when a process starts."""

    def __init__(self) -> None:
        super().__init__(
            "no S3 credentials: set SPATIALGEN_S3_ACCESS_KEY_ID and SPATIALGEN_S3_SECRET_ACCESS_KEY, or provide "
            "them through the AWS provider chain (AWS_* variables, a profile, web identity, an instance role)"
        )


class CredentialSource:
    """The S3 credentials to sign with now: static ones, or the provider chain's, refreshed as they age."""

    def __init__(self, config: StorageConfig) -> None:
        self._static = (
            PresignCredentials(config.access_key_id, config.secret_access_key, config.session_token or None)
            if config.access_key_id
            else None
        )
        self._resolving: asyncio.Task[AioCredentials] | None = None
        self._last: tuple[Any, PresignCredentials] | None = None

    @property
    def from_chain(self) -> bool:
        """True when credentials come from botocore's provider chain rather than the settings."""
        return self._static is None

    def warm(self) -> None:
        """Start resolving the chain now (API startup), so the first part-urls call does not wait for it."""
        if self._static is None and self._resolving is None:
            self._resolving = asyncio.create_task(_resolve_chain())

    async def current(self) -> PresignCredentials:
        """The credentials to sign with now (the chain's are refreshed first when they are about to expire)."""
        if self._static is not None:
            return self._static
        if self._resolving is None:
            self._resolving = asyncio.create_task(_resolve_chain())
        resolving = self._resolving
        try:
            provider = await asyncio.shield(resolving)
        except StorageCredentialsError:
            if self._resolving is resolving:
                self._resolving = None  # the next call looks again (a role may be attached by then)
            raise
        try:
            frozen = await provider.get_frozen_credentials()
        except Exception as exc:  # botocore's refresh errors vary by provider (STS, IMDS, a process)
            raise StorageCredentialsError(f"refreshing S3 credentials failed: {type(exc).__name__}") from exc
        last = self._last
        if last is not None and last[0] is frozen:  # unchanged since the last call: same object
            return last[1]
        expiry = getattr(provider, "_expiry_time", None)  # botocore's refreshable credentials keep it here
        expires_at = expiry.timestamp() if expiry is not None else None
        credentials = PresignCredentials(frozen.access_key, frozen.secret_key, frozen.token or None, expires_at)
        self._last = (frozen, credentials)
        return credentials

    async def aclose(self) -> None:
        """Let a resolution in flight finish (it runs botocore code that should not be cancelled midway)."""
        if self._resolving is not None:
            with contextlib.suppress(Exception):
                await self._resolving


def require_credentials(config: StorageConfig) -> None:
    """Process start (API and worker): exit with a clear message when the chain has no S3 credentials at all.

    A failure to fetch ones that are configured (STS or the metadata service down) is only logged: the API
    answers part-urls with 503 and workers retry until they can be fetched.
    """
    source = CredentialSource(config)
    if not source.from_chain:
        return
    try:
        asyncio.run(source.current())
    except NoStorageCredentials as exc:
        raise SystemExit(f"spatialgen: {exc}") from None
    except StorageCredentialsError as exc:
        log.warning("S3 credentials unavailable at start: %s", exc)


async def _resolve_chain(session: Any = None) -> AioCredentials:
    if session is None:
        from aiobotocore.session import get_session

        # Creating the session imports and reads botocore's data: keep that off the event loop.
        session = await asyncio.to_thread(get_session)
    return await chain_credentials(session)


async def chain_credentials(session: Any) -> AioCredentials:
    """The provider chain's credentials for an aiobotocore session (NoStorageCredentials if it has none)."""
    try:
        provider = await session.get_credentials()
    except Exception as exc:  # a provider that is configured but broken (bad profile, unreadable token file)
        raise StorageCredentialsError(f"resolving S3 credentials failed: {type(exc).__name__}: {exc}") from exc
    if provider is None:
        raise NoStorageCredentials
    return cast("AioCredentials", provider)
