"""Disbursement-only settings (env prefix `SINERGI_DISBURSEMENT_`), and the regency's keys.

The pseudonym key and the Ed25519 signing key stay with the regency: neither is ever
published. `sinergi up` and `sinergi deploy init` generate them and pass
SINERGI_DISBURSEMENT_SIGNING_KEY_FILE / SINERGI_DISBURSEMENT_PSEUDONYM_KEY. Without them, in
development only, the service generates its own random keys once into `state_dir` and says so
(a key derived from a constant in the source let anyone reverse the pseudonyms and sign
events); production refuses to start without them.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from functools import cached_property
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.kit import logging as klog

log = klog.get(__name__)
SIGNATURE_HEADER = "Sinergi-Signature"  # on every audit event: "ed25519:<key_id>:<base64 signature>"


class DisbursementSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SINERGI_DISBURSEMENT_", env_file=".env", extra="ignore")

    pseudonym_key: str | None = None        # HMAC key for person pseudonyms on the audit stream
    signing_key_file: str | None = None     # PEM Ed25519 private key: every audit event and checkpoint
    # development only: where keys are generated when not given. Not under ./.sinergi: that is
    # `sinergi up`'s data dir, and its presence tells the commands a Sinergi runs there
    state_dir: str = str(Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
                         / "sinergi" / "disbursement")
    checkpoint_every: int = 500             # sign the chain head at least every N events...
    checkpoint_seconds: float = 30.0        # ...and after this long if anything happened
    chunk_size: int = 10000                 # people per cycle transaction (5,000: 3.4 s, 10,000: 3.1 s per 100,000, 23 Nov)
    relay_batch: int = 10000                # outbox rows per pipelined relay round
    resume_cycles: bool = True              # finish cycles left running by a crash...
    resume_seconds: float = 30.0            # ...looking this often (on the lease holder: kit.lease)
    preparation_hours: float = 72.0         # a prepared cycle not approved within this expires

    def check_production(self) -> None:
        if not self.pseudonym_key or not self.signing_key_file:
            raise RuntimeError("production needs SINERGI_DISBURSEMENT_PSEUDONYM_KEY and "
                               "SINERGI_DISBURSEMENT_SIGNING_KEY_FILE (from `sinergi deploy init`)")

    def pseudonym(self, nik: str) -> str:
        return pseudonym(self.pseudonym_secret, nik)

    @cached_property
    def pseudonym_secret(self) -> bytes:
        if self.pseudonym_key:
            return self.pseudonym_key.encode()
        return _generated(Path(self.state_dir) / "pseudonym.key",
                          lambda: secrets.token_hex(32).encode(), "pseudonym key").strip()

    @cached_property
    def signing_key(self) -> Ed25519PrivateKey:
        path = Path(self.signing_key_file) if self.signing_key_file else Path(self.state_dir) / "signing.pem"
        pem = path.read_bytes() if self.signing_key_file else _generated(path, _new_signing_pem, "signing key")
        key = serialization.load_pem_private_key(pem, password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise RuntimeError(f"{path} is not an Ed25519 private key")
        return key

    @cached_property
    def key_id(self) -> str:
        return key_id(self.signing_key.public_key())


def _new_signing_pem() -> bytes:
    return Ed25519PrivateKey.generate().private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                      serialization.NoEncryption())


def _generated(path: Path, make, what: str) -> bytes:
    """Development: the key in `path`, made once (random, owner-only) at the first start. Two
    processes starting together: the first creates the file (O_EXCL), the other reads it."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "wb") as f:
                f.write(make())
            log.warning("disbursement.dev_key_generated", key=what, path=str(path.resolve()),
                        note="development only; production takes its keys from `sinergi deploy init`")
    data = path.read_bytes()
    if not data.strip():  # the other process is still writing it
        import time
        time.sleep(0.2)
        data = path.read_bytes()
    return data


def pseudonym(key: bytes, nik: str) -> str:
    """HMAC-SHA256 of the NIK: stable per person, useless without the key (a plain hash of a
    NIK is brute-forced in minutes: region, birth date and sex are guessable)."""
    return hmac.digest(key, nik.encode(), "sha256").hex()


def public_pem(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def key_id(pub: Ed25519PublicKey) -> str:
    raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def checkpoint_message(stream: str, seq: int, head: str) -> bytes:
    return f"sinergi-chain|{stream}|{seq}|{head}".encode()


def sign_checkpoint(key: Ed25519PrivateKey, stream: str, seq: int, head: str) -> str:
    return base64.b64encode(key.sign(checkpoint_message(stream, seq, head))).decode()


def event_message(stream: str, payload: bytes) -> bytes:
    """What an audit event's signature covers: the stream's name and the exact published bytes
    (which hold the event's chain_seq and prev_hash)."""
    return b"sinergi-event|" + stream.encode() + b"|" + payload


def sign_event(key: Ed25519PrivateKey, kid: str, stream: str, payload: bytes) -> str:
    """The `Sinergi-Signature` header value: `ed25519:<key_id>:<base64 signature>`."""
    return f"ed25519:{kid}:{base64.b64encode(key.sign(event_message(stream, payload))).decode()}"


def load_public_key(path: str) -> Ed25519PublicKey:
    key = serialization.load_pem_public_key(Path(path).read_bytes())
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"{path} is not an Ed25519 public key")
    return key
