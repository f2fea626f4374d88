"""Disbursement-only settings (env prefix `SINERGI_DISBURSEMENT_`), and the regency's keys.

The pseudonym key and the Ed25519 signing key stay with the regency: neither is ever
published. Development falls back to fixed keys; production refuses them.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
from functools import cached_property
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic_settings import BaseSettings, SettingsConfigDict

DEV_PSEUDONYM_KEY = "dev-only-pseudonym-key-change-me"


class DisbursementSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SINERGI_DISBURSEMENT_", env_file=".env", extra="ignore")

    pseudonym_key: str = DEV_PSEUDONYM_KEY  # HMAC key for person pseudonyms on the audit stream
    signing_key_file: str | None = None     # PEM Ed25519 private key for chain checkpoints
    checkpoint_every: int = 500             # sign the chain head at least every N events...
    checkpoint_seconds: float = 30.0        # ...and after this long if anything happened
    chunk_size: int = 5000                  # people per cycle transaction
    relay_batch: int = 10000                # outbox rows per pipelined relay round
    resume_cycles: bool = True              # finish cycles left running by a crash...
    resume_seconds: float = 30.0            # ...looking this often (on the lease holder: kit.lease)

    def check_production(self) -> None:
        if self.pseudonym_key == DEV_PSEUDONYM_KEY or not self.signing_key_file:
            raise RuntimeError("production needs SINERGI_DISBURSEMENT_PSEUDONYM_KEY and "
                               "SINERGI_DISBURSEMENT_SIGNING_KEY_FILE")

    def pseudonym(self, nik: str) -> str:
        return pseudonym(self.pseudonym_key.encode(), nik)

    @cached_property
    def signing_key(self) -> Ed25519PrivateKey:
        if self.signing_key_file:
            key = serialization.load_pem_private_key(Path(self.signing_key_file).read_bytes(), password=None)
            if not isinstance(key, Ed25519PrivateKey):
                raise RuntimeError(f"{self.signing_key_file} is not an Ed25519 private key")
            return key
        # development only: a key derived from the pseudonym key, so restarts sign alike
        seed = hashlib.sha256(b"sinergi-dev-signing|" + self.pseudonym_key.encode()).digest()
        return Ed25519PrivateKey.from_private_bytes(seed)


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


def load_public_key(path: str) -> Ed25519PublicKey:
    key = serialization.load_pem_public_key(Path(path).read_bytes())
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"{path} is not an Ed25519 public key")
    return key
