"""The report of benches/load.sh: medians of interleaved rounds, ratios of peers measured
back to back, as Markdown tables on stdout and one JSON file.

    python3 benches/load_report.py RUNS.jsonl OUT.json MITM_NOTE DURATION ROUNDS WRK_THREADS REV

RUNS.jsonl holds one line per run ({"kind": "run", "mode", "peer", "conns", "round",
"cpu_ticks", "clk_tck", "refreshes", "wrk": {...}}) and per memory sample ({"kind": "mem",
...}), as load.sh writes them. A ratio is the median over rounds of the ratio within a
round, where the two peers ran back to back.
"""

import json
import os
import platform
import statistics
import subprocess
import sys
import time

HTTPS_MODES = ("https-keepalive", "https-newconn", "https-resume", "h2")


def cpu_model():
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def tool_version(cmd):
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        return (p.stdout + p.stderr).strip().splitlines()[0]
    except Exception:
        return "unknown"


def rps(r):
    return r["wrk"]["requests"] / (r["wrk"]["duration_us"] / 1e6)


def cpu_us(r):
    return r["cpu_ticks"] / r["clk_tck"] * 1e6 / max(r["wrk"]["requests"], 1)


def p50(r):
    return r["wrk"]["p50_us"]


def p99(r):
    return r["wrk"]["p99_us"]


def p999(r):
    return r["wrk"]["p999_us"]


def fmt(v, spec):
    return "-" if v is None else format(v, spec)


