"""Services across hosts in the lab: real control plane, agents with Podman, the
endpoints controller and a netproxy on every host.

One lab for the whole story (it takes ~10 s to build): a Service with a web pod
on each of h1-h3 and a client pod on h1; traffic spread over all three; the
NodePort on every host's address; DNS names from inside a pod; hairpin; a
not-ready and a deleted pod out of the rules within 1 s; a SIGKILLed netproxy
restarted with identical rules; a control plane leader killed while the proxy
keeps following.
"""

from __future__ import annotations

import secrets
import time
from collections import Counter

import pytest

from tests.labfixture import running_lab
from tests.netproxy.labapp import (
    answers,
    client_pod,
    dnat_targets,
    host_run,
    namespace,
    pod_ips,
    pod_sh,
    ready_ips,
    saved_rules,
    wait_for,
    web_pod,
    web_service,
)

pytestmark = [
    pytest.mark.lab,
    pytest.mark.slow,
]
HOSTS = ("h1", "h2", "h3")


def test_services_across_hosts():
    ns = f"gnp-{secrets.token_hex(3)}"
    with running_lab(components=("controlplane", "agent", "netproxy")) as lab, \
            lab.client() as c:
        c.create(namespace(ns))
        for h in HOSTS:
            c.create(web_pod(f"web-{h}", ns, h))
        c.create(client_pod("client", ns, "h1"))
        vip = c.create(web_service("web", ns)).spec.cluster_ip
        node_port = c.get("Service", "web", ns).spec.ports[0].node_port
        webs = [f"web-{h}" for h in HOSTS]
        wait_for(lambda: len(ready_ips(c, "web", ns)[0]) == 3, 90, "3 ready endpoints")
        wait_for(lambda: c.get("Pod", "client", ns).status.phase == "Running", 60, "client")
        ips = pod_ips(c, ns, webs)
        wait_for(lambda: dnat_targets(lab, "h1") >= set(ips.values()), 10, "rules on h1")

        # A client on h1 reaches the pods on h1, h2 and h3 through the VIP.
        seen = Counter(answers(c, "client", ns, f"http://{vip}/", 60))
        assert set(seen) == set(webs), seen

        # The NodePort answers on every host's address, from a pod and from a host.
        for h in HOSTS:
            ip = lab.plan.host(h).ip
            assert answers(c, "client", ns, f"http://{ip}:{node_port}/", 1)[0] in webs
            got = host_run(lab, "h2", ["busybox", "wget", "-q", "-O", "-",
                                       f"http://{ip}:{node_port}/"]).strip()
            assert got in webs, (h, got)

        # DNS from inside a pod: the full name, and the short names via the search path.
        out = pod_sh(c, "client", ns, f"nslookup web.{ns}.svc.cluster.local")
        assert vip in out, out
        for name in ("web", f"web.{ns}"):
            assert answers(c, "client", ns, f"http://{name}/", 1)[0] in webs, name

        # Hairpin: a pod reaching its own Service lands on itself too.
        assert "web-h1" in answers(c, "web-h1", ns, f"http://{vip}/", 30)

        # A pod that turns not ready leaves the rules within 1 s of its Endpoints change.
        pod_sh(c, "web-h2", ns, "rm /www/index.html")
        wait_for(lambda: ips["web-h2"] in ready_ips(c, "web", ns)[1], 30, "web-h2 not ready",
                 every=0.02)
        t_ep = time.monotonic()
        wait_for(lambda: ips["web-h2"] not in dnat_targets(lab, "h1"), 5, "web-h2 out",
                 every=0.02)
        assert time.monotonic() - t_ep < 1.0
        assert "web-h2" not in answers(c, "client", ns, f"http://{vip}/", 30)

        # A deleted pod leaves the rules within 1 s of the delete.
        c.delete("Pod", "web-h3", ns)
        t_del = time.monotonic()
        wait_for(lambda: ips["web-h3"] not in dnat_targets(lab, "h1"), 5, "web-h3 out",
                 every=0.02)
        assert time.monotonic() - t_del < 1.0
        assert set(answers(c, "client", ns, f"http://{vip}/", 20)) == {"web-h1"}

        # netproxy SIGKILLed and restarted: it finds its rules and writes nothing.
        before = saved_rules(lab, "h1")
        log = lab.log_files("h1", "netproxy")[0]
        mark = len(log.read_text())
        lab.kill_process("h1", "netproxy")
        assert saved_rules(lab, "h1") == before
        lab.start("h1")
        wait_for(lambda: "sync full:" in log.read_text()[mark:], 30, "restarted proxy's sync")
        assert "sync full: unchanged" in log.read_text()[mark:]
        assert saved_rules(lab, "h1") == before

        # The control plane leader dies; the proxies keep following the Endpoints.
        leader = lab.leader()
        lab.kill_process(leader, "controlplane")
        # (Client.exec is one stream on one replica: use the surviving ones.)
        with lab.client([h for h in HOSTS if h != leader]) as alive:
            pod_sh(alive, "web-h2", ns, "hostname > /www/index.html")
            try:
                wait_for(lambda: ips["web-h2"] in dnat_targets(lab, "h1"), 30,
                         "web-h2 back in h1's rules after the leader kill")
            except AssertionError as err:
                conds = [(x.type, x.status) for x in
                         alive.get("Pod", "web-h2", ns).status.conditions]
                raise AssertionError(f"{err}; web-h2 conditions {conds}, endpoints (ready, "
                                     f"not ready) {ready_ips(alive, 'web', ns)}") from None
            assert set(answers(alive, "client", ns, f"http://{vip}/", 30)) == {"web-h1",
                                                                               "web-h2"}
        lab.start(leader)
