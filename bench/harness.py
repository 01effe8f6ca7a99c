#!/usr/bin/env python3
"""carpd benchmark harness: carpd vs Debian's ucarp and keepalived, side by side.

Everything runs in network namespaces named carpb-<pid>-*, on documentation
addresses only (198.51.100.0/24, 2001:db8::/64, 198.18.0.0/15). Every namespace
and process is removed on exit, Ctrl-C and errors included. Scenarios are
measurements, never assertions: the harness fails only when a scenario cannot
run at all. See docs/benchmarks.md.
"""

import argparse
import atexit
import datetime
import json
import os
import platform
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

TAG = os.environ.get("CARPB_TAG", f"carpb-{os.getpid()}")
WORK = tempfile.mkdtemp(prefix=TAG + "-")
NAMESPACES = []
PROCS = []
CARPD = os.environ.get("CARPD", "carpd")
CARPCTL = os.environ.get("CARPCTL", "carpctl")
# The packet generator (bench/plot's carpd-bench-flood): junk protocol 112 floods and UDP streams.
FLOOD = os.environ.get("CARPB_FLOOD") or os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                       "plot/target/release/carpd-bench-flood")
SOAK_FLOOD_PPS = 50000
# Above the CPU hogs, or eight of them on two CPUs hold the generator well below its rate.
FLOOD_NICE = ["nice", "-n", "-10"]
PASS = "bench-secret"
VIP = "198.51.100.50"
PING_INTERVAL = 0.01
VERBOSE = False


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def vlog(msg):
    if VERBOSE:
        log(msg)


# ---------------------------------------------------------------- cleanup


def cleanup():
    for p in PROCS:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    for ns in list(NAMESPACES):
        kill_ns_pids(ns)
    for ns in reversed(NAMESPACES):
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=20)
    NAMESPACES.clear()
    for p in PROCS:
        try:
            p.wait(timeout=2)
        except Exception:
            pass
    if not os.environ.get("CARPB_KEEP_WORK"):
        shutil.rmtree(WORK, ignore_errors=True)


def kill_ns_pids(ns):
    r = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True, timeout=10)
    for pid in r.stdout.split():
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass


def on_signal(signum, _frame):
    raise KeyboardInterrupt(f"signal {signum}")


atexit.register(cleanup)
signal.signal(signal.SIGTERM, on_signal)
signal.signal(signal.SIGHUP, on_signal)


# ---------------------------------------------------------------- helpers


def run(cmd, check=True, timeout=60, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {r.stderr.strip()}")
    return r


def ip(*args, check=True):
    return run(["ip", *args], check=check)


def nsx(ns, cmd):
    return ["ip", "netns", "exec", ns, *cmd]


def wait_until(pred, timeout, step=0.01):
    end = time.time() + timeout
    while time.time() < end:
        v = pred()
        if v:
            return v
        time.sleep(step)
    return None


def summary(values):
    v = [x for x in values if x is not None]
    if not v:
        return {"n": 0, "median": None, "min": None, "max": None, "values": values}
    return {
        "n": len(v),
        "median": round(statistics.median(v), 3),
        "min": round(min(v), 3),
        "max": round(max(v), 3),
        "values": [None if x is None else round(x, 3) for x in values],
    }


# ---------------------------------------------------------------- topology


class Lan:
    """A switch namespace with `nifs` bridges and one namespace per host.

    Host number k (11, 12, ... and 100 for the client) has eth0 with
    198.51.100.k/24 and 2001:db8::k/64, and eth<i> (i >= 1) with 198.18.i.k/24,
    each eth<i> on bridge br<i> of the switch.
    """

    def __init__(self, name, nodes, nifs=1, client=True):
        self.name = name
        self.nifs = nifs
        self.sw = self.ns("sw")
        self.hosts = {}
        add_ns(self.sw)
        for i in range(nifs):
            ip("-n", self.sw, "link", "add", f"br{i}", "type", "bridge", "mcast_snooping", "0")
            ip("-n", self.sw, "link", "set", f"br{i}", "up")
        names = list(nodes) + (["client"] if client else [])
        for idx, node in enumerate(names):
            k = 100 if node == "client" else 11 + idx
            self.hosts[node] = k
            ns = self.ns(node)
            add_ns(ns)
            for key in ["net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0"]:
                run(nsx(ns, ["sysctl", "-qw", key]))
            ip("-n", ns, "link", "set", "lo", "up")
            for i in range(nifs):
                port = f"p{idx}-{i}"
                ip("-n", self.sw, "link", "add", port, "type", "veth", "peer", "name", f"eth{i}", "netns", ns)
                ip("-n", self.sw, "link", "set", port, "master", f"br{i}", "up")
                if i == 0:
                    ip("-n", ns, "addr", "add", f"198.51.100.{k}/24", "dev", "eth0")
                    ip("-n", ns, "addr", "add", f"2001:db8::{k}/64", "dev", "eth0", "nodad")
                else:
                    ip("-n", ns, "addr", "add", f"198.18.{i}.{k}/24", "dev", f"eth{i}")
                ip("-n", ns, "link", "set", f"eth{i}", "up")

    def ns(self, node):
        return f"{TAG}-{self.name}-{node}"

    def addr(self, node, i=0):
        k = self.hosts[node]
        return f"198.51.100.{k}" if i == 0 else f"198.18.{i}.{k}"

    def port(self, node, i=0):
        return f"p{list(self.hosts).index(node)}-{i}"

    def reset_node(self, node):
        """Link up, leftover virtual addresses and macvlans removed (between repetitions)."""
        ns = self.ns(node)
        kill_ns_pids(ns)
        for i in range(self.nifs):
            ip("-n", ns, "link", "set", f"eth{i}", "up", check=False)
        out = ip("-n", ns, "-o", "link", "show", check=False).stdout
        for m in re.finditer(r"^\d+: (carp[^:@]+)", out, re.M):
            ip("-n", ns, "link", "del", m.group(1), check=False)
        for i in range(self.nifs):
            keep = {f"198.51.100.{self.hosts[node]}", f"2001:db8::{self.hosts[node]}", f"198.18.{i}.{self.hosts[node]}"}
            out = ip("-n", ns, "-o", "addr", "show", "dev", f"eth{i}", "scope", "global", check=False).stdout
            extra = [a for a in re.findall(r"inet6? (\S+)", out) if a.split("/")[0] not in keep]
            if len(extra) > 50:
                ip("-n", ns, "addr", "flush", "dev", f"eth{i}", check=False)
                if i == 0:
                    ip("-n", ns, "addr", "add", f"198.51.100.{self.hosts[node]}/24", "dev", "eth0", check=False)
                    ip("-n", ns, "addr", "add", f"2001:db8::{self.hosts[node]}/64", "dev", "eth0", "nodad", check=False)
                else:
                    ip("-n", ns, "addr", "add", f"198.18.{i}.{self.hosts[node]}/24", "dev", f"eth{i}", check=False)
            else:
                for a in extra:
                    ip("-n", ns, "addr", "del", a, "dev", f"eth{i}", check=False)

    def destroy(self):
        for node in list(self.hosts) + ["sw"]:
            ns = self.ns(node)
            kill_ns_pids(ns)
            run(["ip", "netns", "del", ns], check=False)
            if ns in NAMESPACES:
                NAMESPACES.remove(ns)


def add_ns(ns):
    ip("netns", "add", ns)
    NAMESPACES.append(ns)


# ---------------------------------------------------------------- processes


MASTER_RE = re.compile(r"-> MASTER|Entering MASTER STATE|Switching to state: MASTER")
BACKUP_RE = re.compile(r"-> BACKUP|Entering BACKUP STATE|Switching to state: BACKUP")
INIT_RE = re.compile(r"-> INIT|Entering FAULT STATE")


class Proc:
    """A daemon in a namespace; its output lines are time-stamped as they arrive."""

    def __init__(self, name, cmd, logfile=None, stamp=True, only=None):
        self.name = name
        self.only = re.compile(only) if only else None  # lines of other vhosts do not count as events
        self.events = []  # (time, "MASTER"|"BACKUP"|"INIT", line)
        self.lines = []
        self.path = logfile or os.path.join(WORK, f"{name}.log")
        out = open(self.path, "a")
        out.write(f"# {' '.join(cmd)}\n")
        out.flush()
        if stamp:
            self.p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, start_new_session=True, text=True)
            self.t = threading.Thread(target=self._read, args=(out,), daemon=True)
            self.t.start()
        else:
            self.p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                      start_new_session=True)
            out.close()
        PROCS.append(self.p)

    def _read(self, out):
        for line in self.p.stdout:
            t = time.time()
            line = line.rstrip("\n")
            out.write(f"{t:.6f} {line}\n")
            out.flush()
            self.lines.append((t, line))
            if self.only and not self.only.search(line):
                continue
            if MASTER_RE.search(line):
                self.events.append((t, "MASTER", line))
            elif BACKUP_RE.search(line):
                self.events.append((t, "BACKUP", line))
            elif INIT_RE.search(line):
                self.events.append((t, "INIT", line))
        out.close()

    @property
    def pid(self):
        return self.p.pid

    def state(self):
        return self.events[-1][1] if self.events else None

    def first_after(self, t0, state):
        for t, s, _ in self.events:
            if t >= t0 and s == state:
                return t
        return None

    def count(self, state, since=0.0):
        return sum(1 for t, s, _ in self.events if s == state and t >= since)

    def send(self, sig, group=False):
        try:
            if group:
                os.killpg(self.p.pid, sig)
            else:
                os.kill(self.p.pid, sig)
        except ProcessLookupError:
            pass

    def stop(self, sig=signal.SIGKILL, timeout=5):
        self.send(sig, group=True)
        try:
            self.p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.send(signal.SIGKILL, group=True)
            self.p.wait(timeout=5)

    def alive(self):
        return self.p.poll() is None

    def all_pids(self):
        """The process and all its descendants."""
        pids, todo = [], [self.p.pid]
        while todo:
            pid = todo.pop()
            pids.append(pid)
            try:
                for task in os.listdir(f"/proc/{pid}/task"):
                    with open(f"/proc/{pid}/task/{task}/children") as f:
                        todo.extend(int(c) for c in f.read().split())
            except (FileNotFoundError, ProcessLookupError):
                pass
        return pids


