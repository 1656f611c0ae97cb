"""Regenerates gen/ from protos/: Python messages, gRPC stubs, .pyi stubs and
the descriptor set Envoy's grpc_json_transcoder reads (with the proto comments),
the OpenAPI document of the REST surface (gen/openapi.json), and the docs/ tables
that restate code (scripts/doc_tables.py). Offline and
deterministic: protoc from grpcio-tools, google.api protos from the pinned
googleapis-common-protos wheel.

    python scripts/generate.py          # rewrite gen/ and third_party/
    python scripts/generate.py --check  # exit 1 when gen/ or a docs/ table is stale
"""

from __future__ import annotations

import argparse
import filecmp
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import doc_tables
import grpc_tools
from google.api import annotations_pb2
from google.protobuf import descriptor_pb2

from edge import envoy, openapi

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
GEN = ROOT / "gen"
THIRD_PARTY = ROOT / "third_party" / "googleapis"
GOOGLE_API_PROTOS = ("annotations.proto", "http.proto", "httpbody.proto", "field_behavior.proto")
DESCRIPTOR_SET = "switchboard.pb"
OPENAPI_DOCUMENT = "openapi.json"


def copy_google_api_protos(dest: Path) -> None:
    """Copies the google.api protos buf and protoc import from the wheel."""
    source = Path(annotations_pb2.__file__).parent
    target = dest / "google" / "api"
    target.mkdir(parents=True, exist_ok=True)
    for name in GOOGLE_API_PROTOS:
        shutil.copyfile(source / name, target / name)


def generate(out: Path, third_party: Path) -> None:
    """Runs protoc over every proto under protos/ into out."""
    protos = sorted(str(p.relative_to(PROTOS)) for p in PROTOS.rglob("*.proto"))
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    includes = [f"-I{PROTOS}", f"-I{third_party}", f"-I{well_known}"]
    out.mkdir(parents=True, exist_ok=True)
    run = [sys.executable, "-m", "grpc_tools.protoc", *includes]
    subprocess.run(
        [*run, f"--python_out={out}", f"--pyi_out={out}", f"--grpc_python_out={out}", *protos],
        check=True,
    )
    subprocess.run(
        [*run, "--include_imports", "--include_source_info", f"--descriptor_set_out={out / DESCRIPTOR_SET}", *protos],
        check=True,
    )
    write_openapi(out / DESCRIPTOR_SET, out / OPENAPI_DOCUMENT)
    (out / envoy.ERROR_FACES_FILE.name).write_text(envoy.error_faces_lua())
    # Regular packages, so that setuptools finds the generated code.
    for module in out.rglob("*_pb2.py"):
        for directory in module.relative_to(out).parents[:-1]:
            (out / directory / "__init__.py").touch()


def write_openapi(descriptor_set: Path, target: Path) -> None:
    """The OpenAPI document of the descriptor set, as deterministic JSON."""
    files = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set.read_bytes())
    text = json.dumps(openapi.build(files), indent=2, sort_keys=True, ensure_ascii=False)
    target.write_text(text + "\n", encoding="utf-8")


def differences(left: Path, right: Path) -> list[str]:
    """Files that differ, exist only on one side, recursively."""
    cmp = filecmp.dircmp(left, right, ignore=["__pycache__"])
    found = [*cmp.left_only, *cmp.right_only, *cmp.diff_files, *cmp.funny_files]
    for name in cmp.common_dirs:
        found += [f"{name}/{f}" for f in differences(left / name, right / name)]
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="report whether gen/ is stale, change nothing")
    args = parser.parse_args()
    if not args.check:
        shutil.rmtree(GEN, ignore_errors=True)
        copy_google_api_protos(THIRD_PARTY)
        generate(GEN, THIRD_PARTY)
        doc_tables.stale_pages(write=True)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        fresh_third_party, fresh_gen = Path(tmp) / "third_party", Path(tmp) / "gen"
        copy_google_api_protos(fresh_third_party)
        generate(fresh_gen, fresh_third_party)
        stale = differences(fresh_gen, GEN) + differences(fresh_third_party, THIRD_PARTY)
    stale += [str(page.relative_to(ROOT)) for page in doc_tables.stale_pages(write=False)]
    for name in stale:
        print(f"stale: {name}", file=sys.stderr)
    if stale:
        print("gen/ or docs/ is stale: run python scripts/generate.py", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
