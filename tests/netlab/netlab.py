#!/usr/bin/env python3
"""The NAT lab: pluto's real binaries on an emulated internet of network namespaces.

Topology (all addresses exist only inside the namespaces this script makes):

  internet: one bridge, 198.51.100.0/23
    coordinator   198.51.100.2   (broker :1883, relay :8443)
    pub1..pub3    198.51.100.11-13            public hosts
    router0..N    198.51.101.20+i (WAN)  --NAT--  home0..N  192.168.(100+i).2
  home0 is the owner; home1..N are hosts behind NAT. Routers masquerade (a "cone" NAT:
  Linux keeps the source port and maps endpoint-independently) or, for the homes named
  by --symmetric, masquerade with --random (a new port per destination: symmetric).
  Every cone router runs miniupnpd (UPnP-IGD, as a home router does; off with
  --no-upnp), so the nodes behind it can map their peer port; the symmetric ones do not.
  (The routers' WAN side is 198.51.101.0/24, not TEST-NET-2 like the rest: miniupnpd
  refuses to forward ports on a WAN address in a documentation or private range.)
  Each home's link (both ways, on its router) is shaped: tbf for the rate, nfdelay (an
  NFQUEUE user-space delay; this kernel has no sch_netem) for the delay, iptables
  statistic for the loss.

It runs the coordinator, `pluto serve` on every host, snapshots random data at the owner,
pushes it as 4/8 shares to the 8 hosts (3 public, 5 behind NAT), restores it on a "new
machine" from the recovery words (pull + checkout, compared byte for byte), and compares
the push's time with a plain TCP copy of the same bytes to the same hosts over the same
links (through a port forward on each router, for the baseline only). With --outage, one
home's link goes down for 20 s in the middle of the push, and the push must still place
everything.

NETLAB_DEBUG=1 also prints every node's and the coordinator's output, and each router's
count of port forwards.

Exit 0 when the push placed everything and the restore is byte-identical; 1 otherwise;
0 with "SKIPPED: reason" when this machine cannot make network namespaces (not root).
Bounded: every step has a deadline and the whole run stops after --limit seconds.
Cleans up (processes it started, namespaces, files) on every exit.
"""

import argparse
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

os.environ["PATH"] = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
COORD_IP = "198.51.100.2"
PUBLIC = ["198.51.100.11", "198.51.100.12", "198.51.100.13"]
PREFIX = 23  # the internet: 198.51.100.0/23 (public hosts in .100, router WANs in .101)
BASELINE_PORT = 9000
MINIUPNPD = "/usr/sbin/miniupnpd"

MINIUPNPD_CONF = """# written by tests/netlab/netlab.py for router {router}
ext_ifname=wan
listening_ip=lan
http_port=0
enable_upnp={upnp}
enable_natpmp=yes
secure_mode=yes
system_uptime=yes
notify_interval=30
clean_ruleset_interval=600
upnp_forward_chain=MINIUPNPD
upnp_nat_chain=MINIUPNPD
upnp_nat_postrouting_chain=MINIUPNPD-POSTROUTING
uuid=00000000-0000-4000-8000-0000000000{i:02d}
allow 1024-65535 {lan_net} 1024-65535
deny 0-65535 0.0.0.0/0 0-65535
"""

procs = []  # (name, Popen) we started
namespaces = []
deadline = [0.0]


def clean_env():
    e = dict(os.environ)
    e.pop("PLUTO_REPO", None)
    e.pop("PLUTO_COORDINATOR", None)
    return e


def log(*a):
    print("netlab:", *a, flush=True)


def sh(cmd, check=True, ns=None, quiet=False, timeout=60):
    if ns:
        cmd = ["ip", "netns", "exec", ns] + cmd
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: exit {r.returncode}: {r.stderr.strip()}")
    if not quiet and r.returncode != 0:
        log(f"(ignored) {' '.join(cmd)}: {r.stderr.strip()}")
    return r


def left():
    return max(1.0, deadline[0] - time.time())


def cleanup():
    for name, p in reversed(procs):
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    t = time.time() + 10
    for name, p in procs:
        try:
            p.wait(timeout=max(0.1, t - time.time()))
        except subprocess.TimeoutExpired:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    for ns in reversed(namespaces):
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    namespaces.clear()


