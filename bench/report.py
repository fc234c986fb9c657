#!/usr/bin/env python3
"""Results file and Markdown table of bench/compare.sh.

Subcommands:

  meta    Write or update WORK/meta.json from NAME=VALUE arguments
          (version.TOOL=... goes into a "versions" object).
  record  Append one measurement as a JSON line to the results file.
  table   Print the machine, the versions, the comparison table and the
          targets as Markdown.
"""

import argparse
import json
import math
import statistics
import sys

SCENARIOS = [
    ("initial", "initial upload"),
    ("noop", "no-op sync, fresh clone"),
    ("plan", "plan only"),
    ("incremental", "incremental sync"),
]

MODE_LABELS = {
    "r2sync:default": "r2sync apply",
    "rclone:checksum": "rclone sync --checksum",
    "rclone:default": "rclone sync",
    "aws:default": "aws s3 sync",
    "s5cmd:default": "s5cmd sync",
    "s5cmd:size-only": "s5cmd sync --size-only",
}

# Names under which a proxy's stats may give the requests by HTTP method.
METHOD_COUNT_KEYS = ("requests_by_method", "by_method", "methods", "requests")


def command_meta(args):
    meta = {}
    if args.update:
        with open(args.out) as meta_file:
            meta = json.load(meta_file)
    for pair in args.values:
        name, _, value = pair.partition("=")
        if name.startswith("version."):
            meta.setdefault("versions", {})[name[len("version."):]] = value
        else:
            meta[name] = value
    with open(args.out, "w") as meta_file:
        json.dump(meta, meta_file, indent=1)


def method_counts(stats):
    """Return {HTTP method: requests} from the proxy's stats, or None."""
    for key in METHOD_COUNT_KEYS:
        value = stats.get(key)
        if isinstance(value, dict) and all(isinstance(count, int) for count in value.values()):
            return {method.upper(): count for method, count in value.items() if count}
    return None


def command_record(args):
    with open(args.stats) as stats_file:
        stats = json.load(stats_file)
    try:
        with open(args.verify) as verify_file:
            verify = json.loads(verify_file.read().strip().splitlines()[-1])
    except (OSError, IndexError, ValueError):
        verify = {}
    methods = method_counts(stats)
    total = stats.get("requests_total")
    if total is None and methods is not None:
        total = sum(methods.values())
    entry = {
        "mode": args.mode,
        "scenario": args.scenario,
        "run": args.run,
        "seconds": args.seconds,
        "cpu_seconds": args.cpu_seconds,
        "rss_kib": args.rss_kib,
        "exit_code": args.exit_code,
        "correct": args.correct == "yes",
        "requests_total": total,
        "requests_by_method": methods,
        "bytes_from_client": stats.get("bytes_from_client"),
        "bytes_to_client": stats.get("bytes_to_client"),
        "verify": verify,
    }
    with open(args.results, "a") as results:
        results.write(json.dumps(entry) + "\n")


def median_or_none(values):
    values = [value for value in values if value is not None]
    return statistics.median(values) if values else None


def summarize(entries):
    """Return the medians and the verdict of the runs of one mode and scenario."""
    methods = {}
    for entry in entries:
        for method in entry["requests_by_method"] or {}:
            methods[method] = median_or_none([(e["requests_by_method"] or {}).get(method, 0) for e in entries])
    wrong = [entry for entry in entries if not entry["correct"]]
    return {
        "runs": len(entries),
        "seconds": statistics.median(entry["seconds"] for entry in entries),
        "cpu_seconds": median_or_none([entry.get("cpu_seconds") for entry in entries]),
        "requests_total": median_or_none([entry["requests_total"] for entry in entries]),
        "methods": methods if any(entry["requests_by_method"] for entry in entries) else None,
        "bytes_from_client": median_or_none([entry["bytes_from_client"] for entry in entries]),
        "bytes_to_client": median_or_none([entry["bytes_to_client"] for entry in entries]),
        "rss_kib": max(entry["rss_kib"] for entry in entries),
        "correct": not wrong,
        "wrong_runs": len(wrong),
        "wrong_example": wrong[0] if wrong else None,
    }


