"""Network namespaces, the switch bridge and host links, through netlink (pyroute2).

Threads model: every operation inside a namespace runs on a short-lived thread that
first setns(2)es into it. A thread's network namespace is its own (CLONE_NEWNET may
be joined by one thread of a multi-threaded process), and a netlink socket belongs
to the namespace of the thread that opened it, so `IPRoute()` opened on that thread
talks to the target namespace. This avoids `IPRoute(netns=...)`, which forks a
Python child to make the socket (pyroute2 0.9 `netns.create_socket` via
`process.ChildProcess`, mode 'fork'): forking a process that holds gRPC channels
(the tests do) is unsafe. The calling thread never changes namespace.

Namespaces are made as iproute2 makes them (`ip netns add`): /run/netns is a shared
mount point and each namespace a bind mount of the creating thread's
/proc/thread-self/ns/net onto /run/netns/NAME, so every mount namespace sees it.
"""

from __future__ import annotations

import ctypes
import errno
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from corral.lab.errors import LabError

T = TypeVar("T")

RUN_DIR = Path("/run/netns")
CLONE_NEWNET = 0x40000000
MS_BIND = 4096
MS_REC = 16384
MS_SHARED = 1 << 20
MNT_DETACH = 2

_libc = ctypes.CDLL(None, use_errno=True)


def _oserror(what: str, target: str | Path) -> OSError:
    err = ctypes.get_errno()
    return OSError(err, f"{what}: {os.strerror(err)}", str(target))


def netns_path(name: str) -> Path:
    return RUN_DIR / name


def list_netns() -> list[str]:
    try:
        return sorted(os.listdir(RUN_DIR))
    except FileNotFoundError:
        return []


def netns_exists(name: str) -> bool:
    return netns_path(name).exists()


def in_netns(name: str | None, fn: Callable[[], T]) -> T:
    """Run `fn` on a fresh thread inside namespace `name` (None: this one) and return
    its result, re-raising its exception on the caller's thread."""
    out: list[Any] = []
    err: list[BaseException] = []

    def run() -> None:
        try:
            if name is not None:
                try:
                    fd = os.open(netns_path(name), os.O_RDONLY)
                except FileNotFoundError:
                    raise LabError(f"network namespace {name} does not exist") from None
                try:
                    if _libc.setns(fd, CLONE_NEWNET) != 0:
                        raise _oserror("setns", name)
                finally:
                    os.close(fd)
            out.append(fn())
        except BaseException as exc:
            err.append(exc)

    t = threading.Thread(target=run, name=f"netns:{name}", daemon=True)
    t.start()
    t.join()
    if err:
        raise err[0]
    return out[0]  # type: ignore[no-any-return]


def _share_run_dir() -> None:
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    # As iproute2's netns_add: make /run/netns a shared mount point (bind it onto
    # itself first if it is not one) so namespaces show in every mount namespace.
    if _libc.mount(b"", str(RUN_DIR).encode(), b"none", MS_SHARED | MS_REC, None) == 0:
        return
    if ctypes.get_errno() != errno.EINVAL:
        raise _oserror("mount --make-rshared", RUN_DIR)
    if _libc.mount(str(RUN_DIR).encode(), str(RUN_DIR).encode(), b"none",
                   MS_BIND | MS_REC, None) != 0:
        raise _oserror("mount --rbind", RUN_DIR)
    if _libc.mount(b"", str(RUN_DIR).encode(), b"none", MS_SHARED | MS_REC, None) != 0:
        raise _oserror("mount --make-rshared", RUN_DIR)


def create_netns(name: str) -> None:
    """Make network namespace `name`; LabError if it exists."""
    _share_run_dir()
    path = netns_path(name)
    try:
        os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0))
    except FileExistsError:
        raise LabError(f"network namespace {name} already exists") from None

    def make() -> None:
        if _libc.unshare(CLONE_NEWNET) != 0:
            raise _oserror("unshare(CLONE_NEWNET)", name)
        if _libc.mount(b"/proc/thread-self/ns/net", str(path).encode(), b"none",
                       MS_BIND, None) != 0:
            raise _oserror("bind mount", path)

    try:
        in_netns(None, make)
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def remove_netns(name: str) -> bool:
    """Remove namespace `name` if it exists (True if it did). Its links go with it
    once no process holds it."""
    path = netns_path(name)
    if not os.path.lexists(path):
        return False
    if _libc.umount2(str(path).encode(), MNT_DETACH) != 0 and ctypes.get_errno() != errno.EINVAL:
        raise _oserror("umount", path)
    path.unlink(missing_ok=True)
    return True


def netns_inode(name: str) -> tuple[int, int] | None:
    """(st_dev, st_ino) of namespace `name`, to match /proc/PID/ns/net; None if gone."""
    try:
        st = os.stat(netns_path(name))
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


def _ipr(ns: str, fn: Callable[[IPRoute], T]) -> T:
    def run() -> T:
        with IPRoute() as ipr:
            return fn(ipr)

    return in_netns(ns, run)


def _index(ipr: IPRoute, ifname: str) -> int | None:
    found = ipr.link_lookup(ifname=ifname)
    return found[0] if found else None


def _up(ipr: IPRoute, ifname: str) -> None:
    idx = _index(ipr, ifname)
    if idx is None:
        raise LabError(f"no interface {ifname}")
    ipr.link("set", index=idx, state="up")


def set_sysctl(ns: str, key: str, value: str) -> None:
    """Write /proc/sys/KEY (dots for slashes) inside namespace `ns`."""
    path = "/proc/sys/" + key.replace(".", "/")

    def write() -> None:
        with open(path, "w", encoding="ascii") as f:
            f.write(value)

    in_netns(ns, write)


