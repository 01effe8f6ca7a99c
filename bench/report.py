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
                cf = find(rows, impl="carpd-openbsd", mode=mode, advskew_backup=skew)
                k = find(rows, impl="keepalived", mode=mode, advskew_backup=skew)
                u = find(rows, impl="ucarp", mode=mode, advskew_backup=skew)
                bounds = "/".join(f"{r['bound_s'] * 1000:.0f}" for r in (c, k, u) if r)
                body.append([f"{what}, backup advskew {skew}", cell(c, key), cell(cf, key) if cf else "-",
                             cell(k, key), cell(u, key), bounds, ratio(med(c, key), med(k, key)),
                             ratio(med(c, key), med(u, key))])
        print("carpd runs its default master-down (auto: FreeBSD's 3 × advbase + advskew/256 at advbase ≥ 1); "
              "the `master-down openbsd` column is the former default, 3 × (advbase + advskew/256).\n")
        print(table(["ms", "carpd", "carpd master-down openbsd", "keepalived", "ucarp",
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
        st = res.get("settings", {})
        print("### 4. Sub-second mode\n")
        print(f"Each pair alone with {st.get('sub_extra_vhosts', '?')} other vhosts at advbase 1 on the same "
              f"daemon(s). Crash: link down of the master, unloaded. Soak of {st.get('soak_s', '?')} s each under "
              f"2 × `stress-ng --cpu 4`, 2 × `stress-ng --vm 1 --vm-bytes 512M` and a "
              f"{st.get('soak_flood_pps', '?')}/s junk protocol-112 flood on the LAN, then one crash under the "
              f"same load.\n")
        body = []
        for r in rows:
            if "na" in r:
                body.append([r["impl"], "n/a: " + r["na"]] + [""] * 8)
                continue
            loaded = r.get("loaded_outage_s")
            body.append([r["impl"], r["settings"], f"{r['bound_s'] * 1000:.1f}", cell(r, "takeover_s"),
                         cell(r, "outage_s"),
                         f"n/a: {r['soak_error']}" if "soak_error" in r else
                         f"{r.get('false_failovers', 'n/a')} / {r.get('master_lost_role', 'n/a')} in {r.get('soak_s', '?')} s",
                         "n/a" if r.get("soak_client_max_gap_s") is None else f"{r['soak_client_max_gap_s'] * 1000:.0f}",
                         "n/a" if r.get("loaded_takeover_s") is None else f"{r['loaded_takeover_s'] * 1000:.0f}",
                         "n/a" if loaded is None else f"{loaded * 1000:.0f}", r.get("soak_flood_pps", "n/a")])
        print(table(["", "settings", "bound ms", "takeover ms", "client outage ms",
                     "false failovers backup→MASTER / master lost role (soak)", "longest client gap in soak ms",
                     "takeover under load ms", "outage under load ms", "flood sent/s"], body))
        k = find(rows, impl="keepalived-realtime")
        body = []
        for name in ("carpd", "carpd-realtime"):
            c = find(rows, impl=name)
            if c and "na" not in c:
                body.append([name, ratio(med(c, "outage_s"), med(find(rows, impl="keepalived"), "outage_s")),
                             ratio(med(c, "outage_s"), med(k, "outage_s")),
                             ratio(med(c, "outage_s"), med(find(rows, impl="ucarp"), "outage_s")),
                             ratio(c.get("false_failovers"), (k or {}).get("false_failovers"))])
        print("Ratios (carpd's median over the peer's):\n")
        print(table(["", "outage / keepalived", "outage / keepalived-realtime", "outage / ucarp",
                     "soak false failovers / keepalived-realtime"], body))
    if "flood" in sc and "rows" in sc["flood"]:
        rows = sc["flood"]["rows"]
        print("### Junk flood (protocol 112 to 224.0.0.18; advbase 1, backup advskew 100)\n")
        body = []
        for r in rows:
            body.append([f"{r['impl']}, {r['flood']} (target {r['target_pps']}/s, {r['seconds']} s)",
                         cell(r, "sent_pps", 1), cell(r, "cpu_pct_master", 1, 1), cell(r, "cpu_pct_backup", 1, 1),
                         cell(r, "cpu_ns_per_junk_backup", 1), cell(r, "false_failovers_backup", 1),
                         cell(r, "false_failovers_master", 1), cell(r, "adverts_missed_backup", 1)])
        print(table(["", "junk sent/s", "CPU % master daemon", "CPU % backup daemon", "backup CPU ns per junk packet",
                     "false failovers (backup→MASTER)", "master lost role", "genuine adverts missed (carpd stats)"],
                    body))
        body = []
        for label in ("50k", "max"):
            c = find(rows, impl="carpd", flood=label)
            cols = [label]
            for p in PEERS:
                q = find(rows, impl=p, flood=label)
                cols.append(ratio(med(c, "cpu_pct_backup"), med(q, "cpu_pct_backup")))
            body.append(cols)
        print("Backup CPU ratio carpd/peer:\n")
        print(table(["flood", "carpd/keepalived", "carpd/ucarp"], body))
    if "daemonkill" in sc and "rows" in sc["daemonkill"]:
        rows = sc["daemonkill"]["rows"]
        print("### Crash of the daemon (kill -9 of the MASTER's main process only; backup advskew 100)\n")
        body = []
        k, u = find(rows, impl="keepalived"), find(rows, impl="ucarp")
        for r in rows:
            if "na" in r:
                body.append([r["impl"], "n/a: " + r["na"], "", "", "", ""])
                continue
            c = r["impl"].startswith("carpd")
            body.append([r["impl"], cell(r, "takeover_s"), cell(r, "outage_s"), cell(r, "lost", 1),
                         ratio(med(r, "takeover_s"), med(k, "takeover_s")) if c else "",
                         ratio(med(r, "takeover_s"), med(u, "takeover_s")) if c else ""])
        print(table(["", "kill to peer MASTER ms", "client outage ms", "lost probes", "takeover carpd/keepalived",
                     "takeover carpd/ucarp"], body))
    if "vrrp3" in sc and "rows" in sc["vrrp3"]:
        rows = sc["vrrp3"]["rows"]
        print("### VRRPv3 crash failover (link down; interval 100 cs, master priority 254)\n")
        body = []
        for skew in (0, 100):
            c = find(rows, impl="carpd", advskew_backup=skew)
            k = find(rows, impl="keepalived", advskew_backup=skew)
            if not c and not k:
                continue
            prio = (c or k)["prio_backup"]
            body.append([f"backup priority {prio}", cell(c, "outage_s"), cell(k, "outage_s"), cell(c, "takeover_s"),
                         cell(k, "takeover_s"), "/".join(f"{r['bound_s'] * 1000:.0f}" for r in (c, k) if r),
                         ratio(med(c, "outage_s"), med(k, "outage_s"))])
        print(table(["ms", "carpd outage (carpver 3)", "keepalived outage (vrrp_version 3)", "carpd takeover",
                     "keepalived takeover", "bound carpd/ka", "outage carpd/keepalived"], body))
        na = [r for r in rows if "na" in r]
        if na:
            print("; ".join(f"{r['impl']}: n/a ({r['na']})" for r in na) + ".\n")
    if "balance" in sc and "rows" in sc["balance"]:
        rows = sc["balance"]["rows"]
        print("### IP balancing datapath (carpd `carpnodes 1:0,2:100` / `1:100,2:0 balancing ip` vs one vhost)\n")
        body = []
        for r in rows:
            if "na" in r:
                continue
            body.append([r["balancing"], cell(r, "sent_pps", 1), cell(r, "delivered_pps", 1),
                         cell(r, "frames_in_pps", 1), cell(r, "delivered_share", 100)])
        print(table(["balancing", "client UDP sent/s (one flow, as fast as it goes)", "delivered to IP on a+b /s",
                     "frames into a+b /s", "% of sent delivered"], body))
        n, b = find(rows, balancing="none"), find(rows, balancing="ip")
        print(f"Ratio delivered ip/none: {ratio(med(b, 'delivered_pps'), med(n, 'delivered_pps'))}; "
              f"keepalived and ucarp: n/a (no load balancing).\n")
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
            for cname in ("carpd", "carpd-virtual"):
                c = find(rows, impl=cname, vhosts=n)
                if not c:
                    continue
                cols = [n, "lladdr virtual" if cname == "carpd-virtual" else "lladdr real"]
                for p in PEERS:
                    q = find(rows, impl=p, vhosts=n)
                    ok = c and q and "error" not in c and "error" not in q
                    cols.append(ratio(c["cpu_s_per_min_master"], q["cpu_s_per_min_master"]) if ok else "n/a")
                    cols.append(ratio(c["pss_kib_master"], q["pss_kib_master"]) if ok else "n/a")
                body.append(cols)
        print("Ratios carpd/peer on the master node (CPU, Pss):\n")
        print(table(["vhosts", "carpd", "CPU carpd/keepalived", "Pss carpd/keepalived", "CPU carpd/ucarp",
                     "Pss carpd/ucarp"], body))
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
