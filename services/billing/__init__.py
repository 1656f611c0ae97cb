"""The Billing service: request ledger, cost reconciliation, usage, credits and limits."""
