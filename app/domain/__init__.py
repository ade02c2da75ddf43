"""The pure upload domain: the request contract, rules, lifecycle vocabulary, errors and reasons.

No I/O here: plain functions and msgspec Structs, unit-tested exhaustively (tests/unit).
"""
