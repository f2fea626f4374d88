"""Structured logs (structlog, JSON lines) with personal data masked.

Any 16-digit run (a NIK or No. KK, also written in groups) in any logged value, message or
exception is cut to its region part, so a log line can still say which kecamatan a record came
from without naming the person. Values under personal keys (names, addresses, complaint and
note texts, birth dates, phone numbers, account numbers) and secrets are replaced by `***`,
at any depth. Free text must never be logged under a neutral key: the masking cannot find a
name inside a sentence.
"""
from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

# a NIK or No. KK: 16 digits, also written in groups ("3317 0101 6007 0001", "3317.01..."); not
# dashes, so UUIDs (event ids in every log line) stay readable
_SIXTEEN = re.compile(r"(?<![\d])((?:\d[ .]?){5}\d)(?:[ .]?\d){10}(?![\d])")
SENSITIVE_KEYS = {
    "name", "nama", "full_name", "nama_lengkap", "mother_name", "nama_ibu", "address", "alamat",
    "text", "complaint_text", "description", "keterangan", "notes", "catatan", "note",
    "phone", "telepon", "no_hp", "email", "birth_date", "tanggal_lahir", "birth_place", "tempat_lahir",
    "nik", "no_kk", "kk", "account_number", "no_rekening", "rekening",
    "password", "token", "access_token", "authorization", "secret", "auth_secret", "nats_password",
}
# identifiers that keep their region part (which kecamatan), everything else is replaced
_ID_KEYS = {"nik", "no_kk", "kk"}
_SUFFIXES = ("_name", "_nama", "_nik", "_kk", "_address", "_alamat", "_text", "_password", "_token", "_secret")


def is_sensitive(key: Any) -> bool:
    k = str(key).lower()
    return k in SENSITIVE_KEYS or k.endswith(_SUFFIXES)


def mask_text(value: str) -> str:
    """Cut every NIK/KK-like 16-digit run to its first 6 digits (province, regency, kecamatan)."""
    return _SIXTEEN.sub(lambda m: m.group(1) + "**********", value)


def _mask_key(key: Any, value: Any) -> Any:
    if value is None:
        return None
    if str(key).lower() in _ID_KEYS or str(key).lower().endswith(("_nik", "_kk")):
        return mask_text(value) if isinstance(value, str) else "***"
    return "***"


def mask_value(value: Any) -> Any:
    """A copy of `value` with personal data masked: for logs and audit rows."""
    if value is None or isinstance(value, (bool, float)):
        return value
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, (bytes, bytearray)):
        return mask_text(bytes(value).decode("utf-8", "replace"))
    if isinstance(value, dict):
        return {k: (_mask_key(k, v) if is_sensitive(k) else mask_value(v)) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [mask_value(v) for v in value] if isinstance(value, (set, frozenset)) else \
            type(value)(mask_value(v) for v in value)
    if hasattr(value, "model_dump"):  # a pydantic model logged whole
        return mask_value(value.model_dump(mode="json"))
    if isinstance(value, int):  # a NIK stored as a number
        return mask_text(str(value)) if len(str(abs(value))) == 16 else value
    return mask_text(str(value))  # UUIDs, dates, exceptions: as the renderer would print them


_mask_value = mask_value  # the earlier private name


def mask_personal_data(_logger: Any, _name: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key, value in list(event_dict.items()):
        event_dict[key] = _mask_key(key, value) if is_sensitive(key) and key != "event" else mask_value(value)
    return event_dict


def configure(service: str, level: str = "info", fmt: str = "json") -> None:
    lvl = getattr(logging, level.upper(), logging.INFO)
    renderer = structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer()
    processors: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        mask_personal_data,
    ]
    structlog.configure(
        processors=[*processors, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        logger_factory=structlog.PrintLoggerFactory(sys.stdout),
        cache_logger_on_first_use=False,
    )
    structlog.contextvars.bind_contextvars(service=service)
    # Route stdlib logging (uvicorn, nats, alembic) through the same masking pipeline.
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=processors, processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer]))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(lvl)
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)


def get(name: str | None = None) -> structlog.typing.FilteringBoundLogger:
    """A logger of the pipeline `configure` set up (its wrapper class is a filtering bound logger)."""
    logger: structlog.typing.FilteringBoundLogger = structlog.get_logger(name)
    return logger
