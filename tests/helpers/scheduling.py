"""How the whole suite's parallel workers (pytest-xdist) share the work: whole modules, so that a
module's stacks start once, except modules listed in SPLIT, whose many independent tests are cut into
work units of their own (each unit starts the module's stack once on its worker), and modules listed in
GROUPS (tests/helpers/stacks.py), which share a stack and so run on one worker, one after the other."""

from __future__ import annotations

import re
import zlib

from xdist.scheduler import LoadScopeScheduling

from helpers.stacks import GROUPS

# module -> work units: tests/test_fuzz.py's ~400 tests take about a minute in one process (they share one
# demo stack of the module's own, started once per unit); each of two units is shorter than the longest modules.
SPLIT = {"tests/test_fuzz.py": 2}
# A test's caller, the last part of its id: the tests of one operation for either caller share a unit, so
# that the second sends the first's cases again instead of drawing them anew (tests/test_fuzz.py).
CALLER = re.compile(r"-(admin|user)\]$")


class ModulesAndSplits(LoadScopeScheduling):
    """loadscope, with the modules in SPLIT cut into units by a hash of each test's id without its caller,
    and the modules of a group in GROUPS joined into one unit."""

    def _split_scope(self, nodeid: str) -> str:
        scope = super()._split_scope(nodeid)
        if scope in GROUPS:
            return f"group-{GROUPS[scope]}"
        units = SPLIT.get(scope)
        return f"{scope}::unit-{zlib.crc32(CALLER.sub(']', nodeid).encode()) % units}" if units else scope
