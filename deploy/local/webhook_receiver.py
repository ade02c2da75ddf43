"""A local webhook receiver that verifies every delivery with the Standard Webhooks reference verifier and prints it.

    python -m deploy.local.webhook_receiver --secret whsec_… [--port 9100] [--status 200]

Dev only (the `standardwebhooks` package is a dev dependency): `make run`'s README section registers an endpoint
pointing here. The tests use `Receiver` itself as their real receiving server, with answers they choose (a status,
a Retry-After, a delay) and every request kept for their assertions.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from standardwebhooks import Webhook

MAX_BODY = 1024 * 1024


@dataclass
class Received:
    """One request the receiver got."""

    headers: dict[str, str]
    body: bytes
    verified: bool
    answered: int
    at: float = field(default_factory=time.monotonic)

    @property
    def webhook_id(self) -> str:
        """The `webhook-id` header."""
        return self.headers.get("webhook-id", "")

    def event(self) -> dict[str, object]:
        """The body as JSON."""
        doc: dict[str, object] = json.loads(self.body)
        return doc


Answer = tuple[int, dict[str, str], float]
"""(status, extra headers, seconds to wait before answering)."""
Policy = Callable[[dict[str, str], bytes], Answer | Awaitable[Answer]]


class Receiver:
    """An HTTP/1.1 server on loopback: verifies each POST with `Webhook(secret).verify` (401 if it fails), then
    answers as `policy` says (200 by default) and keeps the request in `received`."""

    def __init__(self, secrets: list[str] | None = None, *, port: int = 0, policy: Policy | None = None,
                 quiet: bool = True) -> None:  # fmt: skip
        self.secrets = list(secrets or [])
        self.port = port
        self.policy = policy
        self.quiet = quiet
        self.received: list[Received] = []
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        """Where to point an endpoint."""
        return f"http://127.0.0.1:{self.port}/hooks"

    async def start(self) -> Receiver:
        """Listen (on the same port again after a stop)."""
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        """Stop listening and drop open connections (what a receiver going down does)."""
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                self._server.close_clients()  # type: ignore[attr-defined]  # Python 3.13+
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
            self._server = None

    def verify(self, headers: dict[str, str], body: bytes) -> bool:
        """Whether any of the secrets verifies the delivery (the reference verifier, timestamp window included)."""
        for secret in self.secrets:
            with contextlib.suppress(Exception):
                Webhook(secret).verify(body, headers)
                return True
        return not self.secrets

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                request = await _read_request(reader)
                if request is None:
                    return
                headers, body = request
                verified = self.verify(headers, body)
                status, extra, delay = 401, dict[str, str](), 0.0
                if verified:
                    answer = self.policy(headers, body) if self.policy else (200, {}, 0.0)
                    status, extra, delay = await answer if isinstance(answer, Awaitable) else answer
                if delay:
                    await asyncio.sleep(delay)
                self.received.append(Received(headers, body, verified, status))
                if not self.quiet:
                    _print(headers, body, verified, status)
                text = b'{"ok":true}' if status < 300 else b'{"ok":false}'
                lines = [f"HTTP/1.1 {status} X", f"content-length: {len(text)}", "content-type: application/json",
                         *(f"{k}: {v}" for k, v in extra.items())]  # fmt: skip
                writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + text)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            return
        finally:
            writer.close()


async def _read_request(reader: asyncio.StreamReader) -> tuple[dict[str, str], bytes] | None:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    if not lines[0]:
        return None
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    size = int(headers.get("content-length", "0"))
    if size > MAX_BODY:
        raise ValueError("body too large")
    return headers, await reader.readexactly(size)


def _print(headers: dict[str, str], body: bytes, verified: bool, status: int) -> None:
    try:
        event = json.loads(body)
    except ValueError:
        event = {"body": body[:200].decode(errors="replace")}
    line = {"verified": verified, "answered": status, "webhook-id": headers.get("webhook-id"),
            "type": event.get("type"), "data": event.get("data")}  # fmt: skip
    print(json.dumps(line), flush=True)


async def _main(args: argparse.Namespace) -> None:
    def policy(headers: dict[str, str], body: bytes) -> Answer:
        return args.status, {}, 0.0

    receiver = await Receiver(args.secret, port=args.port, policy=policy, quiet=False).start()
    print(f"receiving webhooks at {receiver.url}; verifying with {len(args.secret)} secret(s)", file=sys.stderr)
    await asyncio.Event().wait()


def main() -> None:
    """`python -m deploy.local.webhook_receiver`."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--secret", action="append", default=[], help="whsec_… (repeat during a rotation)")
    parser.add_argument("--port", type=int, default=9100)
    parser.add_argument("--status", type=int, default=200, help="the answer to every verified delivery")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_main(parser.parse_args()))


if __name__ == "__main__":
    main()
