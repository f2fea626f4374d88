"""Intake: the Puskesos front and back office, SLRT referrals, home visits."""
