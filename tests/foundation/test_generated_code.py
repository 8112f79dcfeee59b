"""The committed generated code must be exactly what scripts/gen_proto.py makes now."""

from __future__ import annotations

import filecmp
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_generated_code_is_fresh(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_proto.py"), str(tmp_path)],
        check=True, capture_output=True,
    )
    fresh = tmp_path / "corral" / "v1"
    committed = ROOT / "corral" / "v1"
    generated = sorted(p.name for p in fresh.iterdir())
    assert generated, "gen_proto.py produced nothing"
    stale = [n for n in generated if not (committed / n).exists()
             or not filecmp.cmp(fresh / n, committed / n, shallow=False)]
    extra = sorted(p.name for p in committed.glob("*_pb2*") if not (fresh / p.name).exists())
    assert not stale and not extra, (
        f"generated code is stale (differs: {stale}, no longer generated: {extra}); "
        "run: .venv/bin/python scripts/gen_proto.py"
    )


def test_staleness_is_detected(tmp_path: Path) -> None:
    """The comparison above really fails when a proto changes (the test can fail)."""
    import shutil

    work = tmp_path / "repo"
    shutil.copytree(ROOT / "proto", work / "proto")
    shutil.copytree(ROOT / "scripts", work / "scripts")
    proto = work / "proto" / "corral" / "v1" / "meta.proto"
    proto.write_text(proto.read_text().replace("string generate_name = 2;",
                                               "string generate_name = 2;\n  string extra = 99;"))
    out = tmp_path / "out"
    out.mkdir()
    subprocess.run([sys.executable, str(work / "scripts" / "gen_proto.py"), str(out)],
                   check=True, capture_output=True)
    assert not filecmp.cmp(out / "corral" / "v1" / "meta_pb2.py",
                           ROOT / "corral" / "v1" / "meta_pb2.py", shallow=False)
