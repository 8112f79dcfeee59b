"""The real `corral-netproxy` process in a network namespace of the test's own,
following a real 3-replica control plane (tests/cluster.py) through its unix
sockets (a process in another network namespace still reaches a socket path).

Services here have no selector, so their Endpoints are written by the test as
an endpoints controller would (and no controller rewrites them).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from dnslib import DNSRecord

from corral import kinds
from netproxy.iptables import Iptables
from netproxy.rules import is_own_chain
from tests.netproxy.netns import Node, sh
from tests.netproxy.objects import endpoints, port, svc

pytestmark = [pytest.mark.integration]
PODS = ["10.244.1.10", "10.244.1.11", "10.244.1.12"]
SCRIPT = Path(sys.executable).parent / "corral-netproxy"


class ProxyProcess:
    def __init__(self, node: Node, servers: list[str], root: Path) -> None:
        self.node = node
        self.root = root
        self.config = root / "netproxy.yaml"
        self.log = root / "netproxy.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.config.write_text(yaml.safe_dump({
            "node_name": "h1", "node_ip": node.host_ip, "servers": servers,
            "state_dir": str(root / "state"), "min_sync_period": 0.05,
            "metrics_address": "127.0.0.1:10249",
            # Names outside the cluster go nowhere: no traffic leaves the test.
            "dns": {"upstream": ["127.0.0.1:1"]},
        }))

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", self.node.host, str(SCRIPT), "--config",
                 str(self.config)], stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def log_text(self) -> str:
        return self.log.read_text() if self.log.exists() else ""

    def wait_log(self, text: str, after: int = 0, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log_text()[after:]:
                return
            assert self.proc is not None and self.proc.poll() is None, self.log_text()[-3000:]
            time.sleep(0.05)
        raise AssertionError(f"{text!r} not logged within {timeout} s:\n{self.log_text()[-3000:]}")


def own(node: Node) -> dict:
    saved = Iptables(prefix=["ip", "netns", "exec", node.host]).save()
    return {k: v for k, v in saved.items() if is_own_chain(*k)}


def wait_for(cond, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"{what}: not within {timeout} s")


def vip_rules(node: Node, vip: str) -> list[str]:
    return [r for r in own(node).get(("nat", "CORRAL-SERVICES"), ()) if f"-d {vip}/32" in r]


@pytest.mark.slow
def test_process_follows_the_control_plane_and_survives_kills(make_cluster, tmp_path):
    cluster = make_cluster(3)
    client = cluster.client()
    with Node() as node:
        for i, ip in enumerate(PODS):
            node.start_http(node.add_pod(ip), f"p{i + 1}")
        pod = node.add_pod("10.244.1.20")
        proxy = ProxyProcess(node, [f"unix:{r.socket}" for r in cluster.replicas], tmp_path)
        try:
            created = client.create(svc("web", "", selector={}))
            vip = created.spec.cluster_ip
            client.create(endpoints("web", ready=PODS[:2]))
            proxy.start()
            proxy.wait_log("sync full: applied")
            assert {node.get(pod, f"http://{vip}/")[1] for _ in range(30)} == {"p1", "p2"}

            # Cluster DNS answers through the DNS VIP from inside a pod, UDP and TCP.
            out = sh("ip", "netns", "exec", pod, "busybox", "nslookup",
                     "web.default.svc.cluster.local", "10.96.0.10", check=False).stdout
            assert vip in out, out
            q = DNSRecord.question("web.default.svc.cluster.local").pack()
            raw = sh("ip", "netns", "exec", pod, sys.executable, "-c",
                     "import socket,sys;s=socket.socket(2,2);s.settimeout(3);"
                     f"s.sendto(bytes.fromhex('{q.hex()}'),('10.96.0.10',53));"
                     "print(s.recv(4096).hex())").stdout.strip()
            assert [str(r.rdata) for r in DNSRecord.parse(bytes.fromhex(raw)).rr] == [vip]
            raw = sh("ip", "netns", "exec", pod, sys.executable, "-c",
                     "import socket,struct;s=socket.create_connection(('10.96.0.10',53),3);"
                     f"q=bytes.fromhex('{q.hex()}');s.sendall(struct.pack('!H',len(q))+q);"
                     "n=struct.unpack('!H',s.recv(2))[0];d=b''\n"
                     "while len(d)<n: d+=s.recv(n-len(d))\n"
                     "print(d.hex())").stdout.strip()
            assert [str(r.rdata) for r in DNSRecord.parse(bytes.fromhex(raw)).rr] == [vip]

            # An endpoints change reaches the rules.
            ep = client.get("Endpoints", "web", "default")
            client.update(endpoints("web", ready=PODS))
            wait_for(lambda: {node.get(pod, f"http://{vip}/")[1] for _ in range(30)}
                     == {"p1", "p2", "p3"}, 15, "third endpoint in rotation")
            assert ep is not None

            # SIGKILL and restart: the rules stay identical, the restart writes nothing.
            before = node.save()
            proxy.kill()
            assert node.save() == before  # nothing removed them
            mark = len(proxy.log_text())
            proxy.start()
            proxy.wait_log("sync full: unchanged", after=mark)
            assert "sync full: applied" not in proxy.log_text()[mark:]
            assert node.save() == before

            # The control plane leader dies; the proxy's watch moves on and follows.
            cluster.leader().kill()
            client.update(endpoints("web", ready=PODS[2:]))
            wait_for(lambda: {node.get(pod, f"http://{vip}/")[1] for _ in range(10)}
                     == {"p3"}, 30, "endpoints change after a leader kill")
            client.delete("Service", "web", "default")
            wait_for(lambda: not vip_rules(node, vip), 15, "rules of a deleted Service gone")

            metrics = sh("ip", "netns", "exec", node.host, sys.executable, "-c",
                         "import urllib.request;print(urllib.request.urlopen("
                         "'http://127.0.0.1:10249/metrics',timeout=5).read().decode())").stdout
            assert "corral_netproxy_sync_duration_seconds_bucket" in metrics
            assert 'corral_netproxy_syncs_total{kind="partial",result="applied"}' in metrics
        finally:
            proxy.kill()
            print(proxy.log_text()[-4000:], file=sys.stderr)


def test_bad_configuration_is_one_line_naming_the_key(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(yaml.safe_dump({"node_ip": "10.250.0.11", "servers": ["127.0.0.1:1"],
                                   "dns": {"port": 0}}))
    proc = subprocess.run([str(SCRIPT), "--config", str(cfg)], capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "corral-netproxy: bad configuration: dns.port: must be between 1 and 65535, got 0"]


def test_kind_names_used_by_the_proxy_exist():
    for kind in ("Service", "Endpoints", "Pod"):
        assert kinds.resolve(kind).kind == kind
    assert port("x", 1).port == 1


def test_cleanup_flag_removes_every_rule_of_ours(tmp_path):
    from netproxy.proxier import Proxier
    from netproxy.rules import NodeFacts
    from netproxy.tracker import ChangeTracker

    with Node() as node:
        tracker = ChangeTracker()
        tracker.service_updated(svc("web", "10.96.0.20"))
        tracker.endpoints_updated(endpoints("web", ready=PODS))
        ipt = Iptables(prefix=["ip", "netns", "exec", node.host])
        Proxier(tracker, ipt, NodeFacts(cluster_cidr="10.244.0.0/16")).sync(full=True)
        assert own(node)
        cfg = tmp_path / "netproxy.yaml"
        cfg.write_text(yaml.safe_dump({"node_ip": node.host_ip, "servers": ["127.0.0.1:1"]}))
        proc = subprocess.run(["ip", "netns", "exec", node.host, str(SCRIPT), "--config",
                               str(cfg), "--cleanup"], capture_output=True, text=True,
                              timeout=60)
        assert proc.returncode == 0, proc.stderr
        assert "cleanup: removed" in proc.stderr
        assert own(node) == {}
        assert "corral" not in node.save().lower()