def main(argv):
    runs_path, out_path, mitm_note, duration, rounds, wrk_threads, rev = argv[1:8]
    lines = [json.loads(l) for l in open(runs_path) if l.strip()]
    runs = [l for l in lines if l["kind"] == "run"]
    mems = [l for l in lines if l["kind"] == "mem"]
    suites = {(l["mode"], l["peer"]): l["suite"] for l in lines if l["kind"] == "suite"}
    hits = {(l["mode"], l["conns"]): l for l in lines if l["kind"] == "hits"}
    med = statistics.median

    cases = {}
    for r in runs:
        cases.setdefault((r["mode"], r["conns"]), {}).setdefault(r["peer"], {})[r["round"]] = r

    def ratio(mode, conns, a, b, key):
        """Median over rounds of a/b, each round's pair measured back to back."""
        peers = cases.get((mode, conns), {})
        if a not in peers or b not in peers:
            return None
        vals = []
        for rnd, ra in peers[a].items():
            rb = peers[b].get(rnd)
            if rb is None:
                continue
            va, vb = key(ra), key(rb)
            if vb:
                vals.append(va / vb)
        return med(vals) if vals else None

    def diff(mode, conns, a, b, key):
        peers = cases.get((mode, conns), {})
        if a not in peers or b not in peers:
            return None
        vals = [key(ra) - key(peers[b][k]) for k, ra in peers[a].items() if k in peers[b]]
        return med(vals) if vals else None

    summary = []
    for (mode, conns), peers in sorted(cases.items()):
        for peer, by_round in peers.items():
            rs = list(by_round.values())
            mem = {m["what"]: m["kib"] for m in mems if (m["mode"], m["conns"], m["peer"]) == (mode, conns, peer)}
            handshakes = sum(r["wrk"].get("handshakes", 0) for r in rs)
            resumed = sum(r["wrk"].get("resumed", 0) for r in rs)
            summary.append({
                "mode": mode, "conns": conns, "peer": peer, "rounds": len(rs),
                "rps": med(rps(r) for r in rs),
                "p50_us": med(p50(r) for r in rs),
                "p99_us": med(p99(r) for r in rs),
                "p999_us": med(p999(r) for r in rs),
                "cpu_us_per_req": None if peer.startswith("direct") else med(cpu_us(r) for r in rs),
                "errors": sum(r["wrk"]["socket_errors"] + r["wrk"]["non2xx"] for r in rs),
                "refreshes_per_run": med(r["refreshes"] for r in rs),
                "resumed_fraction": resumed / handshakes if handshakes else None,
                "idle_rss_mib": mem["idle"] / 1024 if "idle" in mem else None,
                "peak_rss_mib": mem["peak"] / 1024 if "peak" in mem else None,
                "end_rss_mib": mem["end_rss"] / 1024 if "end_rss" in mem else None,
                "per_round": [{"round": k, "rps": rps(v), "p50_us": p50(v), "p99_us": p99(v), "p999_us": p999(v),
                               "cpu_us_per_req": cpu_us(v), "refreshes": v["refreshes"]}
                              for k, v in sorted(by_round.items())],
            })

    ratios = []
    for (mode, conns) in sorted(cases):
        row = {"mode": mode, "conns": conns}
        if mode == "throughput":
            row.update({
                "sidecar_over_nginx_rps": ratio(mode, conns, "sidecar", "nginx", rps),
                "sidecar_over_nginx_p99": ratio(mode, conns, "sidecar", "nginx", p99),
                "sidecar_over_nginx_cpu": ratio(mode, conns, "sidecar", "nginx", cpu_us),
                "sidecar_over_direct_rps": ratio(mode, conns, "sidecar", "direct", rps),
                "sidecar_over_direct_p50": ratio(mode, conns, "sidecar", "direct", p50),
                "sidecar_added_p50_us": diff(mode, conns, "sidecar", "direct", p50),
                "nginx_added_p50_us": diff(mode, conns, "nginx", "direct", p50),
                "sidecar2w_over_nginx_rps": ratio(mode, conns, "sidecar-2w", "nginx", rps),
                "sidecar2w_over_nginx_p99": ratio(mode, conns, "sidecar-2w", "nginx", p99),
                "sidecar_over_mitmproxy_rps": ratio(mode, conns, "sidecar", "mitmproxy", rps),
                "sidecar_over_base_cpu": ratio(mode, conns, "sidecar", "sidecar-base", cpu_us),
                "floor_over_nginx_cpu": ratio(mode, conns, "floor", "nginx", cpu_us),
                "sidecar_over_floor_cpu": ratio(mode, conns, "sidecar", "floor", cpu_us),
                "sidecar_over_base_rps": ratio(mode, conns, "sidecar", "sidecar-base", rps),
                "literal_over_sidecar_cpu": ratio(mode, conns, "sidecar-literal", "sidecar", cpu_us),
                "literal_over_nginx_cpu": ratio(mode, conns, "sidecar-literal", "nginx", cpu_us),
                "literal_over_floor_cpu": ratio(mode, conns, "sidecar-literal", "floor", cpu_us),
            })
        elif mode == "cache":
            row.update({
                "cache_over_nginx_cache_rps": ratio(mode, conns, "sidecar-cache", "nginx-cache", rps),
                "cache_over_nginx_cache_p99": ratio(mode, conns, "sidecar-cache", "nginx-cache", p99),
                "cache_over_nginx_cache_cpu": ratio(mode, conns, "sidecar-cache", "nginx-cache", cpu_us),
                "cache_over_uncached_rps": ratio(mode, conns, "sidecar-cache", "sidecar", rps),
                "cache_over_uncached_cpu": ratio(mode, conns, "sidecar-cache", "sidecar", cpu_us),
                "cache_added_p50_us": diff(mode, conns, "sidecar-cache", "direct", p50),
                "nginx_cache_added_p50_us": diff(mode, conns, "nginx-cache", "direct", p50),
            })
        elif mode == "shared-cache":
            h = hits.get((mode, conns), {})
            row.update({
                "redis_share_of_hits": h["from_redis"] / h["hits"] if h.get("hits") else None,
                "l2_over_l1_rps": ratio(mode, conns, "sidecar-shared", "sidecar-cache", rps),
                "l2_over_l1_cpu": ratio(mode, conns, "sidecar-shared", "sidecar-cache", cpu_us),
                "l2_over_uncached_rps": ratio(mode, conns, "sidecar-shared", "sidecar", rps),
                "l2_over_uncached_cpu": ratio(mode, conns, "sidecar-shared", "sidecar", cpu_us),
                "l2_over_nginx_cache_rps": ratio(mode, conns, "sidecar-shared", "nginx-cache", rps),
                "l1_over_nginx_cache_rps": ratio(mode, conns, "sidecar-cache", "nginx-cache", rps),
                "l2_added_p50_us": diff(mode, conns, "sidecar-shared", "direct", p50),
                "l1_added_p50_us": diff(mode, conns, "sidecar-cache", "direct", p50),
                "uncached_added_p50_us": diff(mode, conns, "sidecar", "direct", p50),
            })
        elif mode in HTTPS_MODES:
            row.update({
                "sidecar_over_nginx_rps": ratio(mode, conns, "sidecar", "nginx", rps),
                "sidecar_over_nginx_p99": ratio(mode, conns, "sidecar", "nginx", p99),
                "sidecar_over_nginx_cpu": ratio(mode, conns, "sidecar", "nginx", cpu_us),
                "sidecar_over_mitmproxy_rps": ratio(mode, conns, "sidecar", "mitmproxy", rps),
                "sidecar_over_mitmproxy_cpu": ratio(mode, conns, "sidecar", "mitmproxy", cpu_us),
                "sidecar_over_direct_rps": ratio(mode, conns, "sidecar", "direct", rps),
                "floor_over_nginx_cpu": ratio(mode, conns, "floor", "nginx", cpu_us),
                "sidecar_over_floor_cpu": ratio(mode, conns, "sidecar", "floor", cpu_us),
            })
        else:
            row.update({
                "refresh_over_static_p99": ratio(mode, conns, "sidecar-4096-refresh", "sidecar-4096", p99),
                "refresh_over_static_p50": ratio(mode, conns, "sidecar-4096-refresh", "sidecar-4096", p50),
                "refresh_over_static_rps": ratio(mode, conns, "sidecar-4096-refresh", "sidecar-4096", rps),
                "control_over_static_p99": ratio(mode, conns, "sidecar-4096-control", "sidecar-4096", p99),
                "refresh_over_static_p999": ratio(mode, conns, "sidecar-4096-refresh", "sidecar-4096", p999),
                "control_over_static_p999": ratio(mode, conns, "sidecar-4096-control", "sidecar-4096", p999),
            })
        ratios.append(row)

    machine = {
        "nproc": os.cpu_count(), "cpu_model": cpu_model(), "kernel": platform.release(),
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "git_rev": rev,
        "load_average": os.getloadavg(),
        "wrk": tool_version(["wrk", "--version"]), "nginx": tool_version(["nginx", "-v"]), "mitmproxy": mitm_note,
    }
    settings = {"duration_s": int(duration), "rounds": int(rounds),
                "refresh_rounds": int(os.environ.get("REFRESH_ROUNDS", "9")),
                "wrk_threads": int(wrk_threads),
                "scrape_metrics": os.environ.get("SCRAPE_METRICS", "0") == "1"}
    with open(out_path, "w") as out:
        json.dump({"machine": machine, "settings": settings, "summary": summary, "ratios": ratios,
                   "tls13_suites": [{"mode": m, "peer": p, "suite": s} for (m, p), s in sorted(suites.items())]},
                  out, indent=2)

    print()
    print(f"machine: {machine['nproc']} cores, {machine['cpu_model']}, kernel {machine['kernel']}, "
          f"{machine['date_utc']}, rev {rev}, load average at the end {machine['load_average'][0]:.1f}")
    print(f"{rounds} interleaved rounds of {duration} s per case, wrk -t{wrk_threads}; medians. "
          f"mitmproxy: {mitm_note or 'not run'}"
          + ("; sidecars' /metrics scraped every second" if settings["scrape_metrics"] else ""))
    print()
    print("| mode | conns | peer | req/s | p50 us | p99 us | p99.9 us | CPU us/req | resumed | idle RSS MiB | peak RSS MiB | errors |")
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for s in summary:
        print(f"| {s['mode']} | {s['conns']} | {s['peer']} | {s['rps']:.0f} | {s['p50_us']:.0f} | {s['p99_us']:.0f} | "
              f"{s['p999_us']:.0f} | {fmt(s['cpu_us_per_req'], '.1f')} | {fmt(s['resumed_fraction'], '.0%')} | "
              f"{fmt(s['idle_rss_mib'], '.1f')} | {fmt(s['peak_rss_mib'], '.1f')} | {s['errors']} |")

    plain = [r for r in ratios if r["mode"] == "throughput"]
    if plain:
        print()
        print("| conns | sidecar/nginx req/s | sidecar/nginx p99 | sidecar/nginx CPU/req | sidecar/direct req/s | "
              "added p50 us (sidecar) | added p50 us (nginx) | 2 workers/nginx req/s | sidecar/mitmproxy req/s | "
              "sidecar/base CPU/req | sidecar/base req/s | floor/nginx CPU/req | sidecar/floor CPU/req |")
        print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in plain:
            print(f"| {r['conns']} | {fmt(r['sidecar_over_nginx_rps'], '.2f')} | {fmt(r['sidecar_over_nginx_p99'], '.2f')} | "
                  f"{fmt(r['sidecar_over_nginx_cpu'], '.2f')} | {fmt(r['sidecar_over_direct_rps'], '.2f')} | "
                  f"{fmt(r['sidecar_added_p50_us'], '.0f')} | {fmt(r['nginx_added_p50_us'], '.0f')} | "
                  f"{fmt(r['sidecar2w_over_nginx_rps'], '.2f')} | {fmt(r['sidecar_over_mitmproxy_rps'], '.1f')} | "
                  f"{fmt(r['sidecar_over_base_cpu'], '.2f')} | {fmt(r['sidecar_over_base_rps'], '.2f')} | "
                  f"{fmt(r['floor_over_nginx_cpu'], '.2f')} | {fmt(r['sidecar_over_floor_cpu'], '.2f')} |")
        if any(r["literal_over_sidecar_cpu"] is not None for r in plain):
            print()
            print("| conns | literal/sidecar CPU/req | literal/nginx CPU/req | literal/floor CPU/req |")
            print("|---:|---:|---:|---:|")
            for r in plain:
                print(f"| {r['conns']} | {fmt(r['literal_over_sidecar_cpu'], '.2f')} | "
                      f"{fmt(r['literal_over_nginx_cpu'], '.2f')} | {fmt(r['literal_over_floor_cpu'], '.2f')} |")
    https = [r for r in ratios if r["mode"] in HTTPS_MODES]
    if suites:
        print()
        print("TLS 1.3 suites negotiated with the load client: " + "; ".join(
            f"{m} {p}: {s}" for (m, p), s in sorted(suites.items())))
    if https:
        print()
        print("| mode | conns | sidecar/nginx req/s | sidecar/nginx p99 | sidecar/nginx CPU/req | sidecar/mitmproxy req/s | "
              "sidecar/mitmproxy CPU/req | sidecar/direct req/s | floor/nginx CPU/req | sidecar/floor CPU/req |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in https:
            print(f"| {r['mode']} | {r['conns']} | {fmt(r['sidecar_over_nginx_rps'], '.2f')} | "
                  f"{fmt(r['sidecar_over_nginx_p99'], '.2f')} | {fmt(r['sidecar_over_nginx_cpu'], '.2f')} | "
                  f"{fmt(r['sidecar_over_mitmproxy_rps'], '.1f')} | {fmt(r['sidecar_over_mitmproxy_cpu'], '.3f')} | "
                  f"{fmt(r['sidecar_over_direct_rps'], '.2f')} | {fmt(r['floor_over_nginx_cpu'], '.2f')} | "
                  f"{fmt(r['sidecar_over_floor_cpu'], '.2f')} |")
    cache = [r for r in ratios if r["mode"] == "cache"]
    if cache:
        print()
        print("| conns | cache hit/nginx proxy_cache req/s | p99 | CPU/req | cache hit/uncached sidecar req/s | CPU/req | "
              "added p50 us (sidecar hit) | added p50 us (nginx HIT) |")
        print("|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in cache:
            print(f"| {r['conns']} | {fmt(r['cache_over_nginx_cache_rps'], '.2f')} | {fmt(r['cache_over_nginx_cache_p99'], '.2f')} | "
                  f"{fmt(r['cache_over_nginx_cache_cpu'], '.2f')} | {fmt(r['cache_over_uncached_rps'], '.2f')} | "
                  f"{fmt(r['cache_over_uncached_cpu'], '.2f')} | {fmt(r['cache_added_p50_us'], '.0f')} | "
                  f"{fmt(r['nginx_cache_added_p50_us'], '.0f')} |")
    shared = [r for r in ratios if r["mode"] == "shared-cache"]
    if shared:
        print()
        print("| conns | hits from Redis | Redis hit/local hit req/s | CPU/req | Redis hit/uncached req/s | CPU/req | "
              "Redis hit/nginx proxy_cache req/s | local hit/nginx proxy_cache req/s | added p50 us (Redis hit) | "
              "(local hit) | (uncached) |")
        print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in shared:
            print(f"| {r['conns']} | {fmt(r['redis_share_of_hits'], '.1%')} | {fmt(r['l2_over_l1_rps'], '.2f')} | "
                  f"{fmt(r['l2_over_l1_cpu'], '.2f')} | {fmt(r['l2_over_uncached_rps'], '.2f')} | "
                  f"{fmt(r['l2_over_uncached_cpu'], '.2f')} | {fmt(r['l2_over_nginx_cache_rps'], '.2f')} | "
                  f"{fmt(r['l1_over_nginx_cache_rps'], '.2f')} | {fmt(r['l2_added_p50_us'], '.0f')} | "
                  f"{fmt(r['l1_added_p50_us'], '.0f')} | {fmt(r['uncached_added_p50_us'], '.0f')} |")
    refresh = [r for r in ratios if r["mode"] == "refresh"]
    if refresh:
        print()
        print("| conns | refresh/static p99 | A/A control/static p99 | refresh/static p99.9 | control/static p99.9 | "
              "refresh/static p50 | refresh/static req/s |")
        print("|---:|---:|---:|---:|---:|---:|---:|")
        for r in refresh:
            print(f"| {r['conns']} | {fmt(r['refresh_over_static_p99'], '.2f')} | {fmt(r['control_over_static_p99'], '.2f')} | "
                  f"{fmt(r['refresh_over_static_p999'], '.2f')} | {fmt(r['control_over_static_p999'], '.2f')} | "
                  f"{fmt(r['refresh_over_static_p50'], '.2f')} | {fmt(r['refresh_over_static_rps'], '.2f')} |")
    print()
    print(f"results: {out_path}")


if __name__ == "__main__":
    main(sys.argv)
