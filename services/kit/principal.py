"""Who a staff member is: role and area scope. Pure (no web framework), so domain modules can
decide by role and area without importing HTTP code; `kit.auth` issues and checks the tokens."""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from contracts import wilayah


class Role(StrEnum):
    village_office = "village_office"      # Puskesos front/back office (desa)
    kecamatan = "kecamatan"                # SLRT supervisor
    kabupaten = "kabupaten"                # SLRT manager
    companion = "companion"                # pendamping
    coordinator = "coordinator"            # koordinator pendamping
    verifier = "verifier"                  # Dinas Sosial verivali
    program_manager = "program_manager"    # runs payment cycles, sets budgets
    auditor = "auditor"                    # read-only


@dataclass(frozen=True)
class Principal:
    user: str
    role: Role
    area: str  # region code digits; "" means the whole regency deployment
    programs: tuple[str, ...] = field(default_factory=tuple)

    def covers(self, region_code: str) -> bool:
        """True if `region_code` lies inside this user's area."""
        return wilayah.digits(region_code).startswith(self.area)
