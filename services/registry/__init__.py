"""Registry: the unified beneficiary database (Basis Data Terpadu)."""
