"""Indonesian personal names, normalised for tolerant search (no I/O).

The same person is written `Mochammad Soeharto`, `Muhamad Suharto` or `Moh. Suharto`
depending on the office and the decade: the old (van Ophuijsen / Soewandi) spellings `oe`,
`dj`, `tj`, `nj`, `sj`, `ch`, `j` for `y`, doubled letters, and the many abbreviations of
Muhammad. `normalise` maps all of them to one key; PostgreSQL then compares keys by trigrams
(pg_trgm where installed, otherwise the registry's own trigram table, see store.py).
"""
from __future__ import annotations

import functools
import re
import unicodedata

# abbreviations and variants of common name parts -> one form (applied per word, before spelling)
_WORDS = {
    **dict.fromkeys(("m", "md", "mhd", "moch", "mochamad", "mochammad", "moh", "mohamad", "mohammad", "mohamed",
                     "muh", "muhamad", "muhammad", "muhamat", "muchammad", "muchamad", "mochamat", "mukhammad"),
                    "muhammad"),
    **dict.fromkeys(("abd", "abdoel", "abdul"), "abdul"),
    **dict.fromkeys(("st", "sitti", "siti"), "siti"),
}
# old spelling -> current spelling, in this order (dj before j->y collapse, oe before double letters)
_SPELLING = [("oe", "u"), ("dj", "j"), ("tj", "c"), ("ch", "kh"), ("nj", "ny"), ("sj", "sy"), ("y", "j")]
_DOUBLE = re.compile(r"(.)\1+")
_APOSTROPHE = re.compile(r"['`]")
_NOT_LETTER = re.compile(r"[^a-z ]+")


# bulk ingest normalises every reported name, and a regency's names repeat a great deal
@functools.lru_cache(maxsize=1 << 16)
def normalise(name: str) -> str:
    """A search key: lower case, no accents or punctuation, one spelling, single letters."""
    text = unicodedata.normalize("NFKD", name or "").encode("ascii", "ignore").decode().lower()
    words = _NOT_LETTER.sub(" ", _APOSTROPHE.sub("", text)).split()  # Ni'mah -> nimah
    out = []
    for w in words:
        w = _WORDS.get(w, w)
        for old, new in _SPELLING:
            w = w.replace(old, new)
        out.append(_DOUBLE.sub(r"\1", w))
    return " ".join(out)


def trigrams(key: str) -> set[str]:
    """The trigrams pg_trgm would take from a normalised key (each word padded '  w ')."""
    grams: set[str] = set()
    for w in key.split():
        padded = f"  {w} "
        grams.update(padded[i:i + 3] for i in range(len(padded) - 2))
    return grams


def similarity(a: str, b: str) -> float:
    """pg_trgm's similarity on two keys: shared trigrams over all trigrams."""
    ta, tb = trigrams(a), trigrams(b)
    if not ta or not tb:
        return 0.0
    shared = len(ta & tb)
    return shared / (len(ta) + len(tb) - shared)
