"""The machinery of the full validation walk: gather every violation of a body, each with its JSON path.

Request bodies are first decoded the typed way (msgspec, into the contract's Structs); a body that does not decode
whole is walked as untyped JSON here instead, so the client gets every violation in one 400 (SPEC 5).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from typing import Any, TypeGuard

import msgspec

from app.domain import errors
from app.domain.errors import FieldError

# Characters no name needs and that make names lie about themselves: C0/C1 controls, unpaired surrogates,
# bidi embeddings/overrides/isolates (a "Trojan source" name can display as another), line/paragraph
# separators and Unicode noncharacters. Zero-width joiners stay allowed: Persian, Hindi and emoji sequences
# need them. Most strings have none of these, so the common case is one regex over the whole string.
_BIDI_CONTROLS = "\u202a-\u202e\u2066-\u2069"
_FORBIDDEN = f"\x00-\x1f\x7f-\x9f\ud800-\udfff{_BIDI_CONTROLS}\u2028\u2029\ufdd0-\ufdef\ufffe\uffff"
PLAIN_TEXT = re.compile(f"[^{_FORBIDDEN}]*")
INVISIBLE = re.compile("[\\s\u200b-\u200d\u2060\ufeff]*")
"""Only spaces or zero-width characters: nothing anyone could see."""


def bad_chars(value: str, allowed: str = "") -> str | None:  # noqa: PLR0911 - one answer per kind of bad character
    """Why a string is unacceptable (controls, surrogates, bidi overrides, separators, noncharacters), or None."""
    if PLAIN_TEXT.fullmatch(value):
        return None
    for ch in value:
        if ch in allowed:
            continue
        code = ord(ch)
        cat = unicodedata.category(ch)
        if cat == "Cc":
            return f"must not contain control characters (found U+{code:04X})"
        if cat == "Cs":
            return "must not contain unpaired surrogates"
        if 0x202A <= code <= 0x202E or 0x2066 <= code <= 0x2069:
            return f"must not contain bidirectional control characters (found U+{code:04X})"
        if cat in ("Zl", "Zp"):
            return f"must not contain line or paragraph separators (found U+{code:04X})"
        if 0xFDD0 <= code <= 0xFDEF or code & 0xFFFE == 0xFFFE:
            return f"must not contain Unicode noncharacters (found U+{code:04X})"
    return None


def json_type(value: Any) -> str:  # noqa: PLR0911 - one answer per JSON type
    """How a JSON value's type reads in a message ('a string', 'an array', ...)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def clip(text: str, limit: int = 40) -> str:
    """A client value shortened for a message."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def is_int(value: Any) -> TypeGuard[int]:
    """A JSON integer (JSON's true and false are not)."""
    return isinstance(value, int) and not isinstance(value, bool)


def decode_json_body(body: bytes) -> Any:
    """Decode a request body as JSON, or raise a 400 that says where it broke."""
    try:
        return msgspec.json.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise errors.MALFORMED_JSON(f"The body is not valid JSON: {exc}.") from None
    except UnicodeDecodeError:
        raise errors.MALFORMED_JSON("The body is not valid UTF-8.") from None
    except RecursionError:
        raise errors.MALFORMED_JSON("The body is nested too deeply.") from None


def decode_optional_body(body: bytes, what: str) -> Any:
    """An optional JSON object body (part-urls, complete): None when there is no body; `null` is refused like any
    other body that is not an object (the document says object), rather than read as "no body"."""
    if not body.strip():
        return None
    payload = decode_json_body(body)
    if payload is None:
        found = Violations()
        found.add("$", "the body must be a JSON object, not null (send no body, or {}, for the defaults)")
        found.raise_if_any(what)
    return payload


class Violations:
    """Gathers every violation so the client gets all of them in one answer."""

    def __init__(self) -> None:
        self.errors: list[FieldError] = []

    def add(self, path: str, message: str) -> None:
        """Note one violation at a JSON path."""
        self.errors.append(FieldError(path, message))

    def text(
        self, obj: Mapping[str, Any], key: str, path: str, limits: Mapping[str, int], *, required: bool,
        trim: bool = False, allowed_controls: str = "",
    ) -> str | None:  # fmt: skip
        """A string field within its declared limits (`min_length`, `max_length`), or None with its violation."""
        value = obj.get(key)
        if value is None:
            if required:
                self.add(path, "is required")
            return None
        if not isinstance(value, str):
            self.add(path, f"must be a string, not {json_type(value)}")
            return None
        if trim:
            value = value.strip()
        min_chars, max_chars = limits.get("min_length", 0), limits["max_length"]
        if min_chars and INVISIBLE.fullmatch(value):
            value = ""  # only spaces or zero-width characters: nothing anyone could see
        if len(value) < min_chars:
            self.add(path, "must not be empty" if min_chars == 1 else f"must be at least {min_chars} characters")
            return None
        if len(value) > max_chars:
            self.add(path, f"must be at most {max_chars} characters (got {len(value)})")
            return None
        bad = bad_chars(value, allowed_controls)
        if bad:
            self.add(path, bad)
            return None
        return value

    def choice(self, obj: Mapping[str, Any], key: str, path: str, choices: Mapping[str, Any], *, required: bool) -> Any:
        """One of the declared values (an enum member), or None with its violation."""
        value = obj.get(key)
        if value is None:
            if required:
                self.add(path, f"is required (one of {', '.join(choices)})")
            return None
        if not isinstance(value, str) or value not in choices:
            shown = value if isinstance(value, str) else json_type(value)
            self.add(path, f"must be one of {', '.join(choices)} (got {clip(str(shown))})")
            return None
        return choices[value]

    def unknown_fields(self, obj: Mapping[str, Any], known: frozenset[str], prefix: str) -> None:
        """Note every field the contract does not declare."""
        for key in obj:
            if key not in known:
                self.add(f"{prefix}{clip(str(key))}", "is not a known field")

    def raise_if_any(self, what: str) -> None:
        """One 400 listing every violation noted so far, if any."""
        if self.errors:
            first, n = self.errors[0], len(self.errors)
            more = "" if n == 1 else f" (and {n - 1} more)"
            raise errors.INVALID_REQUEST(f"Invalid {what}: {first.path} {first.message}{more}", errors=self.errors)


def wire_names(struct: type[msgspec.Struct]) -> frozenset[str]:
    """The JSON names of a contract Struct's fields: what a body may contain."""
    return frozenset(struct.__struct_encode_fields__)


def body_object(payload: Any, struct: type[msgspec.Struct], what: str) -> tuple[Violations, dict[str, Any]]:
    """A walk over a body that must be a JSON object of `struct`'s fields: a non-object is a 400 at once, and
    fields the Struct does not declare are noted."""
    found = Violations()
    if not isinstance(payload, dict):
        found.add("$", f"the body must be a JSON object, not {json_type(payload)}")
        found.raise_if_any(what)
    found.unknown_fields(payload, wire_names(struct), "")
    return found, payload
