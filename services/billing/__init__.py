"""The Billing service: request ledger, cost reconciliation, usage, credits and limits.

Decisions worth knowing:
- A ledger entry is `pending` (waiting for the provider's cost), `settled`
  (real cost) or `unpriced` (no provider request id, or no valid cost within
  `unpriced_after_seconds`; charged its estimate, never zero: a zero estimate
  is replaced by the task's default).
- Usage: `settledNanoUsd` sums real costs; `pendingNanoUsd` sums the estimates
  of every request not settled (pending and unpriced); unpriced requests are
  also listed (at most 1,000 per report).
- Limits: an account may spend included credits + limit per UTC month; a
  limit of 0 means no limit. ReserveSpend grants when settled + unsettled
  estimates + live reservations + this estimate fit, atomically (SQLite's
  single writer; a row lock on PostgreSQL), so concurrent requests
  overshoot only by what real costs exceed reserved estimates. The
  reservations that arrive while one batch is written are decided together
  in the next, one transaction (reservations.py, docs/billing.md); most are
  decided in memory from a slice of the budget the process leases (book.py,
  leases.py), counted whole against the budget so replicas never overspend.
- Reservations end when the request is recorded (its entry carries the
  estimate) or released; one neither recorded nor released (the Router died)
  stops counting after `reservation_ttl_seconds` (default 15 minutes) and is
  purged by the next reconciliation pass.
"""