def format_seconds(seconds):
    return f"{seconds:.2f} s" if seconds < 100 else f"{seconds:.0f} s"


def format_count(value):
    return "n/a" if value is None else f"{value:,.0f}"


def format_methods(methods):
    if methods is None:
        return "n/a"
    return ", ".join(f"{method} {count:,.0f}" for method, count in sorted(methods.items()))


def format_bytes(value):
    if value is None:
        return "n/a"
    if value >= 1024 * 1024:
        return f"{value / (1024 * 1024):.1f} MiB"
    return f"{value / 1024:.0f} KiB"


def format_verdict(summary):
    if summary["correct"]:
        return "yes"
    entry = summary["wrong_example"]
    reasons = []
    if entry["exit_code"] != 0:
        reasons.append(f"exit {entry['exit_code']}")
    verify = entry.get("verify") or {}
    for field, word in (("missing", "missing"), ("extra", "extra"), ("mismatched", "different")):
        if verify.get(field):
            reasons.append(f"{verify[field]:,} {word}")
    if "planned_writes" in verify:
        reasons.append(f"planned {verify['planned_writes']} writes, {verify['planned_removals']} removals")
    runs = f"{summary['wrong_runs']} of {summary['runs']} runs" if summary["runs"] > 1 else ""
    detail = "; ".join(part for part in (runs, ", ".join(reasons)) if part)
    return f"**no** ({detail})" if detail else "**no**"


def load_results(path):
    groups = {}
    with open(path) as results:
        for line in results:
            if line.strip():
                entry = json.loads(line)
                groups.setdefault((entry["scenario"], entry["mode"]), []).append(entry)
    return {key: summarize(entries) for key, entries in groups.items()}


def best_peer(summaries, scenario, always_correct=False):
    """Return (mode, summary) of the fastest correct peer in a scenario, or None.

    With always_correct, only modes that were correct in every scenario count:
    a mode such as s5cmd --size-only is fast in a no-op sync but misses
    same-size edits in another.
    """
    wrong_somewhere = {mode for (_, mode), summary in summaries.items() if not summary["correct"]}
    peers = [
        (mode, summary)
        for (name, mode), summary in summaries.items()
        if name == scenario
        and not mode.startswith("r2sync")
        and summary["correct"]
        and not (always_correct and mode in wrong_somewhere)
    ]
    return min(peers, key=lambda item: item[1]["seconds"]) if peers else None


def mode_order(mode):
    return list(MODE_LABELS).index(mode) if mode in MODE_LABELS else len(MODE_LABELS)


def print_header(meta, out):
    out.write(f"### Comparison run of {meta.get('date', '?')}\n\n")
    out.write(
        f"Machine: {meta.get('nproc', '?')} cores ({meta.get('cpu', '?')}), {meta.get('memory', '?')}, "
        f"{meta.get('os', '?')}. Load average (1, 5, 15 min) {meta.get('load_before', '?')} before the run "
        f"and {meta.get('load_after', '?')} after it.\n\n"
    )
    subset = meta.get("subset") or ""
    corpus = meta.get("corpus", "?") + (f", folder `{subset}` only" if subset else "")
    duration = meta.get("duration_seconds")
    duration_text = f"; the run took {int(duration) // 60} min {int(duration) % 60} s" if duration else ""
    out.write(
        f"Corpus: {corpus}. Runs per scenario: {meta.get('runs', '?')} (the table shows medians, "
        f"and the largest peak RSS). Concurrency: {meta.get('concurrency', '?')}. "
        f"Requests counted by: {meta.get('proxy') or 'nothing (fault_proxy.py was missing)'}{duration_text}.\n\n"
    )
    out.write("Versions:\n\n")
    for tool, version in (meta.get("versions") or {}).items():
        if version:
            out.write(f"- {tool}: {version}\n")
    out.write("\n")


