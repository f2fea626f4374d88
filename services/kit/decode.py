"""Bytes from the wire into contracts, with limits, so that no decode error escapes.

Every consumer decodes through here. Whatever the bytes are (1 MiB of text, a 50,000-deep
array, an integer of 5,000 digits, `\\u0000` in a name, invalid UTF-8, nothing at all), the
result is a value or a `Rejection` with a stable reason code, never an exception the
consumer loop did not expect. Before this, a 50,000-deep array raised RecursionError inside
the decoder, the batch was redelivered forever without a log line, and the valid messages
behind it waited (issue 11).

The checks cost almost nothing on the common path: the size is a length, the depth and the
special cases are looked for only when a C-speed byte scan says they may be there.
"""
from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from contracts.envelope import Envelope, Event

M = TypeVar("M", bound=BaseModel)

INT64_MAX = 2**63 - 1
# an escaped UTF-16 surrogate (\ud800-\udfff): a lone one is no character, and PostgreSQL
# refuses it in text (a pair decodes to one character and is fine: checked after parsing)
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def _int(text: str) -> int:
    """json's parse_int hook: an integer beyond 64 bits is refused while parsing (cheaper than
    scanning every message for long digit runs: 8-16 us per 745-byte event, measured)."""
    value = int(text)
    if len(text) > 18 and abs(value) > INT64_MAX:
        raise Rejection("rjct.json.number_too_large", "a number beyond 64 bits")
    return value


