"""JetStream streams, declared in one place from contracts.subjects (services only add missing
ones at start-up; `sinergi migrate` brings existing ones to this config)."""
from __future__ import annotations

import contextlib

from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError

from contracts.subjects import (DEADLETTER_STREAM, MIN_DEDUP_WINDOW_SECONDS, PARTY_DEDUP_STREAMS, SEALED_STREAMS,
                                STREAMS)
from services.kit import logging as klog
from services.kit.bus import connect, connect_options  # noqa: F401 - re-exported for the CLIs
from services.kit.settings import Settings

log = klog.get(__name__)


def stream_configs(settings: Settings) -> list[StreamConfig]:
    names = settings.names
    out = []
    for bare, subjects in STREAMS.items():
        sealed = bare in SEALED_STREAMS
        # dead letters hold the rejected messages, personal data included: kept for a while,
        # for an operator to look at and replay, then gone (docs/SECURITY.md); the other
        # streams keep everything (0: no limit)
        max_age = settings.deadletter_max_age_days * 86400 if bare == DEADLETTER_STREAM else 0.0
        window = MIN_DEDUP_WINDOW_SECONDS if bare in PARTY_DEDUP_STREAMS else float(settings.dedup_window_seconds)
        out.append(StreamConfig(
            name=names.stream(bare),
            subjects=[names.subject(s) for s in subjects],
            storage=StorageType.FILE,
            retention=RetentionPolicy.LIMITS,
            discard=DiscardPolicy.OLD,
            num_replicas=settings.stream_replicas,
            duplicate_window=window,
            deny_delete=sealed,
            deny_purge=sealed,
            allow_rollup_hdrs=False,
            max_age=max_age,
        ))
    return out


async def ensure_streams(js: JetStreamContext, settings: Settings, *, update: bool = True) -> list[str]:
    """Create every stream that is missing; with `update`, bring existing ones to the config.

    Idempotent: running it twice changes nothing. Returns what it did, for the CLI.
    """
    done = []
    for cfg in stream_configs(settings):
        assert cfg.name is not None
        try:
            await js.stream_info(cfg.name)
        except NotFoundError:
            await js.add_stream(cfg)
            done.append(f"created {cfg.name}")
            continue
        if update:
            await js.update_stream(cfg)
            done.append(f"checked {cfg.name}")
    return done


async def delete_streams(js: JetStreamContext, settings: Settings) -> None:
    for cfg in stream_configs(settings):
        with contextlib.suppress(NotFoundError):
            await js.delete_stream(cfg.name or "")