def print_table(summaries, out):
    out.write(
        "| scenario | tool and mode | median time | CPU time | requests | requests by method "
        "| bytes sent | bytes received | peak RSS | correct | r2sync time / best correct peer |\n"
    )
    out.write("|---|---|---:|---:|---:|---|---:|---:|---:|---|---:|\n")
    for scenario, scenario_label in SCENARIOS:
        modes = sorted((mode for name, mode in summaries if name == scenario), key=mode_order)
        peer = best_peer(summaries, scenario)
        for mode in modes:
            summary = summaries[(scenario, mode)]
            ratio = ""
            if mode.startswith("r2sync") and peer is not None:
                ratio = f"{summary['seconds'] / peer[1]['seconds']:.2f} ({MODE_LABELS.get(peer[0], peer[0])})"
            label = MODE_LABELS.get(mode, mode)
            if scenario == "plan":
                label = "r2sync plan"
            cpu = "n/a" if summary["cpu_seconds"] is None else format_seconds(summary["cpu_seconds"])
            out.write(
                f"| {scenario_label} | {label} | {format_seconds(summary['seconds'])} | {cpu} "
                f"| {format_count(summary['requests_total'])} | {format_methods(summary['methods'])} "
                f"| {format_bytes(summary['bytes_from_client'])} | {format_bytes(summary['bytes_to_client'])} "
                f"| {summary['rss_kib'] / 1024:.0f} MiB | {format_verdict(summary)} | {ratio} |\n"
            )
    out.write("\n")


def print_targets(summaries, expect, out):
    """Print each target of r2sync with pass, fail or not measured."""
    counts = expect["markdown"]

    def line(name, passed, detail):
        if passed is None:
            verdict = "not measured"
        elif passed:
            verdict = "pass"
        else:
            verdict = "**fail**"
        out.write(f"- {name}: {verdict} ({detail})\n")

    out.write("Targets for r2sync:\n\n")

    noop = summaries.get(("noop", "r2sync:default"))
    noop_peer = best_peer(summaries, "noop")
    # A no-op sync needs the listing (1,000 keys per page) and at most three
    # more requests, such as reading the state manifest.
    noop_limit = math.ceil(counts["files_old"] / 1000) + 3
    if noop is None:
        line("no-op requests", None, "r2sync did not run")
    elif noop["requests_total"] is None:
        line("no-op requests", None, f"limit {noop_limit}, requests not counted")
    else:
        line(
            "no-op requests",
            noop["correct"] and noop["requests_total"] <= noop_limit,
            f"{noop['requests_total']:,.0f} requests, limit ceil({counts['files_old']:,}/1000)+3 = {noop_limit}",
        )
    if noop is not None and noop_peer is not None:
        speedup = noop_peer[1]["seconds"] / noop["seconds"]
        detail = f"{speedup:.1f}x faster than {MODE_LABELS.get(noop_peer[0], noop_peer[0])}"
        safe_peer = best_peer(summaries, "noop", always_correct=True)
        if safe_peer is not None and safe_peer[0] != noop_peer[0]:
            detail += (
                f"; {safe_peer[1]['seconds'] / noop['seconds']:.1f}x faster than "
                f"{MODE_LABELS.get(safe_peer[0], safe_peer[0])}, the best peer correct in every scenario"
            )
        line("no-op at least 3x faster than the best peer", noop["correct"] and speedup >= 3, detail)
    else:
        line("no-op at least 3x faster than the best peer", None, "no correct peer or no r2sync run")

    incremental = summaries.get(("incremental", "r2sync:default"))
    # One PUT per written key, one DeleteObjects call per 1,000 removed keys
    # and the listing of the old state.
    minimum = (
        counts["written"] + math.ceil(counts["removed"] / 1000) + max(1, math.ceil(counts["files_old"] / 1000))
    )
    if incremental is None:
        line("incremental requests within 5% of the minimum", None, "r2sync did not run")
    elif incremental["requests_total"] is None:
        line("incremental requests within 5% of the minimum", None, f"minimum {minimum:,}, requests not counted")
    else:
        excess = incremental["requests_total"] / minimum - 1
        line(
            "incremental requests within 5% of the minimum",
            incremental["correct"] and excess <= 0.05,
            f"{incremental['requests_total']:,.0f} requests, minimum {minimum:,} = {counts['written']:,} PUT "
            f"+ {math.ceil(counts['removed'] / 1000)} DeleteObjects + {max(1, math.ceil(counts['files_old'] / 1000))} "
            f"listing pages; {excess:+.1%}",
        )
    correct_peers = [
        (mode, summary)
        for (name, mode), summary in summaries.items()
        if name == "incremental" and not mode.startswith("r2sync") and summary["correct"]
    ]
    if incremental is not None and correct_peers:
        slower_than = [MODE_LABELS.get(mode, mode) for mode, summary in correct_peers
                       if summary["seconds"] <= incremental["seconds"]]
        line(
            "incremental faster than every correct peer",
            incremental["correct"] and not slower_than,
            "slower than or as slow as " + ", ".join(slower_than) if slower_than else
            f"fastest correct peer {format_seconds(min(s['seconds'] for _, s in correct_peers))}",
        )
    else:
        line("incremental faster than every correct peer", None, "no correct peer or no r2sync run")

    initial = summaries.get(("initial", "r2sync:default"))
    initial_peer = best_peer(summaries, "initial")
    if initial is not None and initial_peer is not None:
        line(
            "initial upload at least as fast as the best peer",
            initial["correct"] and initial["seconds"] <= initial_peer[1]["seconds"],
            f"{format_seconds(initial['seconds'])} against {format_seconds(initial_peer[1]['seconds'])} "
            f"for {MODE_LABELS.get(initial_peer[0], initial_peer[0])}",
        )
    else:
        line("initial upload at least as fast as the best peer", None, "no correct peer or no r2sync run")
    out.write("\n")


