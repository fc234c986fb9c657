#!/usr/bin/env bash
# Measures `r2sync plan` against an empty file:// target on generated
# repositories of N small Markdown documents. Prints a Markdown table of
# wall time, CPU time, peak resident memory and the time of the
# desired-state build as logged. CPU time (user plus system) is steadier
# than wall time when other processes compete for the cores.
#
# Usage: bench/scale.sh [N ...]        (default: 10000 100000 1000000)
#
# Environment:
#   R2SYNC_BIN        binary to measure (default: target/release/r2sync,
#                     built with `cargo build --release` when missing)
#   SCALE_WORK_DIR    where repositories are generated and kept between
#                     runs (default: /tmp/r2sync-scale)
#
# Repositories are written with `git fast-import`, so no work tree is
# created: documents sit in folders of 1,000, each with YAML front matter,
# a heading and a paragraph. A repository is reused when it exists.
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
bin="${R2SYNC_BIN:-$here/target/release/r2sync}"
work="${SCALE_WORK_DIR:-/tmp/r2sync-scale}"
sizes=("$@")
if [ ${#sizes[@]} -eq 0 ]; then
    sizes=(10000 100000 1000000)
fi

if [ ! -x "$bin" ]; then
    (cd "$here" && cargo build --release --quiet)
fi
if [ ! -x /usr/bin/time ]; then
    echo "bench/scale.sh needs GNU time at /usr/bin/time (Debian package 'time')" >&2
    exit 1
fi

# Writes a fast-import stream of $1 documents to stdout.
generate_stream() {
    awk -v count="$1" 'BEGIN {
        print "commit refs/heads/main"
        print "committer Bench <bench@example.invalid> 1700000000 +0000"
        print "data 5"
        print "bench"
        for (i = 0; i < count; i++) {
            body = sprintf("---\ntitle: Page %d\ntags: [bench, scale]\n---\n\n# Page %d\n\nThis is document %d of a generated repository, with a few words to count.\n", i, i, i)
            printf "M 100644 inline section%d/page%d.md\n", int(i / 1000), i
            printf "data %d\n%s\n", length(body), body
        }
    }'
}

# Creates the repository for $1 documents under $work unless it exists.
ensure_repository() {
    local count="$1" dir="$work/repo-$1"
    if [ -d "$dir" ] && git -C "$dir" rev-parse --verify -q refs/heads/main >/dev/null; then
        return
    fi
    rm -rf "$dir"
    git init -q --bare -b main "$dir"
    generate_stream "$count" | git -C "$dir" fast-import --quiet
}

echo "| documents | wall time | CPU time | peak RSS | desired state built in | wall µs per document |"
echo "|---:|---:|---:|---:|---:|---:|"
for count in "${sizes[@]}"; do
    ensure_repository "$count"
    target="$work/empty-target"
    rm -rf "$target"
    mkdir -p "$target"
    log="$work/plan-$count.log"
    /usr/bin/time -f 'TIME %e %U %S %M' -o "$work/time-$count.txt" \
        "$bin" --log-format json -v --no-progress plan \
        --repo "$work/repo-$count" --target "file://$target" \
        >/dev/null 2>"$log"
    read -r _ seconds user system kib <"$work/time-$count.txt"
    built_ms=$(grep -o '"built desired state"[^}]*"elapsed_ms":[0-9]*' "$log" \
        | grep -o '[0-9]*$' || true)
    awk -v n="$count" -v s="$seconds" -v u="$user" -v y="$system" -v k="$kib" \
        -v b="${built_ms:-0}" 'BEGIN {
        printf "| %d | %.2f s | %.2f s | %.0f MiB | %.2f s | %.1f |\n",
            n, s, u + y, k / 1024, b / 1000, s * 1e6 / n
    }'
done
