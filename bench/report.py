#!/usr/bin/env python3
"""Helpers for bench/run.sh (standard library only).

  report.py ports ADMIN                   "name port" per listener, from admin /listeners
  report.py mem --pid P --admin A --label L --out FILE
                                          append one memory snapshot (JSON line) to FILE
  report.py table --out DIR [--wasm W] [--seconds S] [--tokens N] [--cache C]
                                          read DIR/runs.tsv, DIR/memory.jsonl and the wrk
                                          outputs; print the table, write DIR/results.md;
                                          exit 1 if a run saw non-200 answers or errors
"""
import argparse
import json
import os
import platform
import re
import subprocess
import sys
import urllib.request

NAMES = {
    "none": "no filter (ceiling)",
    "wasm-floor": "proxy-wasm floor: reads headers + clock, nothing else",
    "native": "native jwt_authn+rbac",
    "native-cache": "native jwt_authn+rbac, jwt cache",
    "jwt-guard": "jwt-guard (wasm), cache",
    "jwt-guard-nocache": "jwt-guard (wasm), no cache",
    "jwt-guard-rust": "jwt-guard (wasm), no cache, pure-Rust crypto",
}
ORDER = list(NAMES)
SETS = {"one": "one token", "many": "distinct tokens", "fresh": "fresh tokens, several workers"}
# jwt-guard's stats in the bench (its cached listener's plugin name is jwt_guard_cache).
GUARD_STATS = "wasmcustom.jwt_guard.jwt_guard_cache."


def admin_get(admin: str, path: str) -> str:
    with urllib.request.urlopen(f"http://{admin}{path}", timeout=10) as r:
        return r.read().decode()


# ---- ports ---------------------------------------------------------------------------

def cmd_ports(args) -> int:
    data = json.loads(admin_get(args.admin, "/listeners?format=json"))
    for l in data.get("listener_statuses", []):
        print(l["name"], l["local_address"]["socket_address"]["port_value"])
    return 0


# ---- memory --------------------------------------------------------------------------

GIB4 = 4 * 1024 * 1024  # kB


