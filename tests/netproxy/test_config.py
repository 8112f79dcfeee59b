"""The netproxy's configuration: defaults, overrides, and one clear error per bad key."""

from __future__ import annotations

import pytest
import yaml

from corral.lab.configs import netproxy_config
from netproxy.config import ConfigError, load, parse

BASE = {"node_name": "h1", "node_ip": "10.250.0.11", "servers": ["10.250.0.11:6443"]}


def test_defaults():
    cfg = parse(BASE)
    assert cfg.cluster_cidr == "10.244.0.0/16" and cfg.service_cidr == "10.96.0.0/12"
    assert cfg.cluster_dns == "10.96.0.10" and cfg.cluster_domain == "cluster.local"
    assert cfg.dns_listen == "10.250.0.11" and cfg.dns.port == 53
    assert cfg.metrics_address == "127.0.0.1:10249"
    assert cfg.min_sync_period == 0.1 and cfg.full_sync_period == 60.0
    assert cfg.iptables.restore == "iptables-restore"


def test_every_key():
    cfg = parse({**BASE, "state_dir": "/var/lib/x", "cluster_cidr": "10.32.0.0/16",
                 "service_cidr": "10.100.0.0/16", "cluster_dns": "10.100.0.10",
                 "cluster_domain": "corp.local.", "log_level": "DEBUG", "min_sync_period": 0,
                 "full_sync_period": 300, "masquerade_bit": 5, "metrics_address": "",
                 "bridge_nf_call_iptables": False,
                 "iptables": {"restore": "/sbin/iptables-restore", "timeout": 60},
                 "dns": {"enabled": True, "listen": "127.0.0.1", "port": 5353,
                         "upstream": ["192.0.2.1", "192.0.2.2:5353"], "ttl": 30,
                         "pods": "insecure", "forward_timeout": 1.5,
                         "resolv_conf": "/tmp/resolv.conf"}})
    assert cfg.cluster_domain == "corp.local" and cfg.log_level == "debug"
    assert cfg.metrics_address == "" and cfg.masquerade_bit == 5
    assert cfg.dns.upstream == ("192.0.2.1:53", "192.0.2.2:5353")
    assert cfg.dns_listen == "127.0.0.1" and cfg.dns.pods == "insecure"
    assert cfg.iptables.timeout == 60.0


@pytest.mark.parametrize("patch,message", [
    ({"node_ip": None}, "node_ip: required"),
    ({"node_ip": "10.250.0"}, "node_ip: must be an IPv4 address, got '10.250.0'"),
    ({"servers": []}, "servers: required"),
    ({"servers": ["ok:1", 5]}, "servers[1]: must be a string"),
    ({"bogus": 1}, "bogus: unknown key"),
    ({"cluster_cidr": "10.244.0.1/16"}, "cluster_cidr: must be an IPv4 CIDR"),
    ({"service_cidr": "10.240.0.0/12"}, "service_cidr: 10.240.0.0/12 overlaps cluster_cidr"),
    ({"cluster_dns": "10.0.0.10"}, "cluster_dns: 10.0.0.10 is outside service_cidr"),
    ({"node_ip": "10.244.3.3"}, "node_ip: 10.244.3.3 is inside cluster_cidr"),
    ({"min_sync_period": -1}, "min_sync_period: must be a number of seconds >= 0"),
    ({"full_sync_period": 0}, "full_sync_period: must be > 0"),
    ({"masquerade_bit": 32}, "masquerade_bit: must be between 0 and 31, got 32"),
    ({"metrics_address": "localhost:80"}, "metrics_address: must name an IPv4 address"),
    ({"metrics_address": "127.0.0.1"}, "metrics_address: must be HOST:PORT"),
    ({"log_level": "loud"}, "log_level: must be one of debug, info, warning, error"),
    ({"dns": {"port": 0}}, "dns.port: must be between 1 and 65535, got 0"),
    ({"dns": {"pods": "maybe"}}, "dns.pods: must be one of verified, insecure, disabled"),
    ({"dns": {"upstream": ["1.2.3.4:99999"]}}, "dns.upstream[0]: port must be 0-65535"),
    ({"dns": {"listen": "x"}}, "dns.listen: must be an IPv4 address"),
    ({"dns": {"nope": 1}}, "dns.nope: unknown key"),
    ({"iptables": {"timeout": "soon"}}, "iptables.timeout: must be a number of seconds"),
    ({"cluster_domain": "Bad_Domain"}, "cluster_domain: 'Bad_Domain'"),
    ({"state_dir": "relative"}, "state_dir: must be an absolute path"),
])
def test_bad_values_name_the_key(patch, message):
    data = {**BASE, **patch}
    data = {k: v for k, v in data.items() if v is not None}
    with pytest.raises(ConfigError) as err:
        parse(data)
    assert str(err.value).startswith(message), str(err.value)


def test_load_file_and_overrides(tmp_path):
    path = tmp_path / "netproxy.yaml"
    path.write_text(yaml.safe_dump({**BASE, "log_level": "warning"}))
    cfg = load(str(path), {"node_ip": "10.250.0.12", "servers": "a:1,b:2", "log_level": None})
    assert cfg.node_ip == "10.250.0.12" and cfg.servers == ("a:1", "b:2")
    assert cfg.log_level == "warning"
    path.write_text("- a list\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load(str(path))
    path.write_text("a: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load(str(path))
    with pytest.raises(ConfigError, match="No such file"):
        load(str(tmp_path / "missing.yaml"))


def test_the_lab_writes_a_valid_config():
    """The keys corral/lab/configs.py writes for every host are ones we accept."""
    class Host:
        name = "h1"
        ip = "10.250.0.11"

        @staticmethod
        def data(component):
            return f"/tmp/lab/h1/{component}"

    class Spec:
        cluster_cidr = "10.244.0.0/16"
        service_cidr = "10.96.0.0/12"
        log_level = "info"

    class Plan:
        spec = Spec()
        control_plane_hosts = [type("H", (), {"api_address": "10.250.0.11:6443"})()]

    cfg = parse(netproxy_config(Plan(), Host()))  # type: ignore[arg-type]
    assert cfg.node_ip == "10.250.0.11" and cfg.servers == ("10.250.0.11:6443",)
