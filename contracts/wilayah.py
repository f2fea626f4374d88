"""Region codes (kode wilayah Kemendagri): province, regency, district, village.

Loaded once from the bundled `data/wilayah.csv.gz` (see data/README.md for attribution).
Codes are kept dotted as in the source (`33.17.01.2001`); the ten-digit form agencies send
(`3317012001`) is converted by :func:`dotted`.
"""
from __future__ import annotations

import csv
import gzip
import io
from functools import lru_cache
from importlib import resources

LEVEL_LENGTHS = {1: 2, 2: 4, 3: 6, 4: 10}  # digits per level: provinsi, kabupaten, kecamatan, desa


@lru_cache(maxsize=1)
def regions() -> dict[str, str]:
    """All region codes (digits only) mapped to their names."""
    raw = resources.files("contracts").joinpath("data/wilayah.csv.gz").read_bytes()
    rows = csv.DictReader(io.StringIO(gzip.decompress(raw).decode("utf-8")))
    return {row["kode"].replace(".", ""): row["nama"] for row in rows}


def digits(code: str) -> str:
    return code.replace(".", "").strip()


def dotted(code: str) -> str:
    d = digits(code)
    parts = [d[0:2], d[2:4], d[4:6], d[6:10]]
    return ".".join(p for p in parts if p)


def name_of(code: str) -> str | None:
    return regions().get(digits(code))


def exists(code: str) -> bool:
    return digits(code) in regions()


def is_village(code: str) -> bool:
    d = digits(code)
    return len(d) == 10 and d.isdigit() and d in regions()


def kecamatan_of(village_code: str) -> str:
    return digits(village_code)[:6]


def kabupaten_of(code: str) -> str:
    return digits(code)[:4]


def villages_in(prefix: str) -> list[str]:
    """Every village code under a region prefix (e.g. '3317' for Kabupaten Rembang)."""
    return list(_villages_in(digits(prefix)))


@lru_cache(maxsize=256)
def _villages_in(prefix: str) -> tuple[str, ...]:
    # a scan of the whole list (~84,000 regions) each time cost 14 ms per call
    return tuple(sorted(c for c in regions() if len(c) == 10 and c.startswith(prefix)))
