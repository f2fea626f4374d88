"""Sinergi contracts: the event models, value types and subject names every service shares.

Nothing here does I/O. Agencies that do not write Python read the exported JSON Schema and
AsyncAPI documents (`sinergi contracts export DIR`) instead.
"""
