"""Disbursement: budgets, payment cycles, settlement, KUBE funds, the double-entry ledger."""
