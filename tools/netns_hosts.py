"""Two "hosts" on one Linux machine: network namespaces joined by a veth pair (issue 27's Ray tests).

    python tools/netns_hosts.py up --name bnn        # prints the ip commands it runs, then the two addresses
    python tools/netns_hosts.py down --name bnn      # kills every process inside both, deletes them

``up`` makes the namespaces ``<name>-head`` and ``<name>-worker``, a veth pair between them with the addresses
:data:`HEAD_IP` and :data:`WORKER_IP` (``/24``), and brings their loopbacks up. Each namespace has its own
interfaces, loopback and ports, as two machines on one switch would: a Ray node started inside one
(``ip netns exec bnn-head ray start ...``) reaches the other only across the veth. The file system is shared (the
namespaces only split the network), which stands in for the NFS a real cluster would mount: an absolute
``storage_path`` is seen by both hosts. ``down`` SIGKILLs the processes still inside a namespace (``ip netns
pids``: a lost machine, not a clean shutdown) before deleting it, which also removes the veth pair.

Needs root (or CAP_SYS_ADMIN + CAP_NET_ADMIN) and iproute2 (``make system-deps`` installs Debian's package);
:func:`unavailable_reason` says in one line why namespaces cannot be made here (None when they can).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence

__all__ = ["HEAD_IP", "WORKER_IP", "TwoHosts", "unavailable_reason"]

HEAD_IP = "10.77.0.1"
WORKER_IP = "10.77.0.2"
"""The two hosts' addresses. Every pair of namespaces is a network of its own, so runs side by side may share them."""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=60, check=check)


def unavailable_reason() -> str | None:
    """Why network namespaces cannot be made here, in one line; None when they can (tried with a probe)."""
    if not sys.platform.startswith("linux"):
        return f"network namespaces are Linux only (this is {sys.platform})"
    if shutil.which("ip") is None:
        return "iproute2's `ip` is not installed; `make system-deps` installs it (Debian's iproute2, as root)"
    probe = f"bnnprobe{os.getpid()}"
    made = _ip("netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"`ip netns add` is not permitted here ({made.stderr.strip() or 'exit ' + str(made.returncode)})"
    try:
        veth = _ip("-n", probe, "link", "add", "pa", "type", "veth", "peer", "name", "pb", check=False)
        if veth.returncode != 0:
            return f"a veth pair cannot be made here ({veth.stderr.strip()})"
    finally:
        _ip("netns", "del", probe, check=False)
    return None


class TwoHosts:
    """The namespaces ``<name>-head`` and ``<name>-worker`` joined by a veth pair (module docstring).

    Args:
        name: prefix of the namespaces (default ``bnn<pid>``: unique per process, so runs side by side do not
            meet). Interface names are at most 15 bytes: the veth ends are ``vh<n>``/``vw<n>`` with ``n`` a number
            derived from the name (``<name>-vh``/``<name>-vw`` for a name of at most 12).
    """

    def __init__(self, name: str | None = None) -> None:
        self.name = name or f"bnn{os.getpid()}"
        self.head = f"{self.name}-head"
        self.worker = f"{self.name}-worker"
        if len(self.name) <= 12:
            self.veth_head, self.veth_worker = f"{self.name}-vh", f"{self.name}-vw"
        else:
            n = sum(ord(c) * 31**i for i, c in enumerate(self.name)) % 10**9
            self.veth_head, self.veth_worker = f"vh{n}", f"vw{n}"

    def commands(self) -> list[list[str]]:
        """The ``ip`` commands :meth:`up` runs, in order."""
        h, w, vh, vw = self.head, self.worker, self.veth_head, self.veth_worker
        return [["ip", "netns", "add", h], ["ip", "netns", "add", w],
                ["ip", "link", "add", vh, "type", "veth", "peer", "name", vw],
                ["ip", "link", "set", vh, "netns", h], ["ip", "link", "set", vw, "netns", w],
                ["ip", "-n", h, "addr", "add", f"{HEAD_IP}/24", "dev", vh],
                ["ip", "-n", w, "addr", "add", f"{WORKER_IP}/24", "dev", vw],
                ["ip", "-n", h, "link", "set", vh, "up"], ["ip", "-n", w, "link", "set", vw, "up"],
                ["ip", "-n", h, "link", "set", "lo", "up"], ["ip", "-n", w, "link", "set", "lo", "up"]]

    def up(self) -> TwoHosts:
        """Make both namespaces and the link (removing whatever of them an earlier run left under this name)."""
        self.down()
        try:
            for cmd in self.commands():
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
                if proc.returncode != 0:
                    raise RuntimeError(f"{' '.join(cmd)} failed: {proc.stderr.strip()}")
        except BaseException:
            self.down()
            raise
        return self

    def exec(self, namespace: str, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside ``namespace`` (:attr:`head` or :attr:`worker`)."""
        return ["ip", "netns", "exec", namespace, *argv]

    def pids(self, namespace: str) -> list[int]:
        """The processes inside ``namespace``."""
        proc = _ip("netns", "pids", namespace, check=False)
        return [int(p) for p in proc.stdout.split()] if proc.returncode == 0 else []

    def signal_all(self, namespace: str, signum: int) -> list[int]:
        """Send ``signum`` to every process inside ``namespace``; returns their pids."""
        pids = self.pids(namespace)
        for pid in pids:
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass
        return pids

    def kill_host(self, namespace: str, *, timeout: float = 60) -> None:
        """SIGKILL every process inside ``namespace`` (the machine is lost) and wait until none is left."""
        deadline = time.monotonic() + timeout
        while self.signal_all(namespace, signal.SIGKILL):
            if time.monotonic() > deadline:
                raise RuntimeError(f"processes survive SIGKILL in {namespace}: {self.pids(namespace)}")
            time.sleep(0.05)  # polling interval: until the kernel has reaped them

    def down(self) -> None:
        """Kill what runs inside both namespaces and delete them (no error if they do not exist)."""
        listed = _ip("netns", "list", check=False).stdout.split()
        for namespace in (self.head, self.worker):
            if namespace in listed:
                self.kill_host(namespace)
                _ip("netns", "del", namespace, check=False)

    def __enter__(self) -> TwoHosts:
        return self.up()

    def __exit__(self, *exc: object) -> None:
        self.down()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("action", choices=("up", "down"))
    p.add_argument("--name", default="bnn", help="namespaces <name>-head and <name>-worker (default bnn)")
    args = p.parse_args(argv)
    reason = unavailable_reason()
    if reason is not None:
        print(f"error: {reason}", file=sys.stderr)
        return 2
    hosts = TwoHosts(args.name)
    if args.action == "down":
        hosts.down()
        return 0
    try:
        hosts.up()
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for cmd in hosts.commands():
        print(" ".join(cmd))
    print(f"head: {hosts.head} {HEAD_IP}; worker: {hosts.worker} {WORKER_IP}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
