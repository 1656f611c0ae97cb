"""Request ids (services/router/request_ids.py): UUIDv7, unique across the batches of random bytes
they are drawn from, and never shared with a forked child."""

from __future__ import annotations

import subprocess
import sys
import uuid

from services.router.request_ids import RANDOM_BATCH, request_id

# Forks in a fresh interpreter (never in a test process, whose gRPC threads make fork unsafe); prints
# the child's first id, then the parent's next one, drawn from the same place of a batch without the reset.
FORKING = """
import os
from services.router.request_ids import request_id
request_id()
read, write = os.pipe()
child = os.fork()
if child == 0:
    os.write(write, request_id().encode())
    os._exit(0)
os.waitpid(child, 0)
print(os.read(read, 64).decode(), request_id())
"""


def test_ids_are_uuid7_and_unique_across_batches() -> None:
    ids = [request_id() for _ in range(3 * RANDOM_BATCH + 1)]
    assert len(set(ids)) == len(ids)
    assert {uuid.UUID(i).version for i in ids} == {7} and all(str(uuid.UUID(i)) == i for i in ids)


def test_a_forked_child_draws_random_bytes_of_its_own() -> None:
    done = subprocess.run([sys.executable, "-c", FORKING], capture_output=True, text=True, timeout=60, check=True)
    theirs, mine = done.stdout.split()
    assert theirs[-12:] != mine[-12:]  # an id's last 48 bits are random
