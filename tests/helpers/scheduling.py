"""How the whole suite's parallel workers (pytest-xdist) share the work: whole modules, so that a
module's stacks start once, and the modules of a group in GROUPS (tests/helpers/stacks.py), which share a
stack and so run on one worker, one after the other.

tests/test_fuzz.py, the longest module, stays whole too: cut into two units it started its demo stack and
built Schemathesis' strategies on two workers. Whole, it does that once; the suite's time did not measurably
change either way (2026-12-07: runs side by side differed by less than the machine's spread of ~25 s)."""

from __future__ import annotations

from xdist.scheduler import LoadScopeScheduling

from helpers.stacks import GROUPS


class ModulesAndGroups(LoadScopeScheduling):
    """loadscope, with the modules of a group in GROUPS joined into one unit."""

    def _split_scope(self, nodeid: str) -> str:
        scope = super()._split_scope(nodeid)
        return f"group-{GROUPS[scope]}" if scope in GROUPS else scope
