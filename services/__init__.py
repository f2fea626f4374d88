"""Sinergi services: intake, registry, disbursement, reporting, and the kit they share."""
