"""Webhook rules without services: signatures against the Standard Webhooks reference verifier, the address guard,
endpoint URLs and event types, the retry schedule with its jitter and Retry-After, event ids."""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import random
import time
from datetime import UTC, datetime

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from app.domain.events import EventType, event_id
from app.domain.webhooks import (
    JITTER,
    MAX_RETRY_AFTER_SECONDS,
    SPEC_SCHEDULE,
    parse_retry_after,
    parse_schedule,
    retry_delay,
    type_problems,
    url_problems,
)
from app.state.webhooks import Endpoint
from app.webhooks.outbound import address_allowed
from app.webhooks.signing import delivery_headers, new_secret, secret_key, signature

BODY = b'{"id":"evt_1","type":"upload_group.completed","data":{"sessionId":"s"}}'


def test_a_delivery_verifies_with_the_reference_verifier() -> None:
    secret = new_secret()
    assert secret.startswith("whsec_") and len(secret_key(secret)) == 32
    now = int(time.time())
    headers = delivery_headers([secret], "evt_1", now, BODY)
    assert Webhook(secret).verify(BODY, headers)["id"] == "evt_1"
    assert headers["webhook-signature"] == Webhook(secret).sign("evt_1", datetime.fromtimestamp(now, UTC), BODY)
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(BODY, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(BODY + b" ", headers)


def test_during_a_rotation_either_secret_verifies() -> None:
    old, new = new_secret(), new_secret()
    headers = delivery_headers([new, old], "evt_2", int(time.time()), BODY)
    assert len(headers["webhook-signature"].split(" ")) == 2
    for secret in (old, new):
        Webhook(secret).verify(BODY, headers)


def test_the_signature_is_hmac_sha256_of_id_timestamp_body() -> None:
    secret = "whsec_" + base64.b64encode(b"k" * 24).decode()
    mac = hmac.new(b"k" * 24, b"evt_3.1700000000." + BODY, hashlib.sha256).digest()
    assert signature(secret, "evt_3", 1700000000, BODY) == "v1," + base64.b64encode(mac).decode()


def test_an_endpoint_signs_with_the_previous_secret_only_during_the_overlap() -> None:
    e = Endpoint(endpoint_id="e", account="a", url="https://x", types=(), secret="new", previous_secret="old",
                 previous_until_ms=1000)  # fmt: skip
    assert e.signing_secrets(999) == ["new", "old"] and e.signing_secrets(1000) == ["new"]
    assert e.wants("upload_group.failed") and not Endpoint(endpoint_id="e", account="a", url="u",
                                                           types=("upload_group.completed",)).wants("x")  # fmt: skip


@pytest.mark.parametrize(
    ("address", "public", "private"),
    [
        ("93.184.216.34", True, True),
        ("2606:2800:220:1:248:1893:25c8:1946", True, True),
        ("127.0.0.1", False, True),
        ("::1", False, True),
        ("10.1.2.3", False, True),
        ("172.16.0.1", False, True),
        ("192.168.1.1", False, True),
        ("100.64.0.1", False, True),  # shared (carrier-grade NAT)
        ("169.254.10.10", False, True),  # link-local
        ("fe80::1", False, True),
        ("fd12::1", False, True),  # unique local
        ("169.254.169.254", False, False),  # instance metadata: never
        ("fd00:ec2::254", False, False),
        ("::ffff:127.0.0.1", False, True),  # IPv4-mapped loopback is loopback
        ("::ffff:169.254.169.254", False, False),
        ("0.0.0.0", False, False),
        ("224.0.0.1", False, False),
        ("240.0.0.1", False, True),  # reserved
    ],
)
def test_the_address_guard(address: str, public: bool, private: bool) -> None:
    ip = ipaddress.ip_address(address)
    assert address_allowed(ip, allow_private=False) is public
    assert address_allowed(ip, allow_private=True) is private


@pytest.mark.parametrize(
    ("url", "allow_http", "problem"),
    [
        ("https://hooks.example.com/x?y=1", False, None),
        ("http://hooks.example.com/x", False, "https"),
        ("http://127.0.0.1:9100/hooks", True, None),
        ("ftp://x/", True, "https"),
        ("https://user:pw@x.example.com/", False, "credentials"),
        ("https:///nohost", False, "no host"),
        ("https://x.example.com/#frag", False, "fragment"),
        ("https://bücher.example/", False, "ASCII"),
        ("https://x.example.com:99999/", False, "valid URL"),
    ],
)
def test_endpoint_urls(url: str, allow_http: bool, problem: str | None) -> None:
    found = url_problems(url, allow_http=allow_http)
    assert (not found) if problem is None else any(problem in p for p in found), found


def test_event_types() -> None:
    assert type_problems(["upload_group.completed", "upload_file.completed"]) == []
    assert [e.path for e in type_problems(["webhook.test", "x"])] == ["eventTypes[0]", "eventTypes[1]"]
    assert [e.path for e in type_problems(["upload_group.failed"] * 2)] == ["eventTypes"]


def test_the_schedule_is_the_spec_s_with_jitter() -> None:
    schedule = parse_schedule(SPEC_SCHEDULE)
    assert schedule == (0, 5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400)
    rng = random.Random(1)
    for attempt in range(1, len(schedule)):
        for _ in range(50):
            delay = retry_delay(schedule, attempt, rng=rng)
            assert delay is not None
            assert schedule[attempt] * (1 - JITTER) <= delay <= schedule[attempt] * (1 + JITTER)
    assert retry_delay(schedule, len(schedule)) is None  # the tenth attempt was the last
    for bad in ("", "a,b", "-1", "1,nan"):
        with pytest.raises(ValueError):
            parse_schedule(bad)


def test_retry_after_is_honoured_when_longer_and_bounded() -> None:
    schedule = parse_schedule("0,5")
    assert retry_delay(schedule, 1, retry_after=60, rng=random.Random(2)) == 60
    assert retry_delay(schedule, 1, retry_after=1, rng=random.Random(2)) < 6  # type: ignore[operator]
    assert retry_delay(schedule, 1, retry_after=10**9) == MAX_RETRY_AFTER_SECONDS
    now = 1_800_000_000.0
    assert parse_retry_after("120", now) == 120
    at = datetime(2027, 1, 15, 8, 0, 30, tzinfo=UTC).timestamp()
    assert parse_retry_after("Fri, 15 Jan 2027 08:00:30 GMT", at - 30) == 30
    assert parse_retry_after("soon", now) is None and parse_retry_after(None, now) is None


def test_event_ids_are_derived_from_the_transition() -> None:
    a = event_id(EventType.GROUP_COMPLETED, "s1")
    assert a == event_id("upload_group.completed", "s1") and a.startswith("evt_") and len(a) == 36
    assert len({a, event_id(EventType.GROUP_CANCELED, "s1"), event_id(EventType.FILE_COMPLETED, "s1", "u1"),
                event_id(EventType.FILE_COMPLETED, "s1", "u2")}) == 4  # fmt: skip