class Proc:
    """A long-running process in a namespace, its output collected line by line."""

    def __init__(self, name, ns, cmd, cwd=None, env=None):
        self.name = name
        self.lines = []
        self.cv = threading.Condition()
        full = ["ip", "netns", "exec", ns] + cmd
        e = clean_env()
        e.update(env or {})
        self.p = subprocess.Popen(full, cwd=cwd, env=e, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True,
                                  start_new_session=True)
        procs.append((name, self.p))
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.p.stdout:
            with self.cv:
                self.lines.append(line.rstrip("\n"))
                self.cv.notify_all()
        with self.cv:
            self.cv.notify_all()

    def wait_for(self, pattern, secs):
        rx = re.compile(pattern)
        end = time.time() + min(secs, left())
        with self.cv:
            while True:
                for l in self.lines:
                    m = rx.search(l)
                    if m:
                        return m
                if time.time() >= end or self.p.poll() is not None and not self.p.stdout:
                    break
                self.cv.wait(timeout=0.5)
                if self.p.poll() is not None:
                    # read the rest once more
                    for l in self.lines:
                        m = rx.search(l)
                        if m:
                            return m
                    if time.time() >= end:
                        break
        raise RuntimeError(f"{self.name}: no line matching {pattern!r} within {secs}s; "
                           f"output:\n  " + "\n  ".join(self.lines[-20:]))


def build_topology(args, tag):
    net = f"{tag}net"
    def add_ns(name):
        sh(["ip", "netns", "add", name])
        namespaces.append(name)
        sh(["ip", "link", "set", "lo", "up"], ns=name)
        return name
    add_ns(net)
    sh(["ip", "link", "add", "br0", "type", "bridge"], ns=net)
    sh(["ip", "link", "set", "br0", "up"], ns=net)
    n_if = [0]

    def wire(ns, ifname, ip_cidr):
        n_if[0] += 1
        a, b = f"{tag}a{n_if[0]}", f"{tag}b{n_if[0]}"
        sh(["ip", "link", "add", a, "type", "veth", "peer", "name", b])
        sh(["ip", "link", "set", a, "netns", ns])
        sh(["ip", "link", "set", b, "netns", net])
        sh(["ip", "link", "set", a, "name", ifname], ns=ns)
        sh(["ip", "addr", "add", ip_cidr, "dev", ifname], ns=ns)
        sh(["ip", "link", "set", ifname, "up"], ns=ns)
        sh(["ip", "link", "set", b, "master", "br0"], ns=net)
        sh(["ip", "link", "set", b, "up"], ns=net)

    nodes = {}
    coord = add_ns(f"{tag}coord")
    wire(coord, "eth0", f"{COORD_IP}/{PREFIX}")
    nodes["coordinator"] = coord
    for i, ip in enumerate(PUBLIC):
        ns = add_ns(f"{tag}pub{i + 1}")
        wire(ns, "eth0", f"{ip}/{PREFIX}")
        nodes[f"pub{i + 1}"] = ns
    homes = []
    for i in range(args.homes + 1):
        r = add_ns(f"{tag}r{i}")
        h = add_ns(f"{tag}home{i}")
        wan = f"198.51.101.{20 + i}"
        lan_r, lan_h = f"192.168.{100 + i}.1", f"192.168.{100 + i}.2"
        wire(r, "wan", f"{wan}/{PREFIX}")
        a, b = f"{tag}l{i}", f"{tag}m{i}"
        sh(["ip", "link", "add", a, "type", "veth", "peer", "name", b])
        sh(["ip", "link", "set", a, "netns", r])
        sh(["ip", "link", "set", b, "netns", h])
        sh(["ip", "link", "set", a, "name", "lan"], ns=r)
        sh(["ip", "link", "set", b, "name", "eth0"], ns=h)
        sh(["ip", "addr", "add", f"{lan_r}/24", "dev", "lan"], ns=r)
        sh(["ip", "addr", "add", f"{lan_h}/24", "dev", "eth0"], ns=h)
        sh(["ip", "link", "set", "lan", "up"], ns=r)
        sh(["ip", "link", "set", "eth0", "up"], ns=h)
        sh(["ip", "route", "add", "default", "via", lan_r], ns=h)
        sh(["sysctl", "-qw", "net.ipv4.ip_forward=1"], ns=r)
        symmetric = i in args.symmetric
        masq = ["iptables", "-t", "nat", "-A", "POSTROUTING", "-o", "wan", "-j", "MASQUERADE"]
        if symmetric:
            masq.append("--random")
        sh(masq, ns=r)
        # as home routers do: what comes unasked from the internet to the router itself is
        # dropped, not answered with a reset (a reset would end a hole punch's first SYNs)
        sh(["iptables", "-A", "INPUT", "-i", "wan", "-p", "tcp", "-m", "conntrack",
            "--ctstate", "NEW,INVALID", "-j", "DROP"], ns=r)
        # the plain-TCP baseline only: a port forward to the home's sink
        sh(["iptables", "-t", "nat", "-A", "PREROUTING", "-i", "wan", "-p", "tcp", "--dport",
            str(BASELINE_PORT), "-j", "DNAT", "--to-destination", f"{lan_h}:{BASELINE_PORT}"], ns=r)
        # the home's link, both ways: rate, loss, delay
        for dev in ("wan", "lan"):
            sh(["tc", "qdisc", "replace", "dev", dev, "root", "tbf", "rate", args.rate,
                "burst", "32k", "latency", "100ms"], ns=r)
        if args.loss > 0:
            sh(["iptables", "-A", "FORWARD", "-m", "statistic", "--mode", "random",
                "--probability", str(args.loss), "-j", "DROP"], ns=r)
        if args.delay_ms > 0:
            sh(["iptables", "-t", "mangle", "-A", "FORWARD", "-j", "NFQUEUE", "--queue-num", "0"],
               ns=r)
            Proc(f"nfdelay{i}", r, [args.nfdelay, "0", str(int(args.delay_ms * 1000))])
        upnp = args.upnp and not symmetric and i not in args.no_upnp_on
        if upnp and i not in args.late_upnp:
            start_miniupnpd(args, r, i, f"192.168.{100 + i}.0/24",
                            upnp=i not in args.natpmp_only_on)
        homes.append({"router": r, "ns": h, "wan": wan, "lan": lan_h,
                      "nat": "symmetric" if symmetric else "cone", "upnp": upnp})
    return nodes, homes