# ---------------------------------------------------------------- implementations


def keepalived_prio(advskew):
    """VRRP priority whose skew (256 - prio)/256 s mirrors CARP advskew/256 s."""
    return max(1, min(254, 256 - advskew))


_HELP = []


def carpd_has(word):
    """Whether `carpd run --help` mentions word: options of later branches are detected, not assumed."""
    if not _HELP:
        _HELP.append(run([CARPD, "run", "--help"], check=False).stdout)
    return word in _HELP[0]


class NotAvailable:
    """A row this build or peer cannot do; the report shows it as n/a with the reason."""

    def __init__(self, name, why):
        self.name = name
        self.why = why


class Impl:
    name = "?"

    def start(self, lan, node, vhid=1, advbase=1, advskew=0, preempt=False, initial_master=False,
              addresses=None, extra=None):
        raise NotImplementedError

    def make_master(self, lan, node, proc):
        """Hasten the initial election where the implementation allows it."""


class Carpd(Impl):
    name = "carpd"

    def __init__(self, master_down=None, lladdr="virtual", name=None, flags=(), vrrp=False):
        # master_down None: the daemon's default (auto: FreeBSD's 3 x advbase + advskew/256 for
        # advbase >= 1, OpenBSD's for advbase 0).
        self.master_down = master_down
        self.lladdr = lladdr
        self.flags = list(flags)
        self.vrrp = vrrp  # carpver 3 vrrpprio P vrrpinterval CS, priority from advskew as for keepalived
        if master_down:
            self.name = f"carpd-{master_down}"
        if name:
            self.name = name

    def control(self, lan, node):
        return os.path.join(WORK, f"{lan.name}-{node}.sock")

    def start(self, lan, node, vhid=1, advbase=1, advskew=0, preempt=False, initial_master=False,
              addresses=None, extra=None, config=None, only=None, **_):
        ns = lan.ns(node)
        state = os.path.join(WORK, f"state-{lan.name}-{node}")
        os.makedirs(state, exist_ok=True)
        cmd = [CARPD, "run", "--log-level", "4", "--control", self.control(lan, node), "--state-dir", state,
               *self.flags]
        if preempt:
            cmd.append("--preempt")
        if config:
            cmd += ["--config", config]
        else:
            addresses = addresses or [f"{VIP}/24"]
            cmd += ["carpdev", "eth0", "vhid", str(vhid)]
            if self.vrrp:
                cmd += ["carpver", "3", "vrrpprio", str(keepalived_prio(advskew)),
                        "vrrpinterval", str(max(1, round(advbase * 100)))]
            else:
                cmd += ["advbase", str(advbase), "advskew", str(advskew), "pass", PASS]
            cmd += ["lladdr", self.lladdr]
            if self.master_down:
                cmd += ["master-down", self.master_down]
            cmd += addresses
        p = Proc(f"{lan.name}-{node}-{self.name}", nsx(ns, cmd), stamp=config is None or extra == "stamp", only=only)
        if not wait_until(lambda: os.path.exists(self.control(lan, node)), 10):
            raise RuntimeError(f"carpd on {node} did not open its control socket; see {p.path}")
        if initial_master:
            self.make_master(lan, node, p)
        return p

    def make_master(self, lan, node, proc):
        # carpctl state VHID master: skip the initial 3 x advbase wait of a fresh node.
        time.sleep(0.05)
        run([CARPCTL, "--control", self.control(lan, node), "state", "1", "master"], check=False)

    def demote(self, lan, node):
        run([CARPCTL, "--control", self.control(lan, node), "demote"])

    def status(self, lan, node):
        r = run([CARPCTL, "--control", self.control(lan, node), "status", "--json"], check=False)
        try:
            return json.loads(r.stdout)
        except ValueError:
            return None


class Keepalived(Impl):
    name = "keepalived"

    def __init__(self, version=2, name=None, extra_global=""):
        self.version = version
        self.extra_global = extra_global
        if name:
            self.name = name

    def conf(self, lan, node, instances, preempt, initial_master, extra_global=""):
        lines = ["global_defs {", f"  router_id {lan.name}-{node}", f"  vrrp_version {self.version}",
                 "  vrrp_garp_master_repeat 1", extra_global, "}"]
        for inst in instances:
            lines += [
                f"vrrp_instance VI_{inst['iface']}_{inst['vhid']} {{",
                f"  state {'MASTER' if initial_master else 'BACKUP'}",
                f"  interface eth{inst['iface']}",
                f"  virtual_router_id {inst['vhid']}",
                f"  priority {inst['prio']}",
                f"  advert_int {inst['advert_int']}",
            ]
            if not preempt and not initial_master:
                lines.append("  nopreempt")
            lines.append("  virtual_ipaddress {")
            lines += [f"    {a}" for a in inst["vips"]]
            lines.append("  }")
            if inst.get("excluded"):
                lines.append("  virtual_ipaddress_excluded {")
                lines += [f"    {a}" for a in inst["excluded"]]
                lines.append("  }")
            lines.append("}")
        path = os.path.join(WORK, f"ka-{lan.name}-{node}.conf")
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")
        return path

    def start(self, lan, node, vhid=1, advbase=1, advskew=0, preempt=False, initial_master=False,
              addresses=None, extra=None, instances=None, advert_int=None, stamp=True, excluded=None, prio=None,
              only=None, **_):
        if instances is None:
            instances = [{"iface": 0, "vhid": vhid, "prio": prio or keepalived_prio(advskew),
                          "advert_int": advert_int if advert_int is not None else advbase,
                          "vips": addresses or [f"{VIP}/24"], "excluded": excluded}]
        conf = self.conf(lan, node, instances, preempt, initial_master, self.extra_global)
        base = os.path.join(WORK, f"ka-{lan.name}-{node}")
        for suffix in (".pid", ".vrrp.pid", ".chk.pid", ".bfd.pid"):
            # A killed keepalived leaves its pid files, and a new one refuses to start.
            if os.path.exists(base + suffix):
                os.unlink(base + suffix)
        cmd = ["keepalived", "-n", "-l", "-D", "-G", "-P", "-f", conf, "-p", base + ".pid",
               "-r", base + ".vrrp.pid", "-c", base + ".chk.pid", "-b", base + ".bfd.pid"]
        return Proc(f"{lan.name}-{node}-{self.name}", nsx(lan.ns(node), cmd), stamp=stamp, only=only)


class Ucarp(Impl):
    name = "ucarp"

    def scripts(self):
        up = os.path.join(WORK, "ucarp-up.sh")
        down = os.path.join(WORK, "ucarp-down.sh")
        if not os.path.exists(up):
            with open(up, "w") as f:
                f.write('#!/bin/sh\n[ -n "$UCARP_MARK" ] && echo UCARP-UP\n'
                        'exec ip addr add "$2/${UCARP_PREFIX:-24}" dev "$1" 2>/dev/null\n')
            with open(down, "w") as f:
                f.write('#!/bin/sh\n[ -n "$UCARP_MARK" ] && echo UCARP-DOWN\n'
                        'exec ip addr del "$2/${UCARP_PREFIX:-24}" dev "$1" 2>/dev/null\n')
            os.chmod(up, 0o755)
            os.chmod(down, 0o755)
        return up, down

    def cmd(self, lan, node, iface, vhid, advbase, advskew, preempt, vip):
        up, down = self.scripts()
        c = ["ucarp", "-i", f"eth{iface}", "-s", lan.addr(node, iface), "-v", str(vhid), "-p", PASS,
             "-a", vip, "-b", str(advbase), "-k", str(advskew), "-u", up, "-d", down, "-z", "-n"]
        if preempt:
            c.append("-P")
        return c

    def start(self, lan, node, vhid=1, advbase=1, advskew=0, preempt=False, initial_master=False,
              addresses=None, extra=None, **_):
        vip = (addresses or [VIP])[0].split("/")[0]
        cmd = ["env", "UCARP_MARK=1", *self.cmd(lan, node, 0, vhid, advbase, advskew, preempt, vip)]
        return Proc(f"{lan.name}-{node}-ucarp", nsx(lan.ns(node), cmd))