class Rejection(Exception):
    """A message that is wrong in itself: it gets a reason code, never a retry."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code, self.reason = code, reason


@dataclass(frozen=True)
class Limits:
    max_bytes: int = 1024 * 1024  # NATS's default max_payload
    max_depth: int = 32           # no contract nests deeper than 6


DEFAULT_LIMITS = Limits()


# made once: json.loads builds a decoder per call when given any option, and detects the
# encoding of bytes first (5.2 us against 8-9 us for a 650-byte event, measured)
_JSON = json.JSONDecoder(parse_int=_int)


def load_json(data: bytes, limits: Limits = DEFAULT_LIMITS) -> Any:
    """Parse JSON within `limits`; raises `Rejection` for anything else."""
    if len(data) > limits.max_bytes:
        raise Rejection("rjct.message.too_large", f"the message has {len(data)} bytes; at most {limits.max_bytes}")
    if not data.strip():
        raise Rejection("rjct.message.empty", "the message is empty")
    try:
        raw = _JSON.decode(data.decode())
    except RecursionError:
        raise Rejection("rjct.json.too_deep", f"JSON nested deeper than {limits.max_depth} levels") from None
    except UnicodeDecodeError:
        raise Rejection("rjct.message.encoding", "the message is not UTF-8 text") from None
    except ValueError as exc:
        if "digits" in str(exc):  # Python's int-string limit (4,300 digits)
            raise Rejection("rjct.json.number_too_large", "a number beyond 64 bits") from None
        raise Rejection("rjct.json.invalid", f"not valid JSON: {str(exc)[:200]}") from None
    opened = data.count(b"[") + data.count(b"{")
    if opened > limits.max_depth or b"\\u0000" in data or _SURROGATE_ESCAPE.search(data):
        _walk(raw, limits.max_depth)
    return raw


def _walk(raw: Any, max_depth: int) -> None:
    """Depth, NUL characters and integers beyond 64 bits, iteratively (no recursion to blow)."""
    stack: list[tuple[Any, int]] = [(raw, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            if depth > max_depth:
                raise Rejection("rjct.json.too_deep", f"JSON nested deeper than {max_depth} levels")
            for k, v in node.items():
                _check_text(k)
                stack.append((v, depth + 1))
        elif isinstance(node, list):
            if depth > max_depth:
                raise Rejection("rjct.json.too_deep", f"JSON nested deeper than {max_depth} levels")
            stack.extend((v, depth + 1) for v in node)
        elif isinstance(node, str):
            _check_text(node)


def _check_text(text: str) -> None:
    bad = _UNSTORABLE.search(text)
    if bad is None:
        return
    if bad.group() == "\x00":
        raise Rejection("rjct.text.nul", "a text holds a NUL character (\\u0000), which no database keeps")
    raise Rejection("rjct.text.unstorable", "a text holds a lone UTF-16 surrogate (e.g. \\ud800), which is no "
                                            "character and no database keeps")


def problems(exc: ValidationError, limit: int = 1000) -> str:
    """A pydantic error as `field: problem; ...` without echoing the input (it may be personal)."""
    text = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'message'}: {e['msg']}" for e in exc.errors())
    return text[:limit]


def decode_model(data: bytes, model: type[M], limits: Limits = DEFAULT_LIMITS,
                 code: str = "rjct.schema.invalid") -> M:
    raw = load_json(data, limits)
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise Rejection(code, problems(exc)) from None


# The common message, made by a Sinergi outbox, takes one pass of pydantic's own JSON parser
# (jiter): 20,000 743-byte settlements in 0.13 s against 0.27 s for json.loads +
# model_validate, measured. The fast pass refuses by itself what load_json looks for with
# byte scans (nesting beyond its recursion limit, lone surrogates, invalid UTF-8 or JSON: each
# a ValidationError here); it would let through what only load_json refuses, so those bytes
# are looked for first: a NUL escape, and a run of 19 digits (an integer that may exceed 64
# bits). Whatever the fast pass does not take, including a message whose duplicated
# `event_type` keys disagree, goes the checked way below, so the answer (a value or the same
# Rejection) does not depend on the path.
_EVENT_TYPE = re.compile(rb'"event_type"\s*:\s*"([a-z0-9_.]{1,100})"')
# digits to "0", then one substring search: 0.7 us a message, where the regex \d{19} took 7 us
_DIGITS_TO_ZERO = bytes.maketrans(b"123456789", b"000000000")
_NINETEEN_DIGITS = b"0" * 19


def _fast_envelope(data: bytes, events: Mapping[str, type[Event]], limits: Limits) -> Envelope[Any] | None:
    if (len(data) > limits.max_bytes or b"\\u0000" in data
            or _NINETEEN_DIGITS in data.translate(_DIGITS_TO_ZERO)):
        return None
    m = _EVENT_TYPE.search(data)
    cls = events.get(m.group(1).decode()) if m else None
    if cls is None:
        return None
    try:
        env = _envelope_type(cls).model_validate_json(data)
    except ValidationError:
        return None
    return env if env.event_type == cls.event_type else None


def decode_envelope(data: bytes, events: Mapping[str, type[Event]], limits: Limits = DEFAULT_LIMITS,
                    skip: frozenset[str] | set[str] = frozenset()) -> Envelope[Any] | None:
    """An envelope whose `data` is decoded by its `event_type`; None for a type in `skip`
    (a known event this consumer has no use for: acknowledged, not handled)."""
    fast = _fast_envelope(data, events, limits)
    return fast if fast is not None else _checked_envelope(data, events, limits, skip)


def _checked_envelope(data: bytes, events: Mapping[str, type[Event]], limits: Limits,
                      skip: frozenset[str] | set[str]) -> Envelope[Any] | None:
    raw = load_json(data, limits)
    etype = raw.get("event_type") if isinstance(raw, dict) else None
    if isinstance(etype, str) and etype in skip and etype not in events:
        return None
    cls = events.get(etype) if isinstance(etype, str) else None
    if cls is None:
        raise Rejection("rjct.event.unknown_type", f"unknown event_type {str(etype)[:100]!r}")
    try:
        return _envelope_type(cls).model_validate(raw)
    except ValidationError as exc:
        raise Rejection("rjct.event.invalid", problems(exc)) from None


@functools.cache
def _envelope_type(cls: type[Event]) -> type[Envelope[Any]]:
    """`Envelope[cls]`, made once per event type (pydantic's own lookup cost 1.3-5 us a message)."""
    return Envelope[cls]  # type: ignore[valid-type]