def forwards(r):
    """The port forwards miniupnpd holds on router r (its DNAT rules, counted: this iptables
    cannot print their target)."""
    out = sh(["iptables-legacy", "-t", "nat", "-S", "MINIUPNPD"], ns=r, check=False).stdout
    return sum(1 for l in out.splitlines() if l.startswith("-A MINIUPNPD"))


def start_miniupnpd(args, r, i, lan_net, upnp=True):
    """UPnP-IGD and NAT-PMP on router r, as a home router runs them (NAT-PMP only when not
    `upnp`, as on routers that speak only NAT-PMP). miniupnpd's iptables backend (libiptc)
    writes the legacy tables, in chains it expects to exist: made here, hooked where its own
    iptables_init.sh hooks them (DNAT before routing, accept in FORWARD, and its
    POSTROUTING chain), in this namespace only."""
    ipt = ["iptables-legacy"]
    for table, chain, hook in (("nat", "MINIUPNPD", ["PREROUTING", "-i", "wan"]),
                               ("nat", "MINIUPNPD-POSTROUTING", ["POSTROUTING", "-o", "wan"]),
                               ("mangle", "MINIUPNPD", ["PREROUTING", "-i", "wan"]),
                               ("filter", "MINIUPNPD", ["FORWARD", "-i", "wan", "!", "-o",
                                                        "wan"])):
        sh(ipt + ["-t", table, "-N", chain], ns=r)
        sh(ipt + ["-t", table, "-I"] + hook + ["-j", chain], ns=r)
    conf = os.path.join(args.work, f"miniupnpd-r{i}.conf")
    with open(conf, "w") as f:
        f.write(MINIUPNPD_CONF.format(router=r, i=i, lan_net=lan_net,
                                      upnp="yes" if upnp else "no"))
    p = Proc(f"miniupnpd{i}", r, [MINIUPNPD, "-d", "-f", conf, "-P",
                                   os.path.join(args.work, f"miniupnpd-r{i}.pid")])
    p.wait_for(r"HTTP listening on port" if upnp else r"(NAT-PMP|PCP)", 10)


