"""corral-controlplane sets gRPC's I/O experiments before gRPC is imported, and an
operator's own GRPC_EXPERIMENTS is left alone."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import controlplane.main

PROBE = ("import os, sys; import controlplane.main; "
         "print(os.environ.get('GRPC_EXPERIMENTS', '')); "
         "print('grpc' in sys.modules)")


def _run(env: dict[str, str]) -> list[str]:
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True,
                         text=True, timeout=60, check=True, cwd=os.getcwd())
    return out.stdout.split()


def test_the_replica_turns_off_the_eventengine_listener_before_grpc_loads() -> None:
    env = {k: v for k, v in os.environ.items() if k != "GRPC_EXPERIMENTS"}
    env["PYTHONPATH"] = os.getcwd()
    value, grpc_loaded = _run(env)
    assert value == "-event_engine_listener,-event_engine_for_all_other_endpoints"
    assert grpc_loaded == "True"  # main imports gRPC, after the setting


def test_an_operators_grpc_experiments_win() -> None:
    env = {**os.environ, "GRPC_EXPERIMENTS": "event_engine_listener",
           "PYTHONPATH": os.getcwd()}
    assert _run(env)[0] == "event_engine_listener"


def test_the_setting_comes_before_every_import_that_could_load_grpc() -> None:
    # After `import grpc` the variable is read already and would do nothing.
    tree = ast.parse(Path(controlplane.main.__file__).read_text())
    seen_setting = False
    for node in tree.body:
        if isinstance(node, ast.Expr) and "GRPC_EXPERIMENTS" in ast.unparse(node):
            seen_setting = True
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names]
            module = getattr(node, "module", None) or ""
            if module == "__future__" or names == ["os"]:
                continue
            assert seen_setting, f"{ast.unparse(node)} comes before GRPC_EXPERIMENTS is set"
    assert seen_setting
