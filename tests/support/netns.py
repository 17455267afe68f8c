"""Network namespaces joined to the root namespace by veth pairs, and real faults on those links:
latency, jitter, packet loss and partitions between processes of one machine
(tests/reliability/test_netfaults.py).

Only addresses the test made are used: each link is a /30 in 10.231.0.0/16 that no interface of this
machine holds yet, the root side .1 and the namespace side .2. Everything is deleted by `close()`
(the namespace, and with it its veth ends and its netfilter rules), which the fixtures call in a finally,
failed test or not.

Faults:
- loss and partitions (`drop(index, percent)`, `heal(index)`): nftables rules in the namespace that drop
  that share of the packets, both directions, on the link's device (`numgen random`; 100: every packet,
  silently, as a dead switch does). Needs `nft` and nf_tables.
- latency and jitter (`netem(index, spec)`): `tc qdisc ... netem` on both ends of the link, where the
  kernel has netem (CONFIG_NET_SCH_NETEM); `netem_reason()` says when it does not (then the tests delay
  with `DelayProxy`, a TCP relay in front of the link that holds each chunk for delay +/- jitter).
`unavailable()` says why no namespace can be made here (not root, no iproute2, no veth).
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import os
import random
import secrets
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass


def sh(*cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: exit {done.returncode}: {done.stderr.strip()[:300]}")
    return done


@functools.cache
def unavailable() -> str | None:
    """None when namespaces, veth pairs and netem can be made here, else why not."""
    if os.geteuid() != 0:
        return "network namespaces and tc need root (this test process is not root)"
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            return f"`{tool}` (iproute2) is not installed"
    ns = Namespace()
    try:
        ns.open()
        ns.link()
    except Exception as exc:
        return f"cannot make a namespace with a veth pair here: {exc}"
    finally:
        ns.close()
    return None


def _probe(what: str, fn) -> str | None:  # noqa: ANN001
    ns = Namespace()
    try:
        ns.open()
        ns.link()
        fn(ns)
    except Exception as exc:
        return f"{what}: {exc}"
    finally:
        ns.close()
    return None


@functools.cache
def nft_reason() -> str | None:
    """None when nftables can drop packets in a namespace here, else why not."""
    if unavailable() is not None:
        return unavailable()
    if shutil.which("nft") is None:
        return "`nft` (nftables) is not installed: no way to drop packets on a link"
    return _probe("nftables rules cannot be made in a namespace here", lambda ns: ns.drop(0, 10))


@functools.cache
def netem_reason() -> str | None:
    """None when `tc ... netem` works here, else why not (e.g. a kernel without CONFIG_NET_SCH_NETEM)."""
    if unavailable() is not None:
        return unavailable()
    return _probe("tc netem is not available (kernel without sch_netem?)", lambda ns: ns.netem(0, "delay 1ms"))


@dataclass
class Link:
    root_dev: str
    ns_dev: str
    root_ip: str
    ns_ip: str


def _used_networks() -> list[ipaddress.IPv4Network]:
    out = sh("ip", "-o", "-4", "addr", "show").stdout
    nets = []
    for line in out.splitlines():
        parts = line.split()
        if "inet" in parts:
            nets.append(ipaddress.ip_interface(parts[parts.index("inet") + 1]).network)
    return nets


class Namespace:
    """One namespace `gp<hex>`; `link()` adds a veth pair to it, `exec_prefix` runs a command inside."""

    def __init__(self) -> None:
        self.tag = secrets.token_hex(4)
        self.name = f"gp{self.tag}"
        self.links: list[Link] = []
        self.opened = False

    def open(self) -> Namespace:
        sh("ip", "netns", "add", self.name)
        self.opened = True
        sh("ip", "netns", "exec", self.name, "ip", "link", "set", "lo", "up")
        return self

    @property
    def exec_prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.name]

    def link(self) -> Link:
        used = _used_networks() + [ipaddress.ip_network(f"{ln.root_ip}/30", strict=False) for ln in self.links]
        for _ in range(100):
            net = ipaddress.ip_network(f"10.231.{random.randrange(256)}.{4 * random.randrange(64)}/30")
            if not any(net.overlaps(u) for u in used):
                break
        else:
            raise RuntimeError("no free /30 in 10.231.0.0/16")
        hosts = list(net.hosts())
        n = len(self.links)
        link = Link(f"gpr{self.tag}{n}", f"gpn{self.tag}{n}", str(hosts[0]), str(hosts[1]))
        sh("ip", "link", "add", link.root_dev, "type", "veth", "peer", "name", link.ns_dev)
        self.links.append(link)
        sh("ip", "link", "set", link.ns_dev, "netns", self.name)
        sh("ip", "addr", "add", f"{link.root_ip}/30", "dev", link.root_dev)
        sh("ip", "link", "set", link.root_dev, "up")
        sh(*self.exec_prefix, "ip", "addr", "add", f"{link.ns_ip}/30", "dev", link.ns_dev)
        sh(*self.exec_prefix, "ip", "link", "set", link.ns_dev, "up")
        return link

    def netem(self, index: int, spec: str) -> None:
        """`tc qdisc replace ... netem SPEC` on both ends of link `index` (each direction gets SPEC)."""
        link = self.links[index]
        sh("tc", "qdisc", "replace", "dev", link.root_dev, "root", "netem", *spec.split())
        sh(*self.exec_prefix, "tc", "qdisc", "replace", "dev", link.ns_dev, "root", "netem", *spec.split())

    def clear(self, index: int) -> None:
        link = self.links[index]
        sh("tc", "qdisc", "del", "dev", link.root_dev, "root", check=False)
        sh(*self.exec_prefix, "tc", "qdisc", "del", "dev", link.ns_dev, "root", check=False)

    def drop(self, index: int, percent: int) -> None:
        """Drop `percent` % of the packets both ways on link `index` (100: a partition). Replaces any drop
        rule of this link."""
        self.heal(index)
        dev = self.links[index].ns_dev
        table = f"gp{index}"
        rule = "drop" if percent >= 100 else f"numgen random mod 100 < {int(percent)} drop"
        sh(*self.exec_prefix, "nft", "add", "table", "inet", table)
        for chain, hook, match in (("in", "input", "iifname"), ("out", "output", "oifname")):
            sh(*self.exec_prefix, "nft", "add", "chain", "inet", table, chain,
               f"{{ type filter hook {hook} priority 0; }}")
            sh(*self.exec_prefix, "nft", "add", "rule", "inet", table, chain, match, dev, *rule.split())

    def heal(self, index: int) -> None:
        sh(*self.exec_prefix, "nft", "delete", "table", "inet", f"gp{index}", check=False)

    def close(self) -> None:
        """Delete the namespace (its veth ends go with it, and so do their root-side peers)."""
        if self.opened:
            sh("ip", "netns", "del", self.name, check=False)
            self.opened = False
        for link in self.links:
            if sh("ip", "link", "show", link.root_dev, check=False).returncode == 0:
                sh("ip", "link", "del", link.root_dev, check=False)


class DelayProxy:
    """A TCP relay on `listen` (an address; a free port) to `target` (host, port) that holds every chunk,
    each way, for `delay_s` plus a uniform jitter in [-jitter_s, jitter_s], keeping their order (a chunk
    never overtakes the one before it, as on one link): latency where the kernel has no netem. With no
    delay it is a plain forwarder (PostgreSQL on 127.0.0.1 reached from a namespace). Threads, no asyncio."""

    def __init__(self, target: tuple[str, int], delay_s: float = 0.0, jitter_s: float = 0.0,
                 listen: str = "127.0.0.1") -> None:
        self.target, self.delay_s, self.jitter_s = target, delay_s, jitter_s
        self.listener = socket.create_server((listen, 0))
        self.port = self.listener.getsockname()[1]
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=10)
            except OSError:
                client.close()
                continue
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        import queue

        chunks: queue.Queue = queue.Queue()

        def deliver() -> None:
            while (item := chunks.get()) is not None:
                due, data = item
                time.sleep(max(0.0, due - time.monotonic()))
                try:
                    dst.sendall(data)
                except OSError:
                    return
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)

        threading.Thread(target=deliver, daemon=True).start()
        last = 0.0
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                data = b""
            if not data:
                chunks.put(None)
                return
            due = max(last, time.monotonic() + self.delay_s + random.uniform(-self.jitter_s, self.jitter_s))
            last = due
            chunks.put((due, data))

    def close(self) -> None:
        self.closed = True
        self.listener.close()