def pluto(args, ns, cwd, argv, secs=120, stdin=None, check=True):
    cmd = ["ip", "netns", "exec", ns, args.pluto] + argv
    t0 = time.time()
    r = subprocess.run(cmd, cwd=cwd, input=stdin, capture_output=True, text=True,
                       timeout=min(secs, left()), env=clean_env())
    if check and r.returncode != 0:
        raise RuntimeError(f"pluto {' '.join(argv)} in {ns}: exit {r.returncode}\n"
                           f"{r.stdout}\n{r.stderr}")
    r.seconds = time.time() - t0
    return r


def words_of(out):
    words = []
    for line in out.splitlines():
        toks = line.split()
        if toks and toks[0].endswith(".") and toks[0][:-1].isdigit():
            words += toks[1::2]
    if len(words) != 24:
        raise RuntimeError(f"init printed no 24 words:\n{out}")
    return " ".join(words)


def tree_digest(root):
    h = hashlib.sha256()
    for d, dirs, files in sorted(os.walk(root)):
        dirs.sort()
        for f in sorted(files):
            p = os.path.join(d, f)
            h.update(os.path.relpath(p, root).encode() + b"\0")
            with open(p, "rb") as fh:
                for b in iter(lambda: fh.read(1 << 20), b""):
                    h.update(b)
    return h.hexdigest()


SINK = r"""
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", %d)); s.listen(16)
print("listening", flush=True)
while True:
    c, _ = s.accept()
    n = 0
    while True:
        b = c.recv(1 << 16)
        if not b: break
        n += len(b)
    c.sendall(str(n).encode()); c.close()
""" % BASELINE_PORT

SEND = r"""
import socket, sys, threading, time
targets = [(a, int(n)) for a, n in (x.split("=") for x in sys.argv[1:])]
buf = bytes(1 << 16)
def one(addr, n):
    s = socket.create_connection((addr, %d), timeout=60)
    left = n
    while left > 0:
        k = min(left, len(buf)); s.sendall(buf[:k]); left -= k
    s.shutdown(socket.SHUT_WR); got = int(s.recv(64)); assert got == n, (got, n)
t0 = time.time()
ts = [threading.Thread(target=one, args=t) for t in targets]
[t.start() for t in ts]; [t.join() for t in ts]
print("%%.3f" %% (time.time() - t0))
""" % BASELINE_PORT


def plain_copy(owner_ns, hosts_ns_addr, per_host):
    """Seconds a plain TCP copy of per_host[i] bytes to every host takes, all at once."""
    sinks = []
    for ns, _ in hosts_ns_addr:
        p = Proc(f"sink-{ns}", ns, [sys.executable, "-c", SINK])
        p.wait_for("listening", 10)
        sinks.append(p)
    argv = [f"{addr}={n}" for (_, addr), n in zip(hosts_ns_addr, per_host)]
    r = sh([sys.executable, "-c", SEND] + argv, ns=owner_ns, timeout=left())
    for p in sinks:
        os.killpg(p.p.pid, signal.SIGTERM)
    return float(r.stdout.strip())


