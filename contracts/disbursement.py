"""Events the disbursement service emits on the DISBURSEMENT stream (`disbursement.>`), the
stream auditors read. No raw NIK or name here: a keyed pseudonym identifies a person."""
from __future__ import annotations
