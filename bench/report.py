"""The benchmark's printed table, from its results dictionary."""

from __future__ import annotations

from typing import Any

WINDOW = 1000


def _us(entry: dict[str, Any] | None, key: str) -> str:
    if not entry or entry.get(key) is None:
        return "-"
    value = entry[key]
    return f"{value:.0f} us" if value < 10_000 else f"{value / 1000:.1f} ms"


def _ms(value: float | None) -> str:
    return (
        "n/a" if value is None else f"{value:.1f} ms" if value < 10_000 else f"{value / 1000:.2f} s"
    )


def _ratio(a: float | None, b: float | None) -> str:
    if not a or not b:
        return "-"
    return f"{a / b:,.0f}x" if a / b >= 10 else f"{a / b:.1f}x"


def report(results: dict[str, Any]) -> str:
    rows: list[tuple[str, str]] = []

    def add(label: str = "", value: str = "") -> None:
        if label or (rows and rows[-1][0]):  # no two blank lines in a row
            rows.append((label, value))

    c = results["corpus"]
    add(
        "corpus",
        f"{c['sessions']:,} sessions in {c['workspaces']} workspaces (+1 big), "
        f"{c['bytes'] / 2**30:.2f} GiB; size p50 {c['size_p50'] / 1024:.0f} KiB, "
        f"p99 {c['size_p99'] / 2**20:.1f} MiB, max {c['size_max'] / 2**20:.1f} MiB",
    )
    add()
    r = results.get("resume", {})
    plain, window, raw = r.get("plain"), r.get("window"), r.get("raw_socket")
    if plain and window and raw:
        add(
            "resume, persistent Client",
            f"p50 {_us(plain, 'p50_us')}  p99 {_us(plain, 'p99_us')}  "
            f"max {_us(plain, 'max_us')}  (n={plain['n']})",
        )
        add("resume, raw socket (reply not parsed)", _p50_p99(raw))
        add(f"resume window={WINDOW}, Client", f"{_p50_p99(window)}  (n={window['n']})")
    big = results.get("big_window")
    if big:
        d, raw_big = big["daemon"], big["daemon_raw_socket"]
        size = f"{big['file_bytes'] / 2**20:.1f} MiB"
        add(f"big session ({size}) window={WINDOW}, Client", _p50_p99(d))
        add("  same, raw socket (reply not parsed)", _p50_p99(raw_big))
        raw_decoded = big.get("daemon_raw_socket_msgspec")
        if raw_decoded:
            add("  same, raw socket + msgspec decode of the reply", _p50_p99(raw_decoded))
        add(
            "  read + decode the file",
            f"msgspec {_ms(big['read_msgspec_decode_ms'])}, json.loads "
            f"{_ms(big['read_json_loads_ms'])}; scan_resume(window) "
            f"{_ms(big['scan_resume_window_ms'])}",
        )
        # Same decoder on both sides: what a reader saves is decoding the rest of the file.
        add(
            "  file / daemon, json.loads vs Client (json)",
            _ratio(big["read_json_loads_ms"], d["p50_us"] / 1000),
        )
        if raw_decoded:
            add(
                "  file / daemon, msgspec vs raw + msgspec",
                _ratio(big["read_msgspec_decode_ms"], raw_decoded["p50_us"] / 1000),
            )
        add(
            "  msgspec decode of the file / Client, raw",
            f"{_ratio(big['read_msgspec_decode_ms'], d['p50_us'] / 1000)} / "
            f"{_ratio(big['read_msgspec_decode_ms'], raw_big['p50_us'] / 1000)}",
        )
    add()
    p = results.get("process", {})
    for mode, label in (
        ("daemon", "sessionctl resume (daemon)"),
        ("scan_registry", "sessionctl resume (fallback, all folders)"),
        ("scan_local", "sessionctl resume (fallback, own folder)"),
    ):
        e = p.get(mode)
        if e:
            add(
                label,
                f"warm {_ms(e['warm_ms'])}  cold {_ms(e.get('cold_ms'))}  [source={e['source']}, "
                f"median of {e.get('warm_runs')} / {e.get('cold_runs', 0)} runs]",
            )
    if p.get("daemon") and p.get("scan_registry"):
        scan, daemon = p["scan_registry"], p["daemon"]
        add(
            "  fallback (all folders) / daemon, warm / cold",
            f"{_ratio(scan['warm_ms'], daemon['warm_ms'])} / "
            f"{_ratio(scan.get('cold_ms'), daemon.get('cold_ms'))}",
        )
    if results.get("interpreter_start_ms") is not None:
        add(
            "  for scale: python -c pass / import sessionctl.cli",
            " / ".join(map(_ms, results["interpreter_start_ms"])),
        )
    s = results.get("scan_resume", {})
    for scope, label in (
        ("registry", "scan_resume in-process (all folders)"),
        ("local", "scan_resume in-process (own folder)"),
    ):
        e = s.get(scope)
        if e:
            add(label, f"warm {_ms(e['warm_ms'])}  cold {_ms(e.get('cold_ms'))}")
    for scope in ("registry", "local"):
        e = s.get(scope)
        if plain and e:
            add(
                f"  scan_resume ({'all folders' if scope == 'registry' else 'own folder'}) / "
                "resume p50, warm / cold",
                f"{_ratio(e['warm_ms'], plain['p50_us'] / 1000)} / "
                f"{_ratio(e.get('cold_ms'), plain['p50_us'] / 1000)}",
            )
    add()
    rv = results.get("rename_to_visible", {})
    if rv:
        w, q = rv["watch"], rv["resume_poll"]
        add(
            "rename -> watch event",
            f"{_p50_p99(w)}  max {_us(w, 'max_us')}  (n={w['n']}, missed {w['missed']}, "
            f"over 100 ms: {w['over_100ms']}, "
            f"~{w['file_bytes'] // 1024} KiB files)",
        )
        add(
            "rename -> resume returns it",
            f"{_p50_p99(q)}  max {_us(q, 'max_us')}  (n={q['n']}, missed {q['missed']}, "
            "polled every 200 us)",
        )
    add()
    add()
    for tag, label in (
        ("first-cold", "start to ready, empty state, cold page cache"),
        ("first-warm", "start to ready, empty state, warm page cache"),
        ("restart-cold", "start to ready, restart, cold page cache"),
        ("restart-warm", "start to ready, restart, warm page cache"),
    ):
        e = results.get("start", {}).get(tag)
        if e:
            wanted_cold = tag.endswith("cold")
            note = " (page cache NOT dropped)" if wanted_cold and not e["cold_page_cache"] else ""
            add(
                label,
                f"{e['ready_s']:.2f} s (daemon's ready event: {e['daemon_ready_ms']} ms), "
                f"RSS {e['rss_bytes'] / 2**20:.1f} MiB; busy after ready "
                f"{e['busy_after_ready_s']:.1f} s, then RSS {e['rss_settled_bytes'] / 2**20:.1f} "
                f"MiB{note}",
            )
    m = results.get("memory", {})
    if m:
        add(
            "RSS after the run / empty daemon",
            f"{m['rss_after_bytes'] / 2**20:.1f} MiB / {m['rss_empty_bytes'] / 2**20:.1f} MiB",
        )
        for key, when in (("per_session_bytes", "first start"),
                          ("per_session_restart_bytes", "restart")):  # fmt: skip
            if key in m:
                add(
                    f"RSS per indexed session, {when} (settled - empty)",
                    f"{m[key]:.0f} B  (x10,000 = {m[key] * 10_000 / 2**20:.1f} MiB)",
                )
    if "stop_s" in results:
        add("stop (SIGTERM to exit)", f"{results['stop_s']:.2f} s")
    check = results.get("correctness", {})
    if check:
        add(
            "answers checked",
            f"{check['workspaces']} workspaces, daemon wrong: {len(check['wrong'])}; "
            f"wrong in timed runs: {check['timed_wrong']}",
        )
    width = max(len(k) for k, _ in rows)
    load = results.get("load_average_before")
    lines = [
        f"sessiond benchmark  {results['when']}  {results['machine']}; load average "
        f"before {load}, after {results.get('load_average_after')}",
        "",
    ]
    lines += [f"{k.ljust(width)}  {v}" if k else "" for k, v in rows]
    return "\n".join(lines)


def _p50_p99(entry: dict[str, Any]) -> str:
    return f"p50 {_us(entry, 'p50_us')}  p99 {_us(entry, 'p99_us')}"


# --- main ------------------------------------------------------------------------------------