def hosted_bytes(d, owner):
    tot = 0
    base = os.path.join(d, ".pluto", "hosted", owner)
    for dd, _, files in os.walk(base):
        for f in files:
            tot += os.path.getsize(os.path.join(dd, f))
    return tot


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pluto", default=os.path.join(ROOT, "target", "debug", "pluto"))
    ap.add_argument("--coordinator-bin", default=None)
    ap.add_argument("--mib", type=float, default=8, help="data the owner backs up (MiB)")
    ap.add_argument("--homes", type=int, default=5, help="hosts behind NAT")
    ap.add_argument("--symmetric", type=int, nargs="*", default=[5],
                    help="homes (1..N) behind a symmetric NAT (default: the last one)")
    ap.add_argument("--rate", default="50mbit", help="each home's link, each way (tbf)")
    ap.add_argument("--delay-ms", type=float, default=10, help="one-way delay per home link")
    ap.add_argument("--loss", type=float, default=0.0, help="loss per home link (0.005 = 0.5 %%)")
    ap.add_argument("--outage", action="store_true",
                    help="take home1's link down for 20 s in the middle of the push")
    ap.add_argument("--no-baseline", action="store_true")
    ap.add_argument("--no-upnp", dest="upnp", action="store_false",
                    help="no miniupnpd on the routers (the relay-only figures)")
    ap.add_argument("--no-upnp-on", type=int, nargs="*", default=[],
                    help="cone homes whose router runs no UPnP (reached by hole punching)")
    ap.add_argument("--natpmp-only-on", type=int, nargs="*", default=[],
                    help="cone homes whose router speaks NAT-PMP but not UPnP-IGD")
    ap.add_argument("--late-upnp", type=int, nargs="*", default=[],
                    help="homes whose router starts miniupnpd only after their node started "
                         "(the node maps at its next try, 30 s on, and announces again)")
    ap.add_argument("--limit", type=float, default=170, help="seconds for the whole run")
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args()
    deadline[0] = time.time() + args.limit
    args.coordinator_bin = args.coordinator_bin or os.path.join(
        os.path.dirname(args.pluto), "pluto-coordinator")
    for b in (args.pluto, args.coordinator_bin):
        if not os.access(b, os.X_OK):
            log(f"FAILED: {b} is missing (cargo build -p pluto -p pluto-coordinator)")
            return 1

    if os.geteuid() != 0:
        print("netlab: SKIPPED: network namespaces need root (this is uid %d)" % os.geteuid())
        return 0
    for tool in ("ip", "iptables", "tc"):
        if not shutil.which(tool):
            log(f"FAILED: {tool} is missing: scripts/test-deps --only iproute2 iptables")
            return 1
    if args.upnp and not (os.access(MINIUPNPD, os.X_OK) and shutil.which("iptables-legacy")):
        log(f"FAILED: {MINIUPNPD} or iptables-legacy is missing: scripts/test-deps --only "
            "miniupnpd-iptables (or run with --no-upnp)")
        return 1
    probe = f"plprobe{os.getpid()}"
    r = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if r.returncode != 0:
        print(f"netlab: SKIPPED: this kernel refuses network namespaces: {r.stderr.strip()}")
        return 0
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)

    work = tempfile.mkdtemp(prefix="pluto-netlab-")
    args.work = work
    if args.delay_ms > 0:
        args.nfdelay = os.path.join(work, "nfdelay")
        r = subprocess.run(["gcc", "-O2", "-o", args.nfdelay, os.path.join(HERE, "nfdelay.c"),
                            "-lnetfilter_queue", "-lnfnetlink"], capture_output=True, text=True)
        if r.returncode != 0:
            log("FAILED: cannot build nfdelay (scripts/test-deps --only libnetfilter-queue-dev):",
                r.stderr.strip())
            return 1
    tag = f"nl{os.getpid() % 10000}"
    figures = {"mib": args.mib, "rate": args.rate, "delay_ms_each_way": args.delay_ms,
               "loss": args.loss, "homes": args.homes, "symmetric": args.symmetric,
               "upnp": args.upnp}
    ok = False
    t_start = time.time()
    try:
        nodes, homes = build_topology(args, tag)
        log(f"topology up: coordinator, {len(PUBLIC)} public hosts, {args.homes} hosts behind "
            f"NAT, the owner behind NAT; {args.rate}, {args.delay_ms} ms each way, "
            f"loss {args.loss} on home links; UPnP-IGD (miniupnpd) on routers "
            f"{[i for i, h in enumerate(homes) if h['upnp']] or 'none'}")
        cdir = os.path.join(work, "coordinator")
        coord = Proc("coordinator", nodes["coordinator"],
                     [args.coordinator_bin, "--data", cdir, "--listen", f"{COORD_IP}:1883",
                      "--relay-listen", f"{COORD_IP}:8443", "--ping-interval", "10"],
                     env={"PLUTO_LOG": "info,rmqtt=warn"})
        coord.wait_for(r"^mqtt ", 30)
        url = f"mqtt://{COORD_IP}:1883"
        hosts = [(f"pub{i + 1}", nodes[f"pub{i + 1}"]) for i in range(len(PUBLIC))]
        hosts += [(f"home{i}", homes[i]["ns"]) for i in range(1, args.homes + 1)]
        serving = {}
        for name, ns in hosts:
            d = os.path.join(work, name)
            os.makedirs(d)
            pluto(args, ns, d, ["init"])
            serving[name] = Proc(name, ns, [args.pluto, "serve", "--coordinator", url,
                                            "--listen", "0.0.0.0:7447", "--offer", "4G",
                                            "--push-every", "0", "--challenge-every", "0"],
                                 cwd=d)
        for i in args.late_upnp:
            if homes[i]["upnp"]:
                serving[f"home{i}"].wait_for(r"^not reachable", 40)
                start_miniupnpd(args, homes[i]["router"], i, f"192.168.{100 + i}.0/24",
                                upnp=i not in args.natpmp_only_on)
        reach, mapped, mapped_by = {}, {}, {}
        upnp_homes = {f"home{i}" for i, h in enumerate(homes) if h["upnp"]}
        for name, p in serving.items():
            m = p.wait_for(r"^(reachable at|not reachable)", 40)
            if name in upnp_homes:
                # a mapping that came after the first announce is announced again: its
                # dial-back says so in a later line
                late = int(name[4:]) in args.late_upnp
                try:
                    m = p.wait_for(r"^(reachable at)", 60 if late else 20)
                except RuntimeError:
                    pass
                pm = [l for l in p.lines if l.startswith("port mapped by the router")]
                mapped[name] = pm[0].split("announcing ", 1)[1].split()[0] if pm else None
                mapped_by[name] = pm[0].split("(", 1)[1].split(")", 1)[0] if pm else None
            reach[name] = "reachable" if m.group(1) == "reachable at" else "unreachable"
        log("reachability as the coordinator's dial-back found it:",
            ", ".join(f"{k} {v}" for k, v in reach.items()))
        figures["reachability"] = reach
        figures["mapped"] = mapped
        figures["mapped_by"] = mapped_by
        # the late homes: unreachable at the first announce, reachable after the mapping
        # appeared and the node announced again (on the same session)
        figures["late_upnp"] = args.late_upnp
        figures["reachable_after_late_mapping"] = [
            f"home{i}" for i in args.late_upnp
            if reach.get(f"home{i}") == "reachable" and homes[i]["upnp"] and
            [l.split()[0] for l in serving[f"home{i}"].lines
             if l.startswith(("not reachable", "reachable at", "port mapped"))][:3] ==
            ["not", "port", "reachable"]]
        if os.environ.get("NETLAB_DEBUG"):
            for name, p in list(serving.items()) + [("coordinator", coord)]:
                log(name, "\n    " + "\n    ".join(p.lines))
            for h in homes:
                if h["upnp"]:
                    log(h["router"], "forwards:", forwards(h["router"]))

        owner_ns = homes[0]["ns"]
        a = os.path.join(work, "owner")
        data = os.path.join(a, "data")
        os.makedirs(data)
        n = int(args.mib * (1 << 20))
        with open(os.path.join(data, "blob"), "wb") as f:
            left_b = n
            while left_b > 0:
                k = min(left_b, 4 << 20)
                f.write(os.urandom(k))
                left_b -= k
        with open(os.path.join(data, "note.txt"), "w") as f:
            f.write("hello from behind a NAT\n")
        words = words_of(pluto(args, owner_ns, a, ["init"]).stdout)
        pluto(args, owner_ns, a, ["snapshot", "-q"], secs=300)
        owner = Proc("owner", owner_ns, [args.pluto, "serve", "--coordinator", url, "--listen",
                                         "0.0.0.0:7447", "--offer", "4G", "--push-every", "0",
                                         "--challenge-every", "0"], cwd=a)
        owner.wait_for(r"8 host\(s\) matched", 60)

        outage = None
        if args.outage:
            r1 = homes[1]["router"]
            def cut():
                time.sleep(max(2.0, args.outage_at))
                log("home1's link goes down for 20 s")
                sh(["ip", "link", "set", "wan", "down"], ns=r1, check=False)
                time.sleep(20)
                sh(["ip", "link", "set", "wan", "up"], ns=r1, check=False)
                log("home1's link is back")
            args.outage_at = 3.0
            outage = threading.Thread(target=cut, daemon=True)
            outage.start()
        r = pluto(args, owner_ns, a, ["push", "--scheme", "4/8"], secs=left(), check=False)
        if outage:
            outage.join(timeout=left())
        figures["push_seconds"] = round(r.seconds, 2)
        figures["push_exit"] = r.returncode
        sys.stdout.write("".join("  push: " + l + "\n" for l in (r.stdout + r.stderr).splitlines()
                                 if "%" not in l))
        m = re.search(r"Paths: (\d+) host\(s\) direct, (\d+) through the relay; (\d+) of (\d+) "
                      r"bytes through the relay", r.stdout)
        if m:
            figures["hosts_direct"] = int(m.group(1))
            figures["hosts_relayed"] = int(m.group(2))
            figures["bytes_relayed"] = int(m.group(3))
            figures["bytes_pushed"] = int(m.group(4))
            figures["relayed_share"] = round(int(m.group(3)) / max(1, int(m.group(4))), 3)
        m = re.search(r"(\d+) host\(s\) reached by hole punching", r.stdout)
        figures["hosts_punched"] = int(m.group(1)) if m else 0
        if r.returncode != 0:
            raise RuntimeError(f"push failed (exit {r.returncode})")

        owner_id = pluto(args, owner_ns, a, ["status", "--json"]).stdout
        owner_id = json.loads(owner_id).get("node") or json.loads(owner_id).get("node_id")
        per_host = [hosted_bytes(os.path.join(work, name), owner_id) for name, _ in hosts]
        figures["bytes_per_host"] = per_host
        if not args.no_baseline:
            targets = [(nodes[name], PUBLIC[i]) if name.startswith("pub") else
                       (homes[int(name[4:])]["ns"], homes[int(name[4:])]["wan"])
                       for i, (name, _) in enumerate(hosts)]
            base = plain_copy(owner_ns, targets, per_host)
            figures["plain_tcp_seconds"] = round(base, 2)
            figures["ratio_to_plain_tcp"] = round(base / max(0.001, r.seconds), 3)

        # The owner's disk dies; a new machine (in the owner's home) has only the words.
        before = forwards(homes[0]["router"]) if homes[0]["upnp"] else 0
        owner.p.send_signal(signal.SIGTERM)
        if homes[0]["upnp"]:
            # a node that stops removes its port mapping from the router
            try:
                owner.p.wait(timeout=min(15, left()))
            except subprocess.TimeoutExpired:
                pass
            had = any(l.startswith("port mapped by the router") for l in owner.lines)
            after = forwards(homes[0]["router"])
            figures["owner_forwards_before_after_stop"] = [before, after]
            figures["owner_mapping_removed_on_stop"] = had and before == 1 and after == 0
        fresh = os.path.join(work, "new-machine")
        os.makedirs(fresh)
        repo = os.path.join(fresh, ".pluto")
        pluto(args, owner_ns, fresh, ["init", "--recover", "--repo", repo], stdin=words + "\n")
        t0 = time.time()
        pr = pluto(args, owner_ns, fresh, ["--repo", repo, "pull", "--coordinator", url],
                   secs=left(), check=False)
        figures["pull_seconds"] = round(time.time() - t0, 2)
        if pr.returncode != 0:
            raise RuntimeError(f"pull failed: {pr.stdout}\n{pr.stderr}")
        restored = os.path.join(work, "restored")
        pluto(args, owner_ns, fresh, ["--repo", repo, "checkout", "latest", "--target",
                                      restored], secs=left())
        same = tree_digest(data) == tree_digest(os.path.join(restored, "data")) \
            if os.path.isdir(os.path.join(restored, "data")) else \
            tree_digest(data) == tree_digest(restored)
        figures["restored_identical"] = same
        if not same:
            raise RuntimeError("the restored tree differs from the original")
        ok = True
    except Exception as e:  # report, clean up, fail
        log("FAILED:", e)
        for name, p in procs:
            if name in ("coordinator",) and p.poll() is not None:
                pass
    finally:
        figures["seconds"] = round(time.time() - t_start, 1)
        cleanup()
        shutil.rmtree(work, ignore_errors=True)
    print("netlab: figures " + json.dumps(figures, sort_keys=True))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=2, sort_keys=True)
    log("PASSED" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    def on_signal(s, _):
        cleanup()
        sys.exit(128 + s)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        sys.exit(main())
    finally:
        cleanup()
