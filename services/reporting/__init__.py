"""Reporting: read models built from the event streams, never from other services' tables."""
