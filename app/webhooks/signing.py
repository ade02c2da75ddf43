"""Standard Webhooks signatures: secrets (`whsec_` + base64 of 32 random bytes) and the headers of a delivery.

The signed content is `{webhook-id}.{webhook-timestamp}.{body}`, the key the secret's base64-decoded bytes, the
signature `v1,` + base64(HMAC-SHA256); during a secret rotation both signatures are sent, space-separated, so a
receiver that knows either secret verifies the delivery. tests/unit/test_webhooks.py checks this against the spec's
reference verifier (the `standardwebhooks` package).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Sequence

from app.domain.webhooks import SECRET_PREFIX

SECRET_BYTES = 32
USER_AGENT = "SpatialGen-Webhooks/1"


def new_secret() -> str:
    """A fresh signing secret, shown to the account's admins once."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def secret_key(secret: str) -> bytes:
    """The HMAC key of a secret: its base64 part decoded."""
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX))


def signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """`v1,<base64 HMAC-SHA256 of id.timestamp.body>`."""
    mac = hmac.new(secret_key(secret), f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def delivery_headers(signing_secrets: Sequence[str], msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The headers of one delivery attempt: the id (stable across retries), this attempt's time and its signatures."""
    return {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(signature(s, msg_id, timestamp, body) for s in signing_secrets),
    }
