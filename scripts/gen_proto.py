"""Generate the Python stubs and Envoy's descriptor set from proto/.

The one codegen command of the project (``make proto``). Outputs:

* ``sdk/src/mailroom/v1/*_pb2.py``, ``*_pb2.pyi``, ``*_pb2_grpc.py``: the stubs the server,
  the workers and the SDK import.
* ``envoy/mailroom.binpb``: the descriptor set the gRPC-JSON transcoder loads. It includes
  ``google/rpc/error_details.proto`` so that Envoy can render BadRequest details as JSON.

``--check`` regenerates into a temporary directory and fails if the committed files differ.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
PROTOS = ["mailroom/v1/mail.proto"]
STUB_DIR = Path("sdk/src/mailroom/v1")
DESCRIPTOR = Path("envoy/mailroom.binpb")


def _include_dirs() -> list[str]:
    """Return the include paths: ours, grpc_tools' well-known types, googleapis' protos."""
    grpc_tools_include = resources.files("grpc_tools") / "_proto"
    import google.api  # googleapis-common-protos ships the .proto files beside the modules

    googleapis = Path(google.api.__path__[0]).parent.parent
    return [str(PROTO_DIR), str(grpc_tools_include), str(googleapis)]


def generate(out_root: Path) -> None:
    """Write the stubs and the descriptor set under ``out_root``."""
    stub_out = out_root / STUB_DIR.parent.parent  # protoc adds mailroom/v1/ itself
    stub_out.mkdir(parents=True, exist_ok=True)
    (out_root / DESCRIPTOR).parent.mkdir(parents=True, exist_ok=True)
    includes = [f"-I{d}" for d in _include_dirs()]
    args = [
        "protoc",
        *includes,
        f"--python_out={stub_out}",
        f"--pyi_out={stub_out}",
        f"--grpc_python_out={stub_out}",
        *PROTOS,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed generating the stubs")
    args = [
        "protoc",
        *includes,
        "--include_imports",
        "--include_source_info",
        f"--descriptor_set_out={out_root / DESCRIPTOR}",
        *PROTOS,
        "google/rpc/error_details.proto",
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed generating the descriptor set")
    (out_root / STUB_DIR / "__init__.py").touch()


def _outputs(root: Path) -> list[Path]:
    files = sorted(p.relative_to(root) for p in (root / STUB_DIR).glob("*") if p.is_file())
    return [*files, DESCRIPTOR]


def main() -> int:
    """Generate in place, or with ``--check`` compare against a fresh generation."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if generated files are stale")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp)
        generate(fresh)
        if args.check:
            stale = [
                str(rel)
                for rel in _outputs(fresh)
                if not (ROOT / rel).exists() or not filecmp.cmp(fresh / rel, ROOT / rel, False)
            ]
            if stale:
                print("stale generated files (run `make proto`):", *stale, file=sys.stderr)
                return 1
            return 0
        for rel in _outputs(fresh):
            (ROOT / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(fresh / rel, ROOT / rel)
    return 0


if __name__ == "__main__":
    sys.exit(main())
