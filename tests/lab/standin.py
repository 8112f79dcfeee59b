"""A stand-in for a lab process, to test the lab's plumbing without Corral's daemons.

Run as `python standin.py --config FILE` (the lab's calling convention). It reads
the YAML the lab wrote, answers every TCP connection on the host's address (the
config's `listen`, else node_ip:10250) and on the config's unix `socket` with
"NAME PID BOOTS\n", appends a line to BOOT_FILE in its data folder on each start
(so a test sees state kept across a power loss), and keeps a child process
(`sleep`) to show that a power loss reaches children too. With `fail: true`
in its environment (STANDIN_FAIL=1) it prints a message and exits 3 at once.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import yaml

BOOT_FILE = "boots"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True)
    args = parser.parse_args()
    cfg = yaml.safe_load(Path(args.config).read_text())
    name = cfg.get("name") or cfg.get("node_name")
    if os.environ.get("STANDIN_FAIL") == "1":
        print(f"standin {name}: failing on purpose", flush=True)
        return 3
    data = Path(cfg.get("data_dir") or cfg.get("state_dir"))
    data.mkdir(parents=True, exist_ok=True)
    with open(data / BOOT_FILE, "a") as f:
        f.write(f"{os.getpid()}\n")
    boots = len((data / BOOT_FILE).read_text().split())
    listen = cfg.get("listen") or f"{cfg['node_ip']}:10250"
    host, _, port = listen.rpartition(":")
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    tcp.bind((host, int(port)))
    tcp.listen(16)
    servers = [tcp]
    if cfg.get("socket"):
        path = cfg["socket"]
        if os.path.exists(path):
            os.unlink(path)
        unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        unix.bind(path)
        unix.listen(16)
        servers.append(unix)
    child = subprocess.Popen(["sleep", "100000"])
    reply = f"{name} {os.getpid()} {boots}\n".encode()

    def serve(srv: socket.socket) -> None:
        while True:
            conn, _ = srv.accept()
            with conn:
                conn.sendall(reply)

    for srv in servers:
        threading.Thread(target=serve, args=(srv,), daemon=True).start()
    print(f"standin {name} pid {os.getpid()} child {child.pid} on {listen}", flush=True)
    child.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