# ---------------------------------------------------------------- client probes


class Pinger:
    """ping -D -O every 10 ms from the client; the outage is the longest gap between answers."""

    def __init__(self, lan, target=VIP):
        self.answered = {}  # seq -> reception time
        self.sent = 0
        self.p = subprocess.Popen(
            nsx(lan.ns("client"), ["ping", "-n", "-D", "-O", "-W", "0.2", "-i", str(PING_INTERVAL), target]),
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            start_new_session=True)
        PROCS.append(self.p)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.p.stdout:
            m = re.search(r"icmp_seq=(\d+)", line)
            if not m:
                continue
            seq = int(m.group(1))
            self.sent = max(self.sent, seq)
            if "bytes from" in line:
                ts = re.match(r"\[(\d+\.\d+)\]", line)
                if ts:
                    self.answered.setdefault(seq, float(ts.group(1)))

    def mark(self):
        return self.sent

    def last_answer(self):
        return max(self.answered.values(), default=0.0)

    def healthy_since(self, t, span=0.3):
        """True when answers have flowed without a gap since `span` seconds after time t."""
        items = sorted(x for x in dict(self.answered).values() if x > t)
        if not items or items[-1] - items[0] < span:
            return False
        tail = [x for x in items if x > items[-1] - span]
        return len(tail) >= span / PING_INTERVAL * 0.5

    def outage_since(self, seq0):
        ans = sorted((s, t) for s, t in dict(self.answered).items())
        base = [t for s, t in ans if s < seq0]
        prev = base[-1] if base else None
        longest = 0.0
        for s, t in ans:
            if s < seq0:
                continue
            if prev is not None:
                longest = max(longest, t - prev - PING_INTERVAL)
            prev = t
        answered = {s for s, _ in ans}
        lost = sum(1 for s in range(seq0, self.sent + 1) if s not in answered)
        return max(longest, 0.0), lost

    def stop(self):
        try:
            os.killpg(self.p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.p.wait(timeout=5)


# ---------------------------------------------------------------- scenarios


def bound(impl, advbase, advskew, prio=None, version=2, advert_int=None):
    """Protocol upper bound on master-down for a backup with these settings (seconds)."""
    if isinstance(impl, Keepalived):
        ai = advert_int if advert_int is not None else advbase
        skew = (256 - prio) / 256 * (ai if version == 3 else 1)
        return 3 * ai + skew
    if isinstance(impl, Carpd) and impl.vrrp:
        return bound(Keepalived(3), advbase, advskew, keepalived_prio(advskew), 3, advbase)
    if isinstance(impl, Carpd) and (impl.master_down == "openbsd" or (impl.master_down is None and advbase == 0)):
        return 3 * max(advbase + advskew / 256, 1 / 256)
    return 3 * advbase + advskew / 256


def start_pair(impl, lan, advbase, skew_a, skew_b, preempt=False, **kw):
    for n in ("a", "b"):
        lan.reset_node(n)
    pa = impl.start(lan, "a", advbase=advbase, advskew=skew_a, preempt=preempt, initial_master=True, **kw)
    if not wait_until(lambda: pa.state() == "MASTER", 10 + 4 * max(advbase, 1)):
        raise RuntimeError(f"{impl.name}: node a never became MASTER; see {pa.path}")
    pb = impl.start(lan, "b", advbase=advbase, advskew=skew_b, preempt=preempt, **kw)
    wait_until(lambda: pb.state() == "BACKUP", 5)
    time.sleep(0.3)
    wait_until(lambda: pa.state() == "MASTER" and pb.state() == "BACKUP", 3)
    if pb.state() == "MASTER" or pa.state() != "MASTER":
        raise RuntimeError(f"{impl.name}: unexpected roles a={pa.state()} b={pb.state()}")
    return pa, pb


def start_pinger(lan):
    pinger = Pinger(lan)
    if not wait_until(lambda: len(pinger.answered) > 30, 5):
        pinger.stop()
        raise RuntimeError("the client gets no answers from the virtual address before the test")
    return pinger


def crash_rep(impl, lan, mode, advbase, skew_b, skew_a=0, **kw):
    pa, pb = start_pair(impl, lan, advbase, skew_a, skew_b, **kw)
    pinger = start_pinger(lan)
    try:
        # Crash at a random phase of the master's advertisement interval.
        time.sleep(random.uniform(0, advbase + skew_a / 256))
        seq0, t0 = pinger.mark(), time.time()
        if mode == "linkdown":
            ip("-n", lan.ns("a"), "link", "set", "eth0", "down")
        elif mode == "kill9main":
            # The daemon's main process alone: helpers it left (carpd's guard, keepalived's VRRP child) live on.
            pa.send(signal.SIGKILL)
        else:
            pa.stop(signal.SIGKILL)
        limit = 3 * advbase + 10
        tm = wait_until(lambda: pb.first_after(t0, "MASTER"), limit)
        wait_until(lambda: pinger.healthy_since(t0 + 0.02), 10)
        time.sleep(0.3)
        outage, lost = pinger.outage_since(seq0)
        return {"takeover_s": None if tm is None else tm - t0, "outage_s": outage, "lost": lost}
    finally:
        pinger.stop()
        pa.stop()
        pb.stop()


def repeat(fn, reps, label):
    out = []
    for r in range(reps):
        try:
            res = fn()
        except RuntimeError as e:
            log(f"   {label} rep {r + 1}: could not run: {e}")
            res = {"error": str(e)}
        vlog(f"   {label} rep {r + 1}: {res}")
        out.append(res)
    agg = {}
    keys = {k for r in out for k in r if k != "error"}
    for k in sorted(keys):
        agg[k] = summary([r.get(k) for r in out])
    agg["errors"] = [r["error"] for r in out if "error" in r]
    return agg


def fmt(agg, key="outage_s", scale=1000, unit="ms"):
    s = agg.get(key)
    if not s or s["median"] is None:
        return "n/a"
    return f"{s['median'] * scale:.0f} {unit} [{s['min'] * scale:.0f}..{s['max'] * scale:.0f}]"


def scenario_crash(impls, reps):
    lan = Lan("crash", ["a", "b"])
    rows = []
    try:
        for mode in ("linkdown", "kill9"):
            for skew_b in (0, 100):
                for impl in impls:
                    # At advskew 0 both formulas give 3 x advbase: the openbsd column is the default's twin.
                    if isinstance(impl, Carpd) and impl.master_down == "openbsd" and skew_b == 0:
                        continue
                    agg = repeat(lambda: crash_rep(impl, lan, mode, 1, skew_b), reps, f"crash {mode} {impl.name} skew {skew_b}")
                    row = {"impl": impl.name, "mode": mode, "advbase": 1, "advskew_backup": skew_b,
                           "bound_s": round(bound(impl, 1, skew_b, keepalived_prio(skew_b)), 3), **agg}
                    log(f"crash {mode:8} {impl.name:14} backup advskew {skew_b:3}: takeover {fmt(agg, 'takeover_s')}, "
                        f"client outage {fmt(agg)} (bound {row['bound_s'] * 1000:.0f} ms)")
                    rows.append(row)
    finally:
        lan.destroy()
    return rows


def switch_rep(impl, lan, how):
    pa, pb = start_pair(impl, lan, 1, 0, 100)
    pinger = start_pinger(lan)
    try:
        time.sleep(random.uniform(0, 1))
        seq0, t0 = pinger.mark(), time.time()
        if how == "demote":
            impl.demote(lan, "a")
        else:
            pa.send(signal.SIGTERM)
        tm = wait_until(lambda: pb.first_after(t0, "MASTER"), 10)
        wait_until(lambda: pinger.healthy_since(t0 + 0.02, 0.5), 10)
        time.sleep(0.3)
        outage, lost = pinger.outage_since(seq0)
        return {"takeover_s": None if tm is None else tm - t0, "outage_s": outage, "lost": lost}
    finally:
        pinger.stop()
        pa.stop()
        pb.stop()


def scenario_switchover(impls, reps):
    lan = Lan("switch", ["a", "b"])
    rows = []
    try:
        for impl in impls:
            hows = ["sigterm", "demote"] if isinstance(impl, Carpd) else ["sigterm"]
            for how in hows:
                agg = repeat(lambda: switch_rep(impl, lan, how), reps, f"switchover {impl.name} {how}")
                row = {"impl": impl.name, "how": how, **agg}
                log(f"switchover {impl.name:10} {how:8}: takeover {fmt(agg, 'takeover_s')}, client outage {fmt(agg)}, "
                    f"lost probes {fmt(agg, 'lost', 1, '')}")
                rows.append(row)
    finally:
        lan.destroy()
    return rows


def preempt_rep(impl, lan):
    for n in ("a", "b"):
        lan.reset_node(n)
    pb = impl.start(lan, "b", advbase=1, advskew=100, preempt=True, initial_master=True)
    if not wait_until(lambda: pb.state() == "MASTER", 10):
        raise RuntimeError(f"{impl.name}: node b never became MASTER")
    pinger = start_pinger(lan)
    pa = None
    try:
        seq0, t0 = pinger.mark(), time.time()
        pa = impl.start(lan, "a", advbase=1, advskew=0, preempt=True)
        ta = wait_until(lambda: pa.first_after(t0, "MASTER"), 10)
        wait_until(lambda: pb.first_after(t0, "BACKUP"), 5)
        time.sleep(1.0)
        outage, lost = pinger.outage_since(seq0)
        return {"join_to_master_s": None if ta is None else ta - t0, "outage_s": outage, "lost": lost}
    finally:
        pinger.stop()
        pb.stop()
        if pa:
            pa.stop()


def scenario_preempt(impls, reps):
    lan = Lan("preempt", ["a", "b"])
    rows = []
    try:
        for impl in impls:
            agg = repeat(lambda: preempt_rep(impl, lan), reps, f"preempt {impl.name}")
            rows.append({"impl": impl.name, **agg})
            log(f"preemption {impl.name:10}: join->MASTER {fmt(agg, 'join_to_master_s')}, client outage {fmt(agg)}, "
                f"lost {fmt(agg, 'lost', 1, '')}")
    finally:
        lan.destroy()
    return rows


# ---------------------------------------------------------------- sub-second


SUB = {  # implementation -> (start keyword arguments, advskew a, advskew b)
    # carpd: advbase 0, advskew 0 / 1: intervals 1/256 s (the floor) and 2/256 s.
    "carpd": ({"advbase": 0}, 0, 1),
    "carpd-realtime": ({"advbase": 0}, 0, 1),
    # ucarp -b 0 -k 0 would advertise with no interval at all: the nearest it can do.
    "ucarp": ({"advbase": 0}, 1, 2),
    # keepalived 10 ms adverts, priorities 254 / 253 (advskew 0 and 1 would both clamp to 254).
    "keepalived": ({"advbase": 0, "advert_int": 0.01}, 2, 3),
    "keepalived-realtime": ({"advbase": 0, "advert_int": 0.01}, 2, 3),
}
SUB_EXTRA = 100  # other vhosts at advbase 1 on the same daemon(s)
KA_RT = "  vrrp_rt_priority 10\n  vrrp_no_swap"  # carpd --realtime's default SCHED_FIFO priority is 10


def sub_impls(impls):
    out = []
    for i in impls:
        if isinstance(i, Carpd):
            out.append(Carpd(name="carpd"))
            out.append(Carpd(name="carpd-realtime", flags=["--realtime"]) if carpd_has("--realtime")
                       else NotAvailable("carpd-realtime", "carpd run has no --realtime"))
        elif isinstance(i, Keepalived):
            out += [Keepalived(3), Keepalived(3, name="keepalived-realtime", extra_global=KA_RT)]
        else:
            out.append(i)
    return out


def sub_bound(impl):
    kw, _, sb = SUB[impl.name]
    if isinstance(impl, Keepalived):
        return bound(impl, 0, sb, keepalived_prio(sb), version=3, advert_int=kw["advert_int"])
    return bound(impl, kw["advbase"], sb)


def sub_settings(impl):
    kw, sa, sb = SUB[impl.name]
    if isinstance(impl, Keepalived):
        rt = ", vrrp_rt_priority 10, vrrp_no_swap" if impl.extra_global else ""
        return f"VRRPv3 advert_int {kw['advert_int']}, priority {keepalived_prio(sa)}/{keepalived_prio(sb)}{rt}"
    rt = ", --realtime" if isinstance(impl, Carpd) and impl.flags else ""
    return f"advbase {kw['advbase']}, advskew {sa}/{sb}{rt}"


def sub_start(impl, lan, node, master):
    """The sub-second vhost (vhid 1) plus SUB_EXTRA vhosts at advbase 1 on the same daemon.

    Returns (the process whose events are vhid 1's, every process of the node)."""
    kw, sa, sb = SUB[impl.name]
    skew = sa if master else sb
    extra = [(v, f"198.19.0.{v}/32") for v in range(2, 2 + SUB_EXTRA)]
    if isinstance(impl, Carpd):
        path = os.path.join(WORK, f"sub-{lan.name}-{node}.toml")
        with open(path, "w") as f:
            f.write("log_level = 4\n")
            f.write(f'[[vhost]]\ncarpdev = "eth0"\nvhid = 1\nadvbase = {kw["advbase"]}\nadvskew = {skew}\n'
                    f'pass = "{PASS}"\naddresses = ["{VIP}/24"]\n')
            for v, a in extra:
                f.write(f'[[vhost]]\ncarpdev = "eth0"\nvhid = {v}\nadvbase = 1\nadvskew = {0 if master else 100}\n'
                        f'pass = "{PASS}"\naddresses = ["{a}"]\n')
        p = impl.start(lan, node, config=path, extra="stamp", only=r"vhid 1@eth0:", initial_master=master)
        return p, [p]
    if isinstance(impl, Keepalived):
        inst = [{"iface": 0, "vhid": 1, "prio": keepalived_prio(skew), "advert_int": kw["advert_int"],
                 "vips": [f"{VIP}/24"]}]
        inst += [{"iface": 0, "vhid": v, "prio": keepalived_prio(0 if master else 100), "advert_int": 1,
                  "vips": [a]} for v, a in extra]
        p = impl.start(lan, node, instances=inst, initial_master=master, only=r"VI_0_1\)")
        return p, [p]
    p = impl.start(lan, node, advbase=kw["advbase"], advskew=skew)
    procs = [p]
    logf = os.path.join(WORK, f"sub-{lan.name}-{node}-ucarp-extra.log")
    for v, a in extra:
        cmd = ["env", "UCARP_PREFIX=32", *impl.cmd(lan, node, 0, v, 1, 0 if master else 100, False, a.split("/")[0])]
        procs.append(Proc(f"ucarp-{lan.name}-{node}-{v}", nsx(lan.ns(node), cmd), logfile=logf, stamp=False))
    return p, procs


def sub_pair(impl, lan):
    for n in ("a", "b"):
        lan.reset_node(n)
    procs = []
    try:
        pa, pa_all = sub_start(impl, lan, "a", True)
        procs += pa_all
        if not wait_until(lambda: pa.state() == "MASTER", 15):
            raise RuntimeError(f"{impl.name}: node a never became MASTER; see {pa.path}")
        pb, pb_all = sub_start(impl, lan, "b", False)
        procs += pb_all
        wait_until(lambda: pb.state() == "BACKUP", 5)
        # The other vhosts: a must hold them before the measurement starts.
        wait_until(lambda: vip_count(lan, "a") >= SUB_EXTRA, 15, 0.2)
        time.sleep(0.5)
        if pb.state() == "MASTER" or pa.state() != "MASTER":
            raise RuntimeError(f"{impl.name}: unexpected roles a={pa.state()} b={pb.state()}")
        return pa, pb, procs
    except BaseException:
        for p in procs:
            p.stop()
        raise


def linkdown_measure(lan, pb, pinger, phase):
    time.sleep(random.uniform(0, phase))
    seq0, t0 = pinger.mark(), time.time()
    ip("-n", lan.ns("a"), "link", "set", "eth0", "down")
    tm = wait_until(lambda: pb.first_after(t0, "MASTER"), 10)
    wait_until(lambda: pinger.healthy_since(t0 + 0.02), 10)
    time.sleep(0.3)
    outage, lost = pinger.outage_since(seq0)
    return {"takeover_s": None if tm is None else tm - t0, "outage_s": outage, "lost": lost}


def sub_crash_rep(impl, lan):
    kw, sa, _ = SUB[impl.name]
    pa, pb, procs = sub_pair(impl, lan)
    pinger = start_pinger(lan)
    try:
        return linkdown_measure(lan, pb, pinger, kw.get("advert_int", max(sa, 1) / 256))
    finally:
        pinger.stop()
        for p in procs:
            p.stop()


def load_start(lan, seconds):
    """The soak's load: 8 CPU hogs and memory churn over both nodes, a 50,000/s junk flood on the LAN."""
    procs = []
    for n in ("a", "b"):
        procs.append(Proc(f"stress-cpu-{lan.name}-{n}", nsx(lan.ns(n), ["stress-ng", "--cpu", "4", "--timeout",
                                                                         f"{seconds}s"]), stamp=False))
        procs.append(Proc(f"stress-vm-{lan.name}-{n}", nsx(lan.ns(n), ["stress-ng", "--vm", "1", "--vm-bytes", "512M",
                                                                        "--timeout", f"{seconds}s"]), stamp=False))
    flood = Proc(f"flood-{lan.name}", nsx(lan.ns("f"), [*FLOOD_NICE, FLOOD, "junk", "224.0.0.18",
                                                         str(SOAK_FLOOD_PPS), str(seconds)]))
    return procs, flood


def flood_result(flood, timeout=15):
    """The flood generator's closing JSON line."""
    try:
        flood.p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        flood.stop()
    time.sleep(0.1)
    for _, line in reversed(flood.lines):
        if line.startswith("{"):
            return json.loads(line)
    return None


def ms(v):
    return "n/a" if v is None else f"{v * 1000:.0f} ms"


def scenario_subsecond(impls, reps, soak_s):
    rows = []
    for i, impl in enumerate(impls):
        if isinstance(impl, NotAvailable):
            rows.append({"impl": impl.name, "na": impl.why})
            continue
        lan = Lan(f"sub{i}", ["a", "b", "f"])
        ip("-n", lan.ns("f"), "route", "add", "224.0.0.0/4", "dev", "eth0")
        try:
            agg = repeat(lambda: sub_crash_rep(impl, lan), reps, f"sub-second {impl.name}")
            row = {"impl": impl.name, "settings": sub_settings(impl), "bound_s": round(sub_bound(impl), 4),
                   "extra_vhosts": SUB_EXTRA, **agg}
            rows.append(row)
            log(f"sub-second crash {impl.name:19} ({row['settings']}): takeover {fmt(agg, 'takeover_s')}, "
                f"client outage {fmt(agg)} (bound {row['bound_s'] * 1000:.1f} ms)")
            # Soak: this pair alone on the machine's load, then one crash under the same load.
            try:
                pa, pb, procs = sub_pair(impl, lan)
            except RuntimeError as e:
                # ucarp at -b 0 may never settle into MASTER/BACKUP: the row keeps its crash figures.
                log(f"sub-second soak {impl.name}: could not run: {e}")
                row["soak_error"] = str(e)
                continue
            pinger = start_pinger(lan)
            load, flood = load_start(lan, soak_s + 15)
            try:
                time.sleep(1)
                t0 = time.time()
                log(f"sub-second soak {impl.name}: {soak_s} s, 2 x stress-ng --cpu 4, 2 x stress-ng --vm 1 "
                    f"--vm-bytes 512M, junk flood {SOAK_FLOOD_PPS}/s, {SUB_EXTRA} other vhosts")
                seq0 = pinger.mark()
                load1 = []
                while time.time() < t0 + soak_s:
                    time.sleep(max(0.0, min(5, t0 + soak_s - time.time())))
                    load1.append(os.getloadavg()[0])
                row["soak_s"] = soak_s
                row["false_failovers"] = pb.count("MASTER", t0)
                row["master_lost_role"] = pa.count("BACKUP", t0) + pa.count("INIT", t0)
                row["soak_client_max_gap_s"] = round(pinger.outage_since(seq0)[0], 4)
                row["soak_load1_max"] = round(max(load1), 2) if load1 else None
                if pb.state() != "MASTER" and pa.state() == "MASTER":
                    loaded = linkdown_measure(lan, pb, pinger, SUB[impl.name][0].get("advert_int", 1 / 256))
                    row.update({f"loaded_{k}": v for k, v in loaded.items()})
                fl = flood_result(flood, soak_s + 30)
                row["soak_flood_pps"] = round(fl["sent"] / fl["seconds"]) if fl else None
                log(f"sub-second soak {impl.name:19}: {row['false_failovers']} false failovers, master lost its "
                    f"role {row['master_lost_role']} times, longest client gap {row['soak_client_max_gap_s'] * 1000:.0f}"
                    f" ms; crash under load: takeover {ms(row.get('loaded_takeover_s'))}, outage "
                    f"{ms(row.get('loaded_outage_s'))}; flood {row['soak_flood_pps']}/s")
            finally:
                for p in load + [flood]:
                    p.stop()
                pinger.stop()
                for p in procs:
                    p.stop()
        finally:
            lan.destroy()
    return rows


# ---------------------------------------------------------------- junk flood


def carpd_stats(impl, lan, node):
    r = run([CARPCTL, "--control", impl.control(lan, node), "stats", "--json"], check=False)
    try:
        return json.loads(r.stdout)
    except ValueError:
        return {}


def flood_rep(impl, lan, rate, seconds, threads):
    pa, pb = start_pair(impl, lan, 1, 0, 100)
    try:
        pids_a, pids_b = pa.all_pids(), pb.all_pids()
        time.sleep(0.5)
        st0 = (carpd_stats(impl, lan, "a"), carpd_stats(impl, lan, "b")) if isinstance(impl, Carpd) else None
        c0a, c0b = sum(map(proc_cpu, pids_a)), sum(map(proc_cpu, pids_b))
        t0 = time.time()
        flood = Proc(f"flood-{lan.name}-{impl.name}-{rate}", nsx(lan.ns("f"), [*FLOOD_NICE, FLOOD, "junk", "224.0.0.18", str(rate),
                                                                             str(seconds), str(threads)]))
        fl = flood_result(flood, seconds + 30)
        t1 = time.time()
        c1a, c1b = sum(map(proc_cpu, pids_a)), sum(map(proc_cpu, pids_b))
        time.sleep(3.5)  # a backup that lost adverts in the flood's last second shows it now
        res = {
            "sent_pps": None if not fl else fl["sent"] / fl["seconds"],
            "cpu_pct_master": (c1a - c0a) / (t1 - t0) * 100,
            "cpu_pct_backup": (c1b - c0b) / (t1 - t0) * 100,
            "false_failovers_backup": pb.count("MASTER", t0),
            "false_failovers_master": pa.count("BACKUP", t0) + pa.count("INIT", t0),
        }
        if fl and fl["sent"]:
            res["cpu_ns_per_junk_backup"] = (c1b - c0b) / fl["sent"] * 1e9
        if st0:
            sa, sb = carpd_stats(impl, lan, "a"), carpd_stats(impl, lan, "b")
            sent = sa.get("opackets", 0) - st0[0].get("opackets", 0)
            got = sb.get("accepted", 0) - st0[1].get("accepted", 0)
            # Over the flood plus the 3.5 s after it, so both counts cover the same adverts.
            res["adverts_sent_master"] = sent
            res["adverts_missed_backup"] = max(0, sent - got)
        return res
    finally:
        pa.stop()
        pb.stop()


def scenario_flood(impls, reps, quick):
    lan = Lan("flood", ["a", "b", "f"])
    ip("-n", lan.ns("f"), "route", "add", "224.0.0.0/4", "dev", "eth0")
    rows = []
    try:
        for label, rate, seconds, threads in (("50k", 50000, 5 if quick else 30, 1), ("max", 1000000, 10, 4)):
            for impl in impls:
                agg = repeat(lambda: flood_rep(impl, lan, rate, seconds, threads), 1 if quick else max(1, reps // 2),
                             f"flood {label} {impl.name}")
                row = {"impl": impl.name, "flood": label, "target_pps": rate, "seconds": seconds, **agg}
                rows.append(row)
                log(f"flood {label:3} {impl.name:10}: sent {fmt(agg, 'sent_pps', 1, '/s')}, CPU master "
                    f"{fmt(agg, 'cpu_pct_master', 1, '%')} backup {fmt(agg, 'cpu_pct_backup', 1, '%')}, false "
                    f"failovers {fmt(agg, 'false_failovers_backup', 1, '')} (backup) "
                    f"{fmt(agg, 'false_failovers_master', 1, '')} (master), adverts missed "
                    f"{fmt(agg, 'adverts_missed_backup', 1, '')}")
    finally:
        lan.destroy()
    return rows


# ---------------------------------------------------------------- daemon crash


def dkill_impls(impls):
    out = []
    for i in impls:
        if isinstance(i, Carpd):
            guard = carpd_has("guard")
            out.append(Carpd(name="carpd" if guard else "carpd (no guard in this build)"))
            out.append(Carpd(name="carpd --no-guard", flags=["--no-guard"]) if carpd_has("--no-guard")
                       else NotAvailable("carpd --no-guard", "carpd run has no --no-guard"))
        else:
            out.append(i)
    return out


def scenario_daemonkill(impls, reps):
    lan = Lan("dkill", ["a", "b"])
    rows = []
    try:
        for impl in impls:
            if isinstance(impl, NotAvailable):
                rows.append({"impl": impl.name, "na": impl.why})
                continue
            agg = repeat(lambda: crash_rep(impl, lan, "kill9main", 1, 100), reps, f"daemon kill {impl.name}")
            rows.append({"impl": impl.name, "advskew_backup": 100, "bound_s": round(bound(impl, 1, 100,
                                                                                           keepalived_prio(100)), 3),
                         **agg})
            log(f"daemon kill -9 {impl.name:30}: takeover {fmt(agg, 'takeover_s')}, client outage {fmt(agg)}")
    finally:
        lan.destroy()
    return rows


# ---------------------------------------------------------------- VRRPv3


def scenario_vrrp3(impls, reps):
    lan = Lan("vrrp3", ["a", "b"])
    rows = []
    peers = []
    for i in impls:
        if isinstance(i, Carpd):
            peers.append(Carpd(name="carpd", vrrp=True))
        elif isinstance(i, Keepalived):
            peers.append(Keepalived(3))
        else:
            rows.append({"impl": i.name, "na": "no VRRP"})
    try:
        for skew_b in (0, 100):
            for impl in peers:
                agg = repeat(lambda: crash_rep(impl, lan, "linkdown", 1, skew_b), reps, f"vrrp3 {impl.name} {skew_b}")
                row = {"impl": impl.name, "prio_master": keepalived_prio(0), "prio_backup": keepalived_prio(skew_b),
                       "interval_cs": 100, "bound_s": round(bound(impl, 1, skew_b, keepalived_prio(skew_b), 3, 1), 3),
                       "advskew_backup": skew_b, **agg}
                rows.append(row)
                log(f"VRRPv3 crash {impl.name:10} priority 254/{keepalived_prio(skew_b)}: takeover "
                    f"{fmt(agg, 'takeover_s')}, client outage {fmt(agg)} (bound {row['bound_s'] * 1000:.0f} ms)")
    finally:
        lan.destroy()
    return rows


# ---------------------------------------------------------------- balancing datapath


def snmp(ns, group, field):
    out = run(nsx(ns, ["cat", "/proc/net/snmp"])).stdout.splitlines()
    for head, vals in zip(out, out[1:]):
        if head.startswith(group + ":") and vals.startswith(group + ":") and field in head.split():
            return int(vals.split()[head.split().index(field)])
    return 0


def rx_packets(ns, dev="eth0"):
    out = run(nsx(ns, ["cat", f"/sys/class/net/{dev}/statistics/rx_packets"])).stdout
    return int(out.strip() or 0)


def balance_rep(lan, balanced, seconds):
    impl = Carpd()
    for n in ("a", "b"):
        lan.reset_node(n)
    # The other mode's virtual MAC would stay in the client's cache (unicast 00:00:5e:00:01:01 vs the
    # balanced leader's multicast 01:00:5e:00:01:01).
    ip("-n", lan.ns("client"), "neigh", "flush", "all", check=False)
    procs = []
    try:
        for node, nodes in (("a", "1:0,2:100"), ("b", "1:100,2:0")):
            ns = lan.ns(node)
            state = os.path.join(WORK, f"state-{lan.name}-{node}")
            os.makedirs(state, exist_ok=True)
            cmd = [CARPD, "run", "--log-level", "4", "--control", impl.control(lan, node), "--state-dir", state]
            if balanced:
                cmd += ["--preempt", "carpdev", "eth0", "carpnodes", nodes, "balancing", "ip"]
            else:
                cmd += ["carpdev", "eth0", "vhid", "1", "advskew", "0" if node == "a" else "100"]
            cmd += ["pass", PASS, f"{VIP}/24"]
            p = Proc(f"{lan.name}-{node}-{'ip' if balanced else 'none'}", nsx(ns, cmd))
            procs.append(p)
            if not wait_until(lambda: os.path.exists(impl.control(lan, node)), 10):
                raise RuntimeError(f"carpd on {node} did not start; see {p.path}")
            if node == "a":
                impl.make_master(lan, "a", p)
        # Every node settles (the backup of each takes 3 x advbase to learn its master is there).
        time.sleep(4)
        ping = run(nsx(lan.ns("client"), ["ping", "-c", "10", "-i", "0.2", "-w", "6", VIP]), check=False)
        if ping.returncode != 0:
            neigh = ip("-n", lan.ns("client"), "neigh", "show", check=False).stdout.strip()
            raise RuntimeError(f"the client cannot reach {VIP} ({'ip balancing' if balanced else 'no balancing'}; "
                               f"its neighbours: {neigh})")
        before = {n: (snmp(lan.ns(n), "Ip", "InReceives"), rx_packets(lan.ns(n))) for n in ("a", "b")}
        fl = run(nsx(lan.ns("client"), [FLOOD, "udp", VIP, "0", str(seconds), "1"]), timeout=seconds + 30).stdout
        fl = json.loads(fl.strip().splitlines()[-1])
        after = {n: (snmp(lan.ns(n), "Ip", "InReceives"), rx_packets(lan.ns(n))) for n in ("a", "b")}
        delivered = sum(after[n][0] - before[n][0] for n in ("a", "b"))
        frames = sum(after[n][1] - before[n][1] for n in ("a", "b"))
        return {"sent_pps": fl["sent"] / fl["seconds"], "delivered_pps": delivered / fl["seconds"],
                "frames_in_pps": frames / fl["seconds"], "delivered_share": delivered / max(1, fl["sent"])}
    finally:
        for p in procs:
            p.stop()


def scenario_balance(impls, reps, quick):
    if not any(isinstance(i, Carpd) for i in impls):
        return []
    lan = Lan("bal", ["a", "b"])
    rows = []
    try:
        for balanced in (False, True):
            agg = repeat(lambda: balance_rep(lan, balanced, 3 if quick else 10), reps, f"balance {balanced}")
            rows.append({"impl": "carpd", "balancing": "ip" if balanced else "none", **agg})
            log(f"balancing {'ip' if balanced else 'none':4}: client sends {fmt(agg, 'sent_pps', 1, '/s')}, "
                f"VIP hosts deliver {fmt(agg, 'delivered_pps', 1, '/s')}, frames in {fmt(agg, 'frames_in_pps', 1, '/s')}")
        for i in impls:
            if not isinstance(i, Carpd):
                rows.append({"impl": i.name, "na": "no load balancing"})
    finally:
        lan.destroy()
    return rows


# ---------------------------------------------------------------- scale


def proc_cpu(pid):
    """CPU seconds used so far by all threads of pid (schedstat: nanoseconds, finer than clock ticks)."""
    total = 0
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                total += int(f.read().split()[0])
    except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
        pass
    return total / 1e9


def proc_mem(pid):
    """(VmHWM, Pss) in KiB."""
    hwm = pss = 0
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    hwm = int(line.split()[1])
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    pss = int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return hwm, pss


def layout(n):
    """Spread n vhosts over as few interfaces as vhid <= 255 allows: [(iface, vhid), ...]."""
    nifs = -(-n // 255)
    per = -(-n // nifs)
    return [(i // per, i % per + 1) for i in range(n)], nifs


def scale_start(impl, lan, node, n, skew):
    vh, _ = layout(n)
    if isinstance(impl, Carpd):
        path = os.path.join(WORK, f"scale-{lan.name}-{node}.toml")
        with open(path, "w") as f:
            f.write("log_level = 2\n")
            for iface, vhid in vh:
                f.write(f'[[vhost]]\ncarpdev = "eth{iface}"\nvhid = {vhid}\nadvbase = 1\nadvskew = {skew}\n'
                        f'pass = "{PASS}"\naddresses = ["198.19.{iface}.{vhid}/32"]\nlladdr = "{impl.lladdr}"\n')
        return [impl.start(lan, node, config=path)]
    if isinstance(impl, Keepalived):
        inst = [{"iface": i, "vhid": v, "prio": keepalived_prio(skew), "advert_int": 1,
                 "vips": [f"198.19.{i}.{v}/32"]} for i, v in vh]
        return [impl.start(lan, node, instances=inst, initial_master=(skew == 0), stamp=False)]
    procs = []
    logf = os.path.join(WORK, f"scale-{lan.name}-{node}-ucarp.log")
    for iface, vhid in vh:
        cmd = ["env", "UCARP_PREFIX=32", *impl.cmd(lan, node, iface, vhid, 1, skew, False, f"198.19.{iface}.{vhid}")]
        procs.append(Proc(f"ucarp-{node}-{iface}-{vhid}", nsx(lan.ns(node), cmd), logfile=logf, stamp=False))
    return procs


def vip_count(lan, node, prefix="198.19."):
    out = ip("-n", lan.ns(node), "-o", "addr", "show", check=False).stdout
    return len(re.findall(r"inet6? " + re.escape(prefix), out))


def scale_one(impl, n, window):
    vh, nifs = layout(n)
    lan = Lan(f"scale{n}", ["a", "b"], nifs=nifs, client=False)
    procs = []
    try:
        t_start = time.time()
        pa = scale_start(impl, lan, "a", n, 0)
        procs += pa
        if not wait_until(lambda: vip_count(lan, "a") >= n, 30, 0.2):
            raise RuntimeError(f"{impl.name}: only {vip_count(lan, 'a')} of {n} addresses on the master")
        t_all = time.time() - t_start
        pb = scale_start(impl, lan, "b", n, 100)
        procs += pb
        time.sleep(5)
        if vip_count(lan, "b") > 0:
            log(f"   warning: {impl.name} backup holds {vip_count(lan, 'b')} addresses")
        pids_a = [q for p in pa for q in p.all_pids()]
        pids_b = [q for p in pb for q in p.all_pids()]
        caps = []
        for i in range(nifs):
            f = os.path.join(WORK, f"scale{n}-{impl.name}-{i}.pcap")
            caps.append((f, Proc(f"tcpdump-{n}-{i}", nsx(lan.sw, ["tcpdump", "-i", lan.port("a", i), "-Q", "in", "-n",
                                                                  "-B", "8192", "-w", f, "ip proto 112"]), stamp=False)))
        time.sleep(1.0)
        c0a, c0b = sum(map(proc_cpu, pids_a)), sum(map(proc_cpu, pids_b))
        w0 = time.time()
        time.sleep(window)
        w1 = time.time()
        c1a, c1b = sum(map(proc_cpu, pids_a)), sum(map(proc_cpu, pids_b))
        time.sleep(0.5)
        for _, p in caps:
            p.stop(signal.SIGINT)
        mem_a = [proc_mem(p) for p in pids_a]
        mem_b = [proc_mem(p) for p in pids_b]
        times = {}
        for i, (f, _) in enumerate(caps):
            out = run(["tcpdump", "-r", f, "-n", "-tt"], check=False, timeout=120).stdout
            for line in out.splitlines():
                m = re.match(r"(\d+\.\d+) .*vrid (\d+)", line)
                if m:
                    times.setdefault((i, int(m.group(2))), []).append(float(m.group(1)))
        count = sum(1 for ts in times.values() for t in ts if w0 <= t < w1)
        gaps = []
        for ts in times.values():
            ts.sort()
            gaps += [b - a for a, b in zip(ts, ts[1:]) if w0 - 1.5 <= a and b < w1 + 0.5]
        missing = n - len(times)
        res = {
            "impl": impl.name, "vhosts": n, "interfaces": nifs, "window_s": round(w1 - w0, 2),
            "processes_master": len(pids_a), "processes_backup": len(pids_b),
            "startup_all_master_s": round(t_all, 2),
            "cpu_s_per_min_master": round((c1a - c0a) / (w1 - w0) * 60, 3),
            "cpu_s_per_min_backup": round((c1b - c0b) / (w1 - w0) * 60, 3),
            "vmhwm_kib_master": sum(h for h, _ in mem_a), "pss_kib_master": sum(p for _, p in mem_a),
            "vmhwm_kib_backup": sum(h for h, _ in mem_b), "pss_kib_backup": sum(p for _, p in mem_b),
            "adverts_per_s": round(count / (w1 - w0), 1), "expected_per_s": float(n),
            "late_gaps": sum(1 for g in gaps if g > 1.5), "max_gap_s": round(max(gaps), 3) if gaps else None,
            "silent_vhosts": missing,
        }
        return res
    finally:
        for p in procs:
            p.stop()
        lan.destroy()


def scenario_scale(impls, sizes, window):
    rows = []
    for n in sizes:
        for impl in impls:
            try:
                r = scale_one(impl, n, window)
            except RuntimeError as e:
                log(f"scale {impl.name} {n}: could not run: {e}")
                rows.append({"impl": impl.name, "vhosts": n, "error": str(e)})
                continue
            rows.append(r)
            log(f"scale {n:4} {impl.name:10}: cpu {r['cpu_s_per_min_master']:.3f}/{r['cpu_s_per_min_backup']:.3f} s/min "
                f"(master/backup), VmHWM {r['vmhwm_kib_master'] / 1024:.1f} MiB (Pss {r['pss_kib_master'] / 1024:.1f}), "
                f"adverts {r['adverts_per_s']}/s of {n}, late gaps {r['late_gaps']}, max gap {r['max_gap_s']} s")
    return rows


# ---------------------------------------------------------------- many addresses


def many_addrs(n4, n6):
    """n4 + n6 addresses, plus the on-link VIP of each family that the client routes them through."""
    v4 = [VIP] + [f"198.18.{4 + i // 250}.{1 + i % 250}" for i in range(n4)]
    v6 = ["2001:db8::50"] + [f"2001:db8:1::{i + 1:x}" for i in range(n6)]
    return v4, v6


def many_prefix(a):
    return a + ("/24" if a == VIP else "/64" if a == "2001:db8::50" else "/128" if ":" in a else "/32")


def many_rep(impl, lan, n4, n6, sweep_groups=10):
    v4, v6 = many_addrs(n4, n6)
    targets = v4[1:] + v6[1:]
    for n in ("a", "b"):
        lan.reset_node(n)
    if isinstance(impl, Carpd):
        procs = []
        for node, skew in (("a", 0), ("b", 100)):
            path = os.path.join(WORK, f"many-{node}.toml")
            with open(path, "w") as f:
                f.write(f'log_level = 4\n[[vhost]]\ncarpdev = "eth0"\nvhid = 1\nadvbase = 1\nadvskew = {skew}\n'
                        f'pass = "{PASS}"\naddresses = [{", ".join(json.dumps(many_prefix(a)) for a in v4 + v6)}]\n')
            procs.append((path, skew))
        pa = impl.start(lan, "a", config=procs[0][0], initial_master=True, extra="stamp")
    else:
        vips = [many_prefix(v4[0])]
        excl = [many_prefix(a) for a in v4[1:] + v6]
        pa = impl.start(lan, "a", advskew=0, initial_master=True, addresses=vips, excluded=excl)
    pb = None
    sweeps = []
    try:
        if not wait_until(lambda: vip_count(lan, "a", "198.18.") + vip_count(lan, "a", "2001:db8:1:") >= len(targets), 60, 0.2):
            raise RuntimeError(f"{impl.name}: master holds {vip_count(lan, 'a', '198.18.')} IPv4 and "
                               f"{vip_count(lan, 'a', '2001:db8:1:')} IPv6 of the addresses")
        if isinstance(impl, Carpd):
            pb = impl.start(lan, "b", config=procs[1][0], extra="stamp")
        else:
            pb = impl.start(lan, "b", advskew=100, addresses=vips, excluded=excl)
        wait_until(lambda: pb.state() == "BACKUP", 10)
        time.sleep(1)
        # Warm the client's neighbour caches: every address answers before the takeover.
        r = run(nsx(lan.ns("client"), ["fping", "-q", "-c", "1", "-i", "1", "-t", "500", *targets]), check=False, timeout=60)
        unreachable_before = len(re.findall(r"xmt/rcv/%loss = 1/0", r.stderr))
        # Parallel fping loops, each over 1/sweep_groups of the addresses, every address every ~period ms.
        per = -(-len(targets) // sweep_groups)
        period = max(int(per * 1.1), 50)
        for g in range(sweep_groups):
            chunk = targets[g * per:(g + 1) * per]
            sweeps.append(Proc(f"fping-{g}", nsx(lan.ns("client"), ["fping", "-l", "-D", "-p", str(period), "-i", "1",
                                                                     "-t", "100", *chunk])))
        time.sleep(period / 1000 * 2 + 0.5)
        t0 = time.time()
        ip("-n", lan.ns("a"), "link", "set", "eth0", "down")
        tm = wait_until(lambda: pb.first_after(t0, "MASTER"), 15)
        if tm is None:
            raise RuntimeError(f"{impl.name}: backup never became MASTER")
        ti = wait_until(lambda: vip_count(lan, "b", "198.18.") + vip_count(lan, "b", "2001:db8:1:") >= len(targets), 30, 0.05)
        ti = time.time() if ti else None
        first = {}

        def all_answered():
            first.clear()
            for p in sweeps:
                for t, line in list(p.lines):
                    m = re.match(r"\[(\d+\.\d+)\] (\S+)\s+: \[\d+\], \d+ bytes", line)
                    if m and float(m.group(1)) > t0:
                        first.setdefault(m.group(2), float(m.group(1)))
            return len(first) >= len(targets)

        done = wait_until(all_answered, 30, 0.25)
        all_answered()
        last = max(first.values()) if first else None
        last4 = max((t for a, t in first.items() if ":" not in a), default=None)
        last6 = max((t for a, t in first.items() if ":" in a), default=None)
        return {
            "decision_s": tm - t0,
            "installed_after_decision_s": None if ti is None else ti - tm,
            "all_reachable_after_decision_s": None if not done else last - tm,
            "ipv4_reachable_after_decision_s": None if last4 is None else last4 - tm,
            "ipv6_reachable_after_decision_s": None if last6 is None else last6 - tm,
            "unreachable_before": unreachable_before,
            "unreachable_after": len(targets) - len(first),
            "probe_round_s": period / 1000,
        }
    finally:
        for p in sweeps:
            p.stop()
        pa.stop()
        if pb:
            pb.stop()


def scenario_many(impls, reps, n4, n6):
    lan = Lan("many", ["a", "b"])
    # Through the on-link VIP of each family: the kernel's neighbour tables are shared by all
    # namespaces (gc_thresh3 1024), so 2000 on-link neighbours would overflow them.
    ip("-n", lan.ns("client"), "route", "add", "198.18.0.0/15", "via", VIP)
    ip("-n", lan.ns("client"), "-6", "route", "add", "2001:db8:1::/64", "via", "2001:db8::50")
    rows = []
    try:
        for impl in impls:
            if isinstance(impl, Ucarp):
                rows.append({"impl": impl.name, "na": "ucarp manages exactly one IPv4 address per process"})
                continue
            agg = repeat(lambda: many_rep(impl, lan, n4, n6), reps, f"many {impl.name}")
            rows.append({"impl": impl.name, "ipv4": n4, "ipv6": n6, **agg})
            log(f"many addresses {impl.name:10}: decision {fmt(agg, 'decision_s')} after link down; then all "
                f"{n4}+{n6} installed {fmt(agg, 'installed_after_decision_s')}, all reachable "
                f"{fmt(agg, 'all_reachable_after_decision_s')}")
    finally:
        lan.destroy()
    return rows


# ---------------------------------------------------------------- packet path


def scenario_packet(quick):
    args = ["cargo", "bench", "-p", "carp-proto", "--bench", "packet", "--"]
    if quick:
        args += ["--warm-up-time", "1", "--measurement-time", "2"]
    root = os.environ.get("CARPB_SRC") or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    r = subprocess.run(args, cwd=root, capture_output=True, text=True, timeout=1800)
    if r.returncode != 0:
        raise RuntimeError(f"cargo bench failed: {r.stderr[-2000:]}")
    rows, name = [], None
    unit = {"ps": 1e-3, "ns": 1.0, "µs": 1e3, "us": 1e3, "ms": 1e6}
    for line in r.stdout.splitlines():
        m = re.match(r"^(\S.*?)\s+time:\s+\[(\S+) (\S+) (\S+) (\S+) (\S+) (\S+)\]", line)
        if not m:
            m2 = re.match(r"^(\S.*?)\s*$", line)
            if m2 and not line.startswith(("Benchmarking", "Found", "Gnuplot", "  ", "change", "Performance",
                                           "No change", "Change within", "Running", "Warning")):
                name = m2.group(1)
            m = re.match(r"^\s+time:\s+\[(\S+) (\S+) (\S+) (\S+) (\S+) (\S+)\]", line)
            if m and name:
                g = m.groups()
                rows.append({"bench": name, "low_ns": float(g[0]) * unit[g[1]], "median_ns": float(g[2]) * unit[g[3]],
                             "high_ns": float(g[4]) * unit[g[5]]})
            continue
        g = m.groups()
        rows.append({"bench": g[0], "low_ns": float(g[1]) * unit[g[2]], "median_ns": float(g[3]) * unit[g[4]],
                     "high_ns": float(g[5]) * unit[g[6]]})
    for row in rows:
        log(f"packet {row['bench']}: {row['median_ns']:.0f} ns [{row['low_ns']:.0f}..{row['high_ns']:.0f}]")
    return rows


# ---------------------------------------------------------------- machine


def machine():
    def out(cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=20).stdout.strip()
        except Exception:
            return None

    cpu = None
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    ver = out([CARPD, "--version"])
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    commit = out(["git", "-C", root, "rev-parse", "--short", "HEAD"])
    dirty = out(["git", "-C", root, "status", "--porcelain", "--untracked-files=no", "crates"])
    with open("/proc/meminfo") as f:
        mem = int(f.readline().split()[1])
    ka = out(["sh", "-c", "keepalived --version 2>&1"]) or ""
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(),
        "kernel": platform.release(),
        "cpu_model": cpu,
        "nproc": os.cpu_count(),
        "mem_gib": round(mem / 1024 / 1024, 1),
        "os": out(["sh", "-c", ". /etc/os-release; echo $PRETTY_NAME"]),
        "versions": {
            "carpd": f"{ver} (git {os.environ.get('CARPB_REV') or commit + (' + modified work tree' if dirty else '')})",
            "ucarp": out(["sh", "-c", "dpkg-query -W -f '${Version}' ucarp"]),
            "keepalived": (ka.splitlines() or [""])[0] + " / Debian " + (out(["sh", "-c", "dpkg-query -W -f '${Version}' keepalived"]) or ""),
            "stress-ng": out(["sh", "-c", "dpkg-query -W -f '${Version}' stress-ng"]),
            "fping": out(["sh", "-c", "dpkg-query -W -f '${Version}' fping"]),
        },
        "loadavg_start": list(os.getloadavg()),
    }


# ---------------------------------------------------------------- main


def main():
    global VERBOSE
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: fewer repetitions, short windows")
    ap.add_argument("--reps", type=int, help="repetitions of the failover-type scenarios")
    ap.add_argument("--only", default="crash,switchover,preempt,subsecond,flood,daemonkill,vrrp3,balance,scale,many,"
                                      "packet",
                    help="comma-separated scenarios")
    ap.add_argument("--soak", type=int, help="seconds of each loaded sub-second soak (default 300, quick 20)")
    ap.add_argument("--scale-sizes", default="1,100,255,1000")
    ap.add_argument("--scale-window", type=float, help="seconds of each scale measurement (default 20, quick 8)")
    ap.add_argument("--impls", default="carpd,keepalived,ucarp")
    ap.add_argument("--out", required=True, help="results JSON file")
    ap.add_argument("--verbose", action="store_true")
    a = ap.parse_args()
    VERBOSE = a.verbose
    if os.geteuid() != 0:
        sys.exit("the benchmarks create network namespaces and need root")
    reps = a.reps or (2 if a.quick else 4)
    soak = a.soak or (20 if a.quick else 300)
    window = a.scale_window or (8 if a.quick else 20)
    only = a.only.split(",")
    impls = []
    for name in a.impls.split(","):
        impls.append({"carpd": Carpd(), "keepalived": Keepalived(2), "ucarp": Ucarp()}[name])
    results = {"machine": machine(), "quick": a.quick, "reps": reps,
               "settings": {"ping_interval_s": PING_INTERVAL, "soak_s": soak, "scale_window_s": window,
                     "soak_flood_pps": SOAK_FLOOD_PPS, "sub_extra_vhosts": SUB_EXTRA,
                     "carpd_run_help_has": {w: carpd_has(w) for w in ("--realtime", "guard", "--no-guard")}}, "scenarios": {}}
    log(f"carpd benchmarks: {', '.join(only)}; {reps} repetitions; work dir {WORK}")
    started = time.time()

    def save():
        results["machine"]["loadavg_end"] = list(os.getloadavg())
        results["duration_s"] = round(time.time() - started, 1)
        os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
        with open(a.out, "w") as f:
            json.dump(results, f, indent=1)

    failed = []
    has_carpd = any(isinstance(i, Carpd) for i in impls)
    # carpd twice in the scale rows: lladdr real (the macvlan-less case) and virtual (the default).
    scale_impls = [x for i in impls for x in ([Carpd(lladdr="real"), Carpd(lladdr="virtual", name="carpd-virtual")]
                                               if isinstance(i, Carpd) else [i])]
    plan = [
        ("crash", lambda: scenario_crash(impls + ([Carpd("openbsd")] if has_carpd else []), reps)),
        ("switchover", lambda: scenario_switchover(impls, reps)),
        ("preempt", lambda: scenario_preempt(impls, reps)),
        ("subsecond", lambda: scenario_subsecond(sub_impls(impls), reps, soak)),
        ("flood", lambda: scenario_flood(impls, reps, a.quick)),
        ("daemonkill", lambda: scenario_daemonkill(dkill_impls(impls), reps)),
        ("vrrp3", lambda: scenario_vrrp3(impls, reps)),
        ("balance", lambda: scenario_balance(impls, reps, a.quick)),
        ("scale", lambda: scenario_scale(scale_impls, [int(x) for x in a.scale_sizes.split(",")], window)),
        ("many", lambda: scenario_many(impls, max(1, reps // 2) if not a.quick else 1, 1000, 1000)),
        ("packet", lambda: scenario_packet(a.quick)),
    ]
    for name, fn in plan:
        if name not in only:
            continue
        log(f"== {name}")
        t = time.time()
        try:
            results["scenarios"][name] = {"rows": fn(), "duration_s": None}
            results["scenarios"][name]["duration_s"] = round(time.time() - t, 1)
        except (RuntimeError, subprocess.SubprocessError, OSError) as e:
            log(f"{name}: could not run: {e}")
            results["scenarios"][name] = {"error": str(e)}
            failed.append(name)
        save()
    log(f"results in {a.out} after {time.time() - started:.0f} s")
    if failed:
        log(f"scenarios that could not run: {', '.join(failed)}")
        sys.exit(1)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        log("interrupted; cleaning up")
        sys.exit(130)
