#!/usr/bin/env python3
"""Markdown tables of one benchmark run: `report.py RESULTS.json > tables.md`.

Cells are "median [min..max]" over the repetitions; ratio columns are carpd's
median over the peer's (below 1 = carpd faster or smaller).
"""

import json
import sys

PEERS = ["keepalived", "ucarp"]


def cell(row, key, scale=1000, digits=0):
    s = (row or {}).get(key)
    if not s or s.get("median") is None:
        return "n/a"
    f = f"{{:.{digits}f}}"
    return f"{f.format(s['median'] * scale)} [{f.format(s['min'] * scale)}..{f.format(s['max'] * scale)}]"


def med(row, key):
    s = (row or {}).get(key)
    return s.get("median") if isinstance(s, dict) else None


def ratio(a, b):
    if a is None or b is None:
        return "n/a"
    if b == 0:
        return "n/a (peer 0)" if a else "1 (both 0)"
    return f"{a / b:.2f}"


def find(rows, **kw):
    for r in rows:
        if all(r.get(k) == v for k, v in kw.items()):
            return r
    return None


def table(head, body):
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in body]
    return "\n".join(out) + "\n"


def main():
    res = json.load(open(sys.argv[1]))
    m = res["machine"]
    sc = res["scenarios"]
    print(f"Run of {m['date']} on `{m['host']}`: {m['cpu_model']}, {m['nproc']} CPUs, {m['mem_gib']} GiB, "
          f"kernel {m['kernel']}, {m['os']}; load average at start {m['loadavg_start'][0]:.2f}, at end "
          f"{m['loadavg_end'][0]:.2f}; {res['reps']} repetitions{' (--quick)' if res['quick'] else ''}; "
          f"run took {res.get('duration_s', 0) / 60:.1f} min.\n")
    print("Versions: " + "; ".join(f"{k} {v}" for k, v in m["versions"].items()) + ".\n")
    if "crash" in sc and "rows" in sc["crash"]:
        rows = sc["crash"]["rows"]
        print("### 1. Crash failover (advbase 1, master advskew 0)\n")
        body = []
        for mode, key, what in (("linkdown", "outage_s", "client outage, link down"),
                                ("kill9", "takeover_s", "takeover, kill -9")):
            for skew in (0, 100):
                c = find(rows, impl="carpd", mode=mode, advskew_backup=skew)
                cf = find(rows, impl="carpd-freebsd", mode=mode, advskew_backup=skew)
                k = find(rows, impl="keepalived", mode=mode, advskew_backup=skew)
                u = find(rows, impl="ucarp", mode=mode, advskew_backup=skew)
                bounds = "/".join(f"{r['bound_s'] * 1000:.0f}" for r in (c, k, u) if r)
                body.append([f"{what}, backup advskew {skew}", cell(c, key), cell(cf, key) if cf else "-",
                             cell(k, key), cell(u, key), bounds, ratio(med(c, key), med(k, key)),
                             ratio(med(c, key), med(u, key))])
        print(table(["ms", "carpd", "carpd master-down freebsd", "keepalived", "ucarp",
                     "bound carpd/ka/ucarp", "carpd/keepalived", "carpd/ucarp"], body))
        body = []
        for skew in (0, 100):
            c = find(rows, impl="carpd", mode="kill9", advskew_backup=skew)
            k = find(rows, impl="keepalived", mode="kill9", advskew_backup=skew)
            u = find(rows, impl="ucarp", mode="kill9", advskew_backup=skew)
            body.append([f"backup advskew {skew}", cell(c, "outage_s"), cell(k, "outage_s"), cell(u, "outage_s")])
        print("Client outage after kill -9 alone (the dead daemon's host keeps answering for the address):\n")
        print(table(["ms", "carpd", "keepalived", "ucarp"], body))
    if "switchover" in sc and "rows" in sc["switchover"]:
        rows = sc["switchover"]["rows"]
        print("### 2. Planned switchover (backup advskew 100)\n")
        k = find(rows, impl="keepalived")
        u = find(rows, impl="ucarp")
        body = []
        for r in rows:
            body.append([f"{r['impl']} {r['how']}", cell(r, "outage_s"), cell(r, "lost", 1), cell(r, "takeover_s"),
                         ratio(med(r, "outage_s"), med(k, "outage_s")) if r["impl"] == "carpd" else "",
                         ratio(med(r, "outage_s"), med(u, "outage_s")) if r["impl"] == "carpd" else ""])
        print(table(["", "client outage ms", "lost probes (10 ms)", "takeover ms", "carpd/keepalived",
                     "carpd/ucarp"], body))
    if "preempt" in sc and "rows" in sc["preempt"]:
        rows = sc["preempt"]["rows"]
        print("### 3. Preemption (advskew 0 node joins a master with advskew 100)\n")
        c, k, u = (find(rows, impl=n) for n in ("carpd", "keepalived", "ucarp"))
        body = [[r["impl"], cell(r, "outage_s"), cell(r, "lost", 1), cell(r, "join_to_master_s")] for r in rows]
        print(table(["", "client outage ms", "lost probes", "start to MASTER ms"], body))
        print(f"Outage ratio carpd/keepalived {ratio(med(c, 'outage_s'), med(k, 'outage_s'))}, "
              f"carpd/ucarp {ratio(med(c, 'outage_s'), med(u, 'outage_s'))}.\n")
    if "subsecond" in sc and "rows" in sc["subsecond"]:
        rows = sc["subsecond"]["rows"]
        print("### 4. Sub-second mode\n")
        c, k = find(rows, impl="carpd"), find(rows, impl="keepalived")
        body = [[r["impl"], r["settings"], f"{r['bound_s'] * 1000:.0f}", cell(r, "takeover_s"), cell(r, "outage_s"),
                 f"{r.get('false_failovers', 'n/a')} in {r.get('soak_s', '?')} s"] for r in rows]
        print(table(["", "settings", "bound ms", "takeover ms", "client outage ms",
                     "false failovers under stress-ng"], body))
        print(f"Outage ratio carpd/keepalived {ratio(med(c, 'outage_s'), med(k, 'outage_s'))}; "
              f"peak 1-min load during the soak {rows[0].get('soak_load1_max')}.\n")
    if "scale" in sc and "rows" in sc["scale"]:
        rows = sc["scale"]["rows"]
        print("### 5. Scale (idle, advbase 1; master advskew 0, backup advskew 100)\n")
        body = []
        for r in rows:
            if "error" in r:
                body.append([r["vhosts"], r["impl"], "could not run: " + r["error"]] + [""] * 6)
                continue
            body.append([r["vhosts"], r["impl"], f"{r['processes_master']}",
                         f"{r['cpu_s_per_min_master']:.3f} / {r['cpu_s_per_min_backup']:.3f}",
                         f"{r['vmhwm_kib_master'] / 1024:.1f} / {r['pss_kib_master'] / 1024:.1f}",
                         f"{r['vmhwm_kib_backup'] / 1024:.1f} / {r['pss_kib_backup'] / 1024:.1f}",
                         f"{r['adverts_per_s']:.1f} / {r['expected_per_s']:.0f}",
                         f"{r['late_gaps']} ({r['max_gap_s']} s)", f"{r['startup_all_master_s']}"])
        print(table(["vhosts", "impl", "processes", "CPU s/min master / backup", "master MiB VmHWM / Pss",
                     "backup MiB VmHWM / Pss", "adverts/s seen / expected", "gaps > 1.5 s (max gap)",
                     "start to all MASTER s"], body))
        body = []
        for n in sorted({r["vhosts"] for r in rows}):
            c = find(rows, impl="carpd", vhosts=n)
            cols = [n]
            for p in PEERS:
                q = find(rows, impl=p, vhosts=n)
                ok = c and q and "error" not in c and "error" not in q
                cols.append(ratio(c["cpu_s_per_min_master"], q["cpu_s_per_min_master"]) if ok else "n/a")
                cols.append(ratio(c["pss_kib_master"], q["pss_kib_master"]) if ok else "n/a")
            body.append(cols)
        print("Ratios carpd/peer on the master node (CPU, Pss):\n")
        print(table(["vhosts", "CPU carpd/keepalived", "Pss carpd/keepalived", "CPU carpd/ucarp", "Pss carpd/ucarp"], body))
    if "many" in sc and "rows" in sc["many"]:
        rows = sc["many"]["rows"]
        print("### 6. One vhid with 1000 IPv4 + 1000 IPv6 addresses (takeover after link down)\n")
        body = []
        for r in rows:
            if "na" in r:
                body.append([r["impl"], "n/a: " + r["na"], "", "", "", "", ""])
                continue
            body.append([r["impl"], cell(r, "decision_s"), cell(r, "installed_after_decision_s"),
                         cell(r, "ipv4_reachable_after_decision_s"), cell(r, "ipv6_reachable_after_decision_s"),
                         cell(r, "all_reachable_after_decision_s"), cell(r, "unreachable_after", 1)])
        print(table(["", "link down to decision ms", "decision to all installed ms", "decision to all IPv4 answer ms",
                     "decision to all IPv6 answer ms", "decision to all 2000 answer ms", "never answered"], body))
        c, k = find(rows, impl="carpd"), find(rows, impl="keepalived")
        rnd = (c or {}).get("probe_round_s")
        rnd = rnd.get("median") if isinstance(rnd, dict) else rnd
        print(f"Ratio carpd/keepalived, decision to all reachable: "
              f"{ratio(med(c, 'all_reachable_after_decision_s'), med(k, 'all_reachable_after_decision_s'))}; "
              f"the client probes each address every {rnd} s "
              f"at best, which bounds the resolution.\n" if c and k else "")
    if "packet" in sc and "rows" in sc["packet"]:
        print("### 7. Packet path (`cargo bench -p carp-proto --bench packet`)\n")
        body = [[r["bench"], f"{r['median_ns']:.0f}", f"{r['low_ns']:.0f}..{r['high_ns']:.0f}"] for r in sc["packet"]["rows"]]
        print(table(["benchmark", "ns (estimate)", "criterion interval ns"], body))
    for name, s in sc.items():
        if "error" in s:
            print(f"Scenario {name} could not run: {s['error']}\n")


if __name__ == "__main__":
    main()
