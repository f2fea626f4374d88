"""Structured logs (structlog, JSON lines) with personal data masked.

Any 16-digit run (a NIK or No. KK) in any logged value is cut to its region part, so a log
line can still say which kecamatan a record came from without naming the person.
"""
from __future__ import annotations

import logging
import re
import sys
from typing import Any

import structlog

_SIXTEEN = re.compile(r"(?<!\d)(\d{6})\d{10}(?!\d)")
SENSITIVE_KEYS = {"name", "nama", "address", "alamat", "text", "complaint_text", "nik", "no_kk"}


def _mask_value(value: Any) -> Any:
    if isinstance(value, str):
        return _SIXTEEN.sub(r"\1**********", value)
    if isinstance(value, dict):
        return {k: ("***" if k in SENSITIVE_KEYS else _mask_value(v)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_mask_value(v) for v in value)
    return value


def mask_personal_data(_logger: Any, _name: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    for key, value in list(event_dict.items()):
        if key in SENSITIVE_KEYS and value is not None:
            event_dict[key] = _SIXTEEN.sub(r"\1**********", value) if key in ("nik", "no_kk") and isinstance(value, str) else "***"
        else:
            event_dict[key] = _mask_value(value)
    return event_dict


def configure(service: str, level: str = "info", fmt: str = "json") -> None:
    lvl = getattr(logging, level.upper(), logging.INFO)
    renderer = structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer()
    processors = [
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
    # Route stdlib logging (uvicorn, faststream, alembic) through the same masking pipeline.
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=processors, processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer]))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(lvl)
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)


def get(name: str | None = None) -> structlog.stdlib.BoundLogger:
    return structlog.get_logger(name)