def get_sysctl(ns: str, key: str) -> str:
    path = "/proc/sys/" + key.replace(".", "/")

    def read() -> str:
        with open(path, encoding="ascii") as f:
            return f.read().strip()

    return in_netns(ns, read)


def make_switch(ns: str, bridge: str, gateway: str | None = None,
                prefixlen: int = 24) -> None:
    """Loopback up and an up bridge `bridge` in the switch namespace; with `gateway`,
    the bridge holds that address (the hosts' default gateway) and forwards nothing,
    so a packet for anywhere outside the lab subnet ends there."""
    def run(ipr: IPRoute) -> None:
        _up(ipr, "lo")
        _add_bridge(ipr, bridge)
        if gateway:
            ipr.addr("add", index=_index(ipr, bridge), address=gateway, prefixlen=prefixlen)

    _ipr(ns, run)
    set_sysctl(ns, "net.ipv4.ip_forward", "0")


def _add_bridge(ipr: IPRoute, bridge: str) -> None:
    if _index(ipr, bridge) is None:
        # No STP: a lab port must forward the moment it is plugged in.
        ipr.link("add", ifname=bridge, kind="bridge", br_stp_state=0, br_forward_delay=0)
    _up(ipr, bridge)


def add_bridge(ns: str, bridge: str) -> None:
    _ipr(ns, lambda ipr: _add_bridge(ipr, bridge))


def delete_link(ns: str, ifname: str) -> bool:
    """Delete interface `ifname` in `ns` if both exist (True if it did)."""
    if not netns_exists(ns):
        return False

    def run(ipr: IPRoute) -> bool:
        idx = _index(ipr, ifname)
        if idx is None:
            return False
        try:
            ipr.link("del", index=idx)
        except NetlinkError as err:
            if err.code == errno.ENODEV:
                return False
            raise
        return True

    return _ipr(ns, run)


def plug(switch_ns: str, bridge: str, port: str, host_ns: str, ip: str,
         prefixlen: int, mac: str | None = None, gateway: str | None = None) -> None:
    """Wire host namespace `host_ns` to the switch: a veth whose switch end `port` is
    on `bridge` and whose host end eth0 holds ip/prefixlen; loopback and ip_forward
    on in the host; eth0 gets the MAC `mac` if given, and a default route via
    `gateway` if given (a host without one cannot even route to a Service VIP:
    the kernel picks a route before the NAT rules rewrite the address)."""
    def switch_side(ipr: IPRoute) -> None:
        if _index(ipr, port) is not None:
            ipr.link("del", index=_index(ipr, port))
        ipr.link("add", ifname=port, kind="veth",
                 peer={"ifname": "eth0", "net_ns_fd": str(netns_path(host_ns))})
        br = _index(ipr, bridge)
        if br is None:
            raise LabError(f"no bridge {bridge} in {switch_ns}")
        ipr.link("set", index=_index(ipr, port), master=br, state="up")

    def host_side(ipr: IPRoute) -> None:
        _up(ipr, "lo")
        eth = _index(ipr, "eth0")
        if eth is None:
            raise LabError(f"no eth0 in {host_ns} after plugging it in")
        if mac:
            ipr.link("set", index=eth, address=mac)
        ipr.addr("add", index=eth, address=ip, prefixlen=prefixlen)
        ipr.link("set", index=eth, state="up")
        if gateway:
            ipr.route("add", dst="0.0.0.0/0", gateway=gateway)

    _ipr(switch_ns, switch_side)
    _ipr(host_ns, host_side)
    set_sysctl(host_ns, "net.ipv4.ip_forward", "1")


def move_port(switch_ns: str, port: str, bridge: str) -> None:
    def run(ipr: IPRoute) -> None:
        idx, br = _index(ipr, port), _index(ipr, bridge)
        if idx is None:
            return  # an unplugged (killed) host: `start` plugs it into its bridge
        if br is None:
            raise LabError(f"no bridge {bridge} in {switch_ns}")
        ipr.link("set", index=idx, master=br)

    _ipr(switch_ns, run)


def links(ns: str) -> dict[str, dict[str, Any]]:
    """ifname -> {"state": up/down, "master": bridge name or "", "addresses": [...]}."""
    def run(ipr: IPRoute) -> dict[str, dict[str, Any]]:
        by_index: dict[int, str] = {}
        raw = []
        for msg in ipr.get_links():
            name = msg.get_attr("IFLA_IFNAME")
            by_index[msg["index"]] = name
            raw.append((msg["index"], name, msg.get_attr("IFLA_OPERSTATE"),
                        msg.get_attr("IFLA_MASTER")))
        addrs: dict[int, list[str]] = {}
        for msg in ipr.get_addr(family=2):
            addrs.setdefault(msg["index"], []).append(
                f"{msg.get_attr('IFA_ADDRESS')}/{msg['prefixlen']}")
        return {
            name: {
                "state": (oper or "").lower(),
                "master": by_index.get(master, "") if master else "",
                "addresses": addrs.get(idx, []),
            }
            for idx, name, oper, master in raw
        }

    return _ipr(ns, run)


NSID_NOT_ASSIGNED = 0xFFFFFFFF


def nsid(target: str, inside: str | None = None) -> int | None:
    """The id namespace `inside` (None: the machine's) has for namespace `target`, or
    None. The kernel assigns one when a link of `inside` has its peer in `target`,
    so None from the machine's namespace means nothing of `target` is linked to it."""
    def run() -> int | None:
        fd = os.open(netns_path(target), os.O_RDONLY)
        try:
            with IPRoute() as ipr:
                got = ipr.get_netnsid(fd=fd)
        finally:
            os.close(fd)
        value = got.get("nsid") if got else None
        return None if value is None or value in (NSID_NOT_ASSIGNED, -1) else int(value)

    return in_netns(inside, run)