def wasm_memories(pid: int) -> list[dict]:
    """V8 reserves each wasm linear memory as one region: the committed pages (rw-p,
    memory.size) directly followed by a guard reservation of several GiB (---p). Each
    such pair is one VM's linear memory; Rss is what the VM has touched."""
    maps = []
    cur = None
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            m = re.match(r"^([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ \S+\s*(.*)$", line)
            if m:
                cur = {"start": int(m.group(1), 16), "end": int(m.group(2), 16),
                       "perms": m.group(3), "path": m.group(4).strip(), "rss": 0}
                maps.append(cur)
            elif line.startswith("Rss:") and cur is not None:
                cur["rss"] = int(line.split()[1])
    out = []
    for a, b in zip(maps, maps[1:]):
        if (a["perms"].startswith("rw") and not a["path"] and b["perms"] == "---p"
                and a["end"] == b["start"] and (b["end"] - b["start"]) // 1024 >= GIB4):
            out.append({"committed_kb": (a["end"] - a["start"]) // 1024, "rss_kb": a["rss"]})
    return out


def status_kb(pid: int) -> dict:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                out[k] = int(v.split()[0])
    return out


def cmd_mem(args) -> int:
    snap = {"label": args.label, **status_kb(args.pid)}
    if args.startup:
        snap["startup_s"] = float(args.startup)
    try:
        snap["tcmalloc"] = json.loads(admin_get(args.admin, "/memory"))
    except (OSError, ValueError):
        snap["tcmalloc"] = {}
    stats = admin_get(args.admin, "/stats?filter=^wasm\\.")
    for line in stats.splitlines():
        k, _, v = line.partition(": ")
        if k in ("wasm.envoy.wasm.runtime.v8.active", "wasm.envoy.wasm.runtime.v8.created",
                 "wasm.wasm_vm_count"):
            snap[k] = int(v)
    snap["wasm_memories"] = wasm_memories(args.pid)
    with open(args.out, "a") as f:
        f.write(json.dumps(snap) + "\n")
    return 0


# ---- table ---------------------------------------------------------------------------

def to_ms(v: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s|m)$", v)
    if not m:
        return float("nan")
    n, unit = float(m.group(1)), m.group(2)
    return n * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def parse_wrk(path: str) -> dict:
    text = open(path).read()
    r = {"rps": None, "p50": None, "p99": None, "requests": None, "non2xx": 0, "errors": ""}
    m = re.search(r"Requests/sec:\s+([\d.]+)", text)
    if m:
        r["rps"] = float(m.group(1))
    for q in ("50", "99"):
        m = re.search(rf"^\s+{q}%\s+(\S+)", text, re.M)
        if m:
            r["p" + q] = to_ms(m.group(1))
    m = re.search(r"(\d+) requests in", text)
    if m:
        r["requests"] = int(m.group(1))
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    if m:
        r["non2xx"] = int(m.group(1))
    m = re.search(r"Socket errors:(.*)", text)
    if m:
        r["errors"] = m.group(1).strip()
    return r


def parse_stats(path: str) -> dict:
    out = {}
    if not os.path.exists(path):
        return out
    for line in open(path):
        k, _, v = line.strip().partition(": ")
        if v.isdigit():
            out[k] = int(v)
    return out


def fmt_ms(v) -> str:
    return "n/a" if v is None else (f"{v:.2f}" if v < 100 else f"{v:.0f}")


def tool_version(cmd: list[str]) -> str:
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        return (p.stdout + p.stderr).strip().splitlines()[0] if (p.stdout + p.stderr).strip() else "?"
    except (OSError, subprocess.SubprocessError):
        return "?"


def median(values):
    v = sorted(x for x in values if x is not None)
    if not v:
        return None
    mid = len(v) // 2
    return v[mid] if len(v) % 2 else (v[mid - 1] + v[mid]) / 2


def cmd_table(args) -> int:
    per_run = []
    bad = []
    with open(os.path.join(args.out, "runs.tsv")) as f:
        for line in f:
            listener, alg, tset, wrk_file, primed, rnd, cpu = line.rstrip("\n").split("\t")
            r = parse_wrk(wrk_file)
            r.update({"listener": listener, "alg": alg, "set": tset, "primed": primed == "1",
                      "round": rnd,
                      "cpu": float(cpu) if cpu else None, "hits_per_req": None,
                      "misses_per_req": None, "checks": None})
            where = f"{listener} {alg} {tset} (round {rnd})"
            if listener == "native-cache":
                before = parse_stats(wrk_file.replace(".txt", ".before.stats"))
                after = parse_stats(wrk_file.replace(".txt", ".after.stats"))
                pre = f"http.{listener}.jwt_authn."
                hits = after.get(pre + "jwt_cache_hit", 0) - before.get(pre + "jwt_cache_hit", 0)
                allowed = after.get(pre + "allowed", 0) - before.get(pre + "allowed", 0)
                misses = after.get(pre + "jwt_cache_miss", 0) - before.get(pre + "jwt_cache_miss", 0)
                if allowed:
                    r["hits_per_req"] = hits / allowed
                    r["misses_per_req"] = misses / allowed
                # A miss is a verification.
                r["checks"] = misses
            if listener == "jwt-guard":
                before = parse_stats(wrk_file.replace(".txt", ".before.stats"))
                after = parse_stats(wrk_file.replace(".txt", ".after.stats"))
                key = GUARD_STATS + "signature_checks.host"
                r["checks"] = after.get(key, 0) - before.get(key, 0)
            if r["non2xx"]:
                bad.append(f"{where}: {r['non2xx']} non-2xx answers")
            if r["errors"] and re.search(r"(connect|read|write|timeout) [1-9]", r["errors"]):
                bad.append(f"{where}: socket errors {r['errors']}")
            if r["rps"] is None:
                bad.append(f"{where}: no wrk result ({wrk_file})")
            per_run.append(r)

    # One row per listener x alg x token set: medians over the rounds.
    runs = []
    keys = []
    for r in per_run:
        k = (r["listener"], r["alg"], r["set"])
        if k not in keys:
            keys.append(k)
    for k in keys:
        rs = [r for r in per_run if (r["listener"], r["alg"], r["set"]) == k]
        row = {"listener": k[0], "alg": k[1], "set": k[2],
               "rps": median(r["rps"] for r in rs), "p50": median(r["p50"] for r in rs),
               "p99": median(r["p99"] for r in rs), "cpu": median(r["cpu"] for r in rs)}
        notes = []
        if len(rs) > 1:
            vals = [r["rps"] for r in rs if r["rps"] is not None]
            if vals:
                notes.append(f"rps {min(vals):.0f}-{max(vals):.0f} over {len(rs)} rounds")
        if any(r["primed"] for r in rs):
            notes.append("cache primed with all tokens")
        hpr = median(r["hits_per_req"] for r in rs)
        if hpr is not None:
            notes.append(f"jwt_cache_hit/req {hpr:.2f}, "
                         f"jwt_cache_miss/req {median(r['misses_per_req'] for r in rs):.2f}")
        checks = median(r["checks"] for r in rs)
        if k[2] == "fresh" and checks is not None and args.fresh not in ("?", "0"):
            notes.append(f"{checks / int(args.fresh):.2f} signature checks per token")
        non2xx = sum(r["non2xx"] for r in rs)
        if non2xx:
            notes.append(f"**{non2xx} non-200**")
        errs = "; ".join(r["errors"] for r in rs if r["errors"])
        if errs:
            notes.append(f"socket errors: {errs}")
        req = median(r["requests"] for r in rs)
        if req is not None and k[2] == "many":
            notes.append(f"{req:.0f} req")
        row["notes"] = notes
        runs.append(row)

    def rps_of(listener, alg, tset):
        for x in runs:
            if (x["listener"], x["alg"], x["set"]) == (listener, alg, tset):
                return x["rps"]
        return None

    def ratio(ours, theirs, alg, tset) -> str:
        """The median over rounds of each round's ratio: the two runs of a round are
        seconds apart, so noise that moves the machine for a while moves both."""
        def by_round(listener):
            return {r["round"]: r["rps"] for r in per_run
                    if (r["listener"], r["alg"], r["set"]) == (listener, alg, tset) and r["rps"]}
        a, b = by_round(ours), by_round(theirs)
        m = median(a[k] / b[k] for k in a if k in b)
        return "" if m is None else f"{m:.2f}x"

    lines = []
    lines.append("| scenario | rps | p50 ms | p99 ms | Envoy CPU | vs native (no cache) | "
                 "vs native (cache) | notes |")
    lines.append("|---|---:|---:|---:|---:|---:|---:|---|")
    groups = []
    for alg in ("es256", "rs256"):
        for tset in ("one", "many", "fresh"):
            groups.append((alg, tset))
    for alg, tset in groups:
        rows = [x for x in runs if x["alg"] == alg and x["set"] == tset]
        if not rows:
            continue
        rows.sort(key=lambda x: ORDER.index(x["listener"]) if x["listener"] in ORDER else 99)
        nat = rps_of("native", alg, tset)
        natc = rps_of("native-cache", alg, tset)
        lines.append(f"| **{alg.upper()}, {SETS[tset]}** | | | | | | | |")
        for x in rows:
            rps = "n/a" if x["rps"] is None else f"{x['rps']:.0f}"
            cpu = "" if x["cpu"] is None else f"{x['cpu']:.0f}%"
            lines.append(
                f"| {NAMES.get(x['listener'], x['listener'])} | {rps} | {fmt_ms(x['p50'])} | "
                f"{fmt_ms(x['p99'])} | {cpu} | {ratio(x['listener'], 'native', alg, tset) if nat else ''} | "
                f"{ratio(x['listener'], 'native-cache', alg, tset) if natc else ''} | {'; '.join(x['notes'])} |")
    table = "\n".join(lines)

    # Like for like: each jwt-guard variant against the native setup doing the same work.
    pairs = [("no cache: jwt-guard / native", "jwt-guard-nocache", "native"),
             ("cache: jwt-guard / native", "jwt-guard", "native-cache"),
             ("floor: any proxy-wasm filter / native, cache", "wasm-floor", "native-cache"),
             ("cache: jwt-guard / floor", "jwt-guard", "wasm-floor"),
             ("pure-Rust crypto, no cache: jwt-guard / native", "jwt-guard-rust", "native")]
    present = [(a, s_) for a, s_ in groups if any(x["alg"] == a and x["set"] == s_ for x in runs)]
    summary = ["| rps ratio | " + " | ".join(f"{a.upper()} {SETS[s_]}" for a, s_ in present) + " |",
               "|---|" + "---:|" * len(present)]
    for label, ours, theirs in pairs:
        cells = [ratio(ours, theirs, a, s_) or "-" for a, s_ in present]
        if any(c != "-" for c in cells):
            summary.append(f"| {label} | " + " | ".join(cells) + " |")
    summary_md = "\n".join(summary) if len(summary) > 2 else ""

    # memory
    mem = {}
    mem_path = os.path.join(args.out, "memory.jsonl")
    if os.path.exists(mem_path):
        for line in open(mem_path):
            s = json.loads(line)
            mem[s["label"]] = s
    mlines = []
    wasm_runs = any(x["listener"].startswith("jwt-guard") for x in runs)
    if wasm_runs and args.wasm and os.path.exists(args.wasm):
        size = os.path.getsize(args.wasm)
        shown = os.path.abspath(args.wasm)
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        if shown.startswith(root + os.sep):
            shown = os.path.relpath(shown, root)
        mlines.append(f"- wasm file: `{shown}` {size} bytes ({size / 1024:.0f} KiB)")
    base, ready, end = mem.get("baseline-ready"), mem.get("full-ready"), mem.get("full-end")
    if ready and ready.get("wasm.envoy.wasm.runtime.v8.active"):
        vms = ready.get("wasm.envoy.wasm.runtime.v8.active")
        mlines.append(f"- V8 wasm VMs alive in the bench Envoy (stat `wasm.envoy.wasm.runtime.v8.active`, "
                      f"--concurrency 1): {vms} (the base VM plus one per thread, main thread included; "
                      f"the jwt-guard listeners share vm_id `jwt_guard`). Envoy has no per-VM memory "
                      f"stat, so the linear memories are read from /proc/PID/smaps")
        for label, s in (("at ready", ready), ("after the runs", end)):
            if not s:
                continue
            wm = s.get("wasm_memories", [])
            if wm:
                parts = ", ".join(f"{m['committed_kb']} KiB committed / {m['rss_kb']} KiB resident"
                                  for m in wm)
                mlines.append(f"- wasm linear memory per VM {label}: {parts}")
    if base and ready:
        d_rss = ready["VmRSS"] - base["VmRSS"]
        mlines.append(f"- Envoy RSS at ready: without the wasm listeners {base['VmRSS'] / 1024:.1f} MiB, "
                      f"with them {ready['VmRSS'] / 1024:.1f} MiB: delta {d_rss / 1024:+.1f} MiB")
        vms = ready.get("wasm.envoy.wasm.runtime.v8.active") or 0
        if vms:
            mlines.append(f"  (delta / VMs = {d_rss / vms / 1024:.1f} MiB: V8 isolate, compiled module and "
                          f"linear memory per VM, plus V8's one-time set-up)")
        ba = int(base.get("tcmalloc", {}).get("allocated", 0) or 0)
        ra = int(ready.get("tcmalloc", {}).get("allocated", 0) or 0)
        if ba and ra:
            mlines.append(f"- Envoy heap (admin /memory `allocated`): {ba / 2**20:.1f} MiB -> "
                          f"{ra / 2**20:.1f} MiB ({(ra - ba) / 2**20:+.1f} MiB); V8's own pages are not in it")
    if end:
        mlines.append(f"- Envoy RSS after all runs: {end['VmRSS'] / 1024:.1f} MiB "
                      f"(peak {end.get('VmHWM', 0) / 1024:.1f} MiB)")
    starts = {label: snap["startup_s"] for label, snap in mem.items() if "startup_s" in snap}
    if "baseline-ready" in starts and "full-ready" in starts:
        mlines.append(f"- Start-up (launch to admin /ready): without the wasm listeners "
                      f"{starts['baseline-ready']:.2f} s, with them {starts['full-ready']:.2f} s")
    memory = "\n".join(mlines)

    envoy_v = tool_version([os.environ.get("ENVOY_BIN", "envoy"), "--version"])
    envoy_v = envoy_v.split("version:")[-1].strip() if "version:" in envoy_v else envoy_v
    header = (
        f"# jwt-guard bench: side by side with Envoy's jwt_authn\n\n"
        f"One Envoy (`--concurrency 1`), one listener per scenario, direct_response 200 behind the "
        f"filters. `wrk -t1 -c{args.connections} -d{args.seconds}s --latency`"
        + (f", {args.rounds} rounds (each row: the median)" if args.rounds != "1" else "")
        + " (each ratio: the median of the rounds' ratios, every listener running one scenario back to back in a round)"
        + ", requests cycling "
        f"through a token file (bench/tokens.lua). Distinct tokens: {args.tokens} per algorithm; "
        f"caches (jwt_authn `jwt_cache_size`, jwt-guard `cache.max_entries`): {args.cache}. "
        f"Listeners with a cache get every distinct token once before that run, so it "
        f"measures cache hits; the no-cache rows verify every signature. Like for like: one "
        f"issuer whose JWKS holds both keys, one provider on each side (jwt_authn + RBAC on the "
        f"scope; jwt-guard one rule requiring the scope), caches both on or both off.\n\n"
        + (f"Fresh tokens, several workers: a new Envoy with `--concurrency {args.workers}` each "
           f"round, native-cache and jwt-guard only, caches of {args.workers_cache}, on "
           f"{args.fresh} tokens never seen before (cycled in order, never primed). Native "
           f"caches per worker, so it verifies a token in each worker that sees it; jwt-guard "
           f"verifies it once (its cache shared by the workers). Signature checks per token: "
           f"jwt_authn's `jwt_cache_miss`, jwt-guard's `signature_checks.host`, over the token "
           f"count.\n\n" if args.workers not in ("0", "1") else "")
        + f"Machine: {os.cpu_count()} CPUs ({platform.machine()}), load average before the run "
        f"{args.loadavg}; Envoy {envoy_v}; {tool_version(['wrk', '-v']).split(' Copyright')[0]}; "
        + ("Envoy pinned to CPU 0, wrk to CPU 1. " if args.pinned == "yes" else "CPUs not pinned. ")
        + "wrk and Envoy share the machine, so the no-filter row is the ceiling of this setup, "
        "not of Envoy. Envoy CPU: the Envoy process's CPU time over the run's wall time; near "
        "100% the one worker was the bottleneck, clearly below it (with wrk not saturated) "
        "something else on the machine took CPU 0 and the row is noisy.\n"
    )
    doc = f"{header}\n{table}\n"
    if summary_md:
        doc += f"\n## jwt-guard against native, like for like\n\n{summary_md}\n"
    instructions = instructions_section(args.out, bad)
    if instructions:
        doc += instructions
    doc += f"\n## Memory\n\n{memory}\n"
    if bad:
        doc += "\n## Problems\n\n" + "\n".join(f"- {b}" for b in bad) + "\n"
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write(doc)
    print(doc)
    print(f"(written to {os.path.join(args.out, 'results.md')})")
    if bad:
        print("bench: some runs were not clean:\n  " + "\n  ".join(bad), file=sys.stderr)
        return 1
    return 0


def instructions_section(out: str, bad: list) -> str:
    """The callgrind counts of bench/instructions.sh, if that part ran."""
    path = os.path.join(out, "instructions.tsv")
    if not os.path.exists(path):
        return ""
    per = {}
    sim = {}
    for line in open(path):
        listener, alg, tset, requests, total, *events = line.rstrip("\n").split("\t")
        if int(requests) < 100:
            bad.append(f"instructions: {listener} {alg} {tset}: only {requests} requests counted")
        per[(listener, alg, tset)] = int(total) / int(requests)
        if len(events) == 5:
            sim[(listener, alg, tset)] = [int(e) / int(requests) for e in events]
    if not per:
        return ""
    listeners = [n for n in ORDER if any(k[0] == n for k in per)]
    scenarios = []
    for k in per:
        if (k[1], k[2]) not in scenarios:
            scenarios.append((k[1], k[2]))
    pairs = [("no cache: native / jwt-guard", "native", "jwt-guard-nocache"),
             ("cache: native / jwt-guard", "native-cache", "jwt-guard")]
    lines = ["| scenario | " + " | ".join(listeners) + " | "
             + " | ".join(label for label, _, _ in pairs) + " |",
             "|---|" + "---:|" * (len(listeners) + len(pairs))]
    for alg, tset in scenarios:
        cells = []
        for n in listeners:
            v = per.get((n, alg, tset))
            cells.append("" if v is None else f"{v / 1000:.1f}k")
        for _, theirs, ours in pairs:
            a, b = per.get((theirs, alg, tset)), per.get((ours, alg, tset))
            cells.append("" if not a or not b else f"{a / b:.2f}x")
        lines.append(f"| {alg.upper()}, {SETS[tset]} | " + " | ".join(cells) + " |")
    filter_only = []
    for alg, tset in scenarios:
        base = per.get(("none", alg, tset))
        nat, ours = per.get(("native-cache", alg, tset)), per.get(("jwt-guard", alg, tset))
        if base and nat and ours and ours > base:
            filter_only.append(f"{alg.upper()} {SETS[tset]}: native {(nat - base) / 1000:.1f}k, "
                               f"jwt-guard {(ours - base) / 1000:.1f}k")
    text = ("\n## Instructions per request (callgrind)\n\n"
            "The same Envoy config under valgrind's callgrind (bench/instructions.sh): every "
            "instruction the Envoy process ran, all threads, over the requests it completed "
            "(Envoy's `downstream_rq_completed`, every one a 2xx), after a warm-up; the lower "
            "of two runs. A count repeats to a fraction of a percent whatever else the "
            "machine does, so these ratios are the like-for-like comparison that noise cannot "
            "move; they do not see memory stalls or how fast the CPU retires the instructions, "
            "which the rps table does. The ratios are native's count over jwt-guard's: above "
            "1.00x, jwt-guard does less work per request.\n\n" + "\n".join(lines) + "\n")
    if filter_only:
        text += ("\nThe filters alone (each count minus the no-filter one), caches on: "
                 + "; ".join(filter_only) + ".\n")
    if sim:
        rows = ["| scenario, listener | instructions | L1i misses | L1d misses (read + write) "
                "| branch mispredictions (conditional + indirect) |", "|---|---:|---:|---:|---:|"]
        for alg, tset in scenarios:
            for n in ("none", "wasm-floor", "native-cache", "jwt-guard"):
                e = sim.get((n, alg, tset))
                if e:
                    rows.append(f"| {alg.upper()} {SETS[tset]}, {n} | {per[(n, alg, tset)] / 1000:.1f}k "
                                f"| {e[0]:.0f} | {e[1] + e[2]:.0f} | {e[3] + e[4]:.0f} |")
        text += ("\nCallgrind's model of the caches and branch predictors (first-level caches "
                 "as this machine's; a model, not a measurement of the CPU), per request, "
                 "caches on:\n\n" + "\n".join(rows) + "\n")
    return text


def main() -> int:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("ports")
    p.add_argument("admin")
    p = sub.add_parser("mem")
    p.add_argument("--pid", type=int, required=True)
    p.add_argument("--admin", required=True)
    p.add_argument("--label", required=True)
    p.add_argument("--startup", default="", help="seconds from launch to ready, if just started")
    p.add_argument("--out", required=True)
    p = sub.add_parser("table")
    p.add_argument("--out", required=True)
    p.add_argument("--wasm", default="")
    p.add_argument("--seconds", default="?")
    p.add_argument("--tokens", default="?")
    p.add_argument("--cache", default="?")
    p.add_argument("--connections", default="16")
    p.add_argument("--loadavg", default="?")
    p.add_argument("--pinned", default="no")
    p.add_argument("--rounds", default="1")
    p.add_argument("--workers", default="0")
    p.add_argument("--fresh", default="0")
    p.add_argument("--workers-cache", default="?")
    args = ap.parse_args()
    return {"ports": cmd_ports, "mem": cmd_mem, "table": cmd_table}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