def command_table(args):
    with open(args.meta) as meta_file:
        meta = json.load(meta_file)
    with open(args.expect) as expect_file:
        expect = json.load(expect_file)
    summaries = load_results(args.results)
    out = sys.stdout
    print_header(meta, out)
    print_table(summaries, out)
    counts = expect["raw"]
    out.write(
        f"The older commit has {counts['files_old']:,} files and the newer {counts['files_new']:,}; "
        f"the incremental sync writes {counts['written']:,} keys and removes {counts['removed']:,}.\n\n"
    )
    print_targets(summaries, expect, out)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    meta = commands.add_parser("meta", help="write or update the run description")
    meta.add_argument("--out", required=True)
    meta.add_argument("--update", action="store_true", help="keep the values already in --out")
    meta.add_argument("values", nargs="*", metavar="NAME=VALUE")

    record = commands.add_parser("record", help="append one measurement to the results file")
    record.add_argument("--results", required=True)
    record.add_argument("--mode", required=True)
    record.add_argument("--scenario", required=True)
    record.add_argument("--run", type=int, required=True)
    record.add_argument("--seconds", type=float, required=True)
    record.add_argument("--cpu-seconds", type=float, required=True, help="user plus system CPU time")
    record.add_argument("--rss-kib", type=int, required=True)
    record.add_argument("--exit-code", type=int, required=True)
    record.add_argument("--stats", required=True, help="the JSON response of the proxy's GET /__proxy/stats")
    record.add_argument("--correct", choices=["yes", "no"], required=True)
    record.add_argument("--verify", required=True, help="the output of verify.py bucket or plan")

    table = commands.add_parser("table", help="print the Markdown report")
    table.add_argument("--results", required=True)
    table.add_argument("--expect", required=True, help="the output of verify.py expect")
    table.add_argument("--meta", required=True)

    args = parser.parse_args()
    handlers = {"meta": command_meta, "record": command_record, "table": command_table}
    handlers[args.command](args)


if __name__ == "__main__":
    main()
