"""Scratch folders for the e2e tests, outside pytest's own.

`sinergi up`'s embedded PostgreSQL, when the tests run as root, runs as the system user
`pgserver`, which must traverse every folder above its data (pgserver opens them up at start).
pytest keeps its temporary folders under /tmp/pytest-of-<user> and every new pytest session sets
that folder back to 0700: a session started beside this one (another engineer's, CI) locked
PostgreSQL out mid-run ("pg_ctl: could not access directory ...: Permission denied"). So these
tests get folders of their own under the system temporary directory, removed afterwards.
"""
from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


def _scratch() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="sinergi-e2e-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def tmp_path() -> Iterator[Path]:
    """pytest's `tmp_path`, moved out of /tmp/pytest-of-<user> (see above)."""
    yield from _scratch()


@pytest.fixture(scope="module")
def module_dir() -> Iterator[Path]:
    """One scratch folder for a module's shared `sinergi up`."""
    yield from _scratch()
