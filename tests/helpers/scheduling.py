"""How the whole suite's parallel workers (pytest-xdist) share the work: whole modules, so that a
module's stacks start once, except modules listed in SPLIT, whose many independent tests are cut into
work units of their own (each unit starts the module's stack once on its worker)."""

from __future__ import annotations

import zlib

from xdist.scheduler import LoadScopeScheduling

# module -> work units: tests/test_fuzz.py alone is a fifth of the suite's test time (its ~400 tests share
# one demo stack of the module's own), so on one worker it would end the run by itself.
SPLIT = {"tests/test_fuzz.py": 3}


class ModulesAndSplits(LoadScopeScheduling):
    """loadscope, with the modules in SPLIT cut into units by a hash of each test's id."""

    def _split_scope(self, nodeid: str) -> str:
        scope = super()._split_scope(nodeid)
        units = SPLIT.get(scope)
        return f"{scope}::unit-{zlib.crc32(nodeid.encode()) % units}" if units else scope
