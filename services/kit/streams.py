"""NATS connection and JetStream streams, declared in one place from contracts.subjects.

FastStream subscribers use `JStream(name, declare=False)`: declaring there would rewrite a
shared stream's config with FastStream's defaults.
"""
from __future__ import annotations

import nats
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError

from contracts.subjects import SEALED_STREAMS, STREAMS
from services.kit import logging as klog
from services.kit import natsfix
from services.kit.settings import Settings

log = klog.get(__name__)
natsfix.apply()  # FastStream pull consumers otherwise stall for ack_wait now and then


def connect_options(settings: Settings, name: str) -> dict:
    opts: dict = {
        "servers": [settings.nats_url],
        "name": name,
        # nats-py gives up after ~2 minutes by default; a service must keep trying
        "max_reconnect_attempts": -1,
        "reconnect_time_wait": 1,
    }
    if settings.nats_creds:
        opts["user_credentials"] = settings.nats_creds
    elif settings.nats_user:
        opts["user"], opts["password"] = settings.nats_user, settings.nats_password
        # each NATS identity may only read replies on its own inboxes (kit.natsperm)
        opts["inbox_prefix"] = f"_INBOX.{settings.nats_user}"
    return opts


def broker_auth(settings: Settings) -> dict:
    """The same credentials, in FastStream's terms."""
    if settings.nats_creds:
        return {"user_credentials": settings.nats_creds}
    if settings.nats_user:
        from faststream.security import SASLPlaintext
        return {"security": SASLPlaintext(username=settings.nats_user, password=settings.nats_password or ""),
                "inbox_prefix": f"_INBOX.{settings.nats_user}"}
    return {}


async def connect(settings: Settings, name: str) -> Client:
    return await nats.connect(**connect_options(settings, name))


def stream_configs(settings: Settings) -> list[StreamConfig]:
    names = settings.names
    out = []
    for bare, subjects in STREAMS.items():
        sealed = bare in SEALED_STREAMS
        out.append(StreamConfig(
            name=names.stream(bare),
            subjects=[names.subject(s) for s in subjects],
            storage=StorageType.FILE,
            retention=RetentionPolicy.LIMITS,
            discard=DiscardPolicy.OLD,
            num_replicas=settings.stream_replicas,
            duplicate_window=float(settings.dedup_window_seconds),
            deny_delete=sealed,
            deny_purge=sealed,
            allow_rollup_hdrs=False,
        ))
    return out


async def ensure_streams(js: JetStreamContext, settings: Settings, *, update: bool = True) -> list[str]:
    """Create every stream that is missing; with `update`, bring existing ones to the config.

    Idempotent: running it twice changes nothing. Returns what it did, for the CLI.
    """
    done = []
    for cfg in stream_configs(settings):
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
        try:
            await js.delete_stream(cfg.name)
        except NotFoundError:
            pass
