"""Regenerate corral/v1/*_pb2*.py(i) from proto/corral/v1/*.proto.

Usage: python scripts/gen_proto.py [OUT_DIR]

OUT_DIR defaults to the repository root (so the files land in corral/v1/).
tests/test_generated_code.py runs this into a temporary folder and fails when
the committed files differ: edit the .proto, run this, commit both.
The versions of grpcio-tools and mypy-protobuf are pinned in pyproject.toml's
dev extra, because the generated text embeds them.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def generate(out_dir: Path) -> None:
    from grpc_tools import protoc  # dev dependency

    protos = sorted(str(p.relative_to(ROOT / "proto")) for p in (ROOT / "proto").rglob("*.proto"))
    # protoc-gen-mypy and protoc-gen-mypy_grpc are console scripts installed
    # beside this interpreter.
    bindir = str(Path(sys.executable).parent)
    os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")
    include = str(Path(protoc.__file__).parent / "_proto")
    out = str(out_dir)
    args = [
        "protoc",
        f"-I{ROOT / 'proto'}",
        f"-I{include}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_out={out}",
        f"--mypy_grpc_out={out}",
        *protos,
    ]
    cwd = os.getcwd()
    os.chdir(ROOT / "proto")
    try:
        code = protoc.main(args)
    finally:
        os.chdir(cwd)
    if code != 0:
        raise SystemExit(f"protoc failed with exit code {code}")


if __name__ == "__main__":
    target = Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else ROOT
    generate(target)
    print(f"generated into {target / 'corral' / 'v1'}")
