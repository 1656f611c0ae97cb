"""The released-API guard: `buf breaking` of our protos module against api/released.binpb passes
on the tree and fails, naming the field, on a copy of the tree with a released field broken."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e  # starts processes

ROOT = Path(__file__).resolve().parent.parent
BUF = ROOT / ".venv" / "bin" / "buf"
BILLING = Path("protos/switchboard/billing/v1/billing_service.proto")
ROUTER = Path("protos/switchboard/router/v1/router_service.proto")
# The released image holds one module, so the check names ours; the workspace root would
# compare two images (ours and third_party/googleapis) against one.
BREAKING = ("breaking", "protos", "--against", "api/released.binpb")


def buf_breaking(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BUF), *BREAKING], cwd=root, capture_output=True, text=True, timeout=120)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of what buf reads: the workspace config, both modules and the released image."""
    for name in ("protos", "third_party", "api"):
        shutil.copytree(ROOT / name, tmp_path / name)
    shutil.copyfile(ROOT / "buf.yaml", tmp_path / "buf.yaml")
    return tmp_path


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert text.count(old) == 1, old
    path.write_text(text.replace(old, new))


def test_our_protos_keep_the_released_api() -> None:
    result = buf_breaking(ROOT)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


@pytest.mark.parametrize(
    ("proto", "old", "new", "named"),
    [
        # renumbered
        (BILLING, "repeated UnpricedRequest unpriced = 8;", "repeated UnpricedRequest unpriced = 80;",
         r'Previously present field "8" with name "unpriced" on message "Usage" was deleted'),
        # type changed
        (BILLING, "double spent_nano_usd = 4;", "int64 spent_nano_usd = 4;",
         r'Field "4" with name "spent_nano_usd" on message "Account" changed type from "double" to "int64"'),
        # renamed
        (ROUTER, "string owned_by = 4 [", "string unused = 4 [",
         r'Field "4" on message "Model" changed name from "owned_by" to "unused"'),
        # a JSON name changed outside the one file where that was deliberate
        (BILLING, "double limit_nano_usd = 3;", 'double limit_nano_usd = 3 [json_name = "limit"];',
         r'Field "3" with name "limit_nano_usd" on message "Account" changed option "json_name"'),
        # a released RPC removed
        (ROUTER, "rpc ListProviders(", "rpc ListProvidersRenamed(",
         r'Previously present RPC "ListProviders" on service "RouterService" was deleted'),
    ],
)  # fmt: skip
def test_a_broken_released_field_fails_and_is_named(tree: Path, proto: Path, old: str, new: str, named: str) -> None:
    edit(tree / proto, old, new)
    result = buf_breaking(tree)
    assert result.returncode == 100, result.stderr
    assert re.search(named, result.stdout), result.stdout
