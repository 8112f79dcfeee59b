"""`corral lab ...` through the real dispatcher (corral.cli.main), on a lab of
stand-in processes: status (table and JSON), kill and start of a host and of one
process, partition and heal, exec, logs, list, down; errors as one line, exit 1.
Plus `up`'s timeout path: a lab whose replicas never answer fails with the log tail."""

from __future__ import annotations

import io
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from corral.cli.main import main
from corral.lab import Lab, LabError, LabSpec, down, leftovers
from tests.labfixture import standin_commands, unique_name

pytestmark = pytest.mark.lab


@pytest.fixture
def standin_lab(monkeypatch: pytest.MonkeyPatch) -> Iterator[Lab]:
    root = Path("/tmp") / f"cl-{unique_name()}"
    name = unique_name()
    monkeypatch.setenv("CORRAL_LAB_ROOT", str(root))
    monkeypatch.setenv("CORRAL_LAB_NAME", name)
    try:
        yield Lab.up(LabSpec(name=name, hosts=3, control_plane=2,
                             components=("controlplane", "agent")),
                     root, commands=standin_commands(("controlplane", "agent")), wait=False)
    finally:
        if leftovers(name, root):
            down(name, root)
        shutil.rmtree(root, ignore_errors=True)


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(["lab", *argv], stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def test_status_kill_start_partition_heal_exec_logs_and_down(standin_lab: Lab) -> None:
    lab = standin_lab
    code, out, _ = run("status", "-o", "json")
    assert code == 0
    st = json.loads(out)
    assert st["name"] == lab.name and [h["name"] for h in st["hosts"]] == ["h1", "h2", "h3"]
    assert all(p["running"] for h in st["hosts"] for p in h["processes"])
    assert [len(h["processes"]) for h in st["hosts"]] == [2, 2, 1]

    code, out, _ = run("status")
    assert code == 0 and "10.250.0.12" in out and "controlplane:" in out

    code, out, _ = run("kill", "h2")
    assert code == 0 and "power lost" in out
    h2 = json.loads(run("status", "-o", "json")[1])["hosts"][1]
    assert h2["power"] == "off" and h2["link"] == "cut"
    code, out, _ = run("start", "h2")
    assert code == 0 and "started controlplane, agent" in out

    code, out, _ = run("kill", "h3", "agent")
    assert code == 0 and "agent (pid" in out
    assert run("start", "h3")[1] == "h3: started agent\n"
    assert run("start", "h3")[1] == "h3: started nothing (all running)\n"

    code, out, _ = run("partition", "h3")
    assert code == 0 and "island br1" in out
    assert json.loads(run("status", "-o", "json")[1])["islands"] == {"br1": ["h3"]}
    assert run("heal")[0] == 0
    assert json.loads(run("status", "-o", "json")[1])["islands"] == {}

    code, _, _ = run("exec", "h1", "--", "sh", "-c", f"ip -4 addr show eth0 > {lab.plan.dir}/x")
    assert code == 0
    assert "10.250.0.11/24" in (lab.plan.dir / "x").read_text()
    assert run("exec", "h1", "--", "false")[0] == 1  # the command's exit code

    code, out, _ = run("logs", "h1", "controlplane")
    assert code == 0 and "corral lab starts" in out
    code, out, _ = run("logs", "h1", "--tail", "1")
    assert code == 0 and out.count("==> ") == 2

    code, out, _ = run("list")
    assert code == 0 and lab.name in out

    code, out, _ = run("down")
    assert code == 0 and "removed" in out
    assert leftovers(lab.name, lab.plan.dir.parent) == []


def test_errors_are_one_line_and_exit_1(standin_lab: Lab) -> None:
    for argv, text in [
        (("kill", "h9"), "no host 'h9'"),
        (("partition", "h1", "h2", "h3"), "leaves nobody on the other side"),
        (("kill", "h3", "controlplane"), "runs no controlplane"),
        (("status", "--name", "nosuch"), "no lab named 'nosuch'"),
        (("up", "--name", "Bad_Name"), "lab name 'Bad_Name'"),
        (("up", "--hosts", "2", "--control-plane", "3", "--name", "x"), "--control-plane"),
        (("up",), "already exists"),
        (("exec", "h1", "--", "no-such-program-here"), "command not found"),
    ]:
        code, out, err = run(*argv)
        assert code == 1, (argv, out, err)
        assert err.startswith("error: ") and text in err, (argv, err)


def test_up_times_out_with_the_failing_hosts_log_tail() -> None:
    # Stand-ins listen on the API socket but speak no gRPC: no leader ever shows.
    root = Path("/tmp") / f"cl-{unique_name()}"
    name = unique_name()
    try:
        with pytest.raises(LabError) as err:
            Lab.up(LabSpec(name=name, hosts=2, control_plane=2, components=("controlplane",)),
                   root, commands=standin_commands(("controlplane",)), timeout=3)
        text = str(err.value)
        assert "not ready in time" in text and "not answering" in text
        assert "standin h1 pid" in text and "standin h2 pid" in text
    finally:
        down(name, root)
        shutil.rmtree(root, ignore_errors=True)
