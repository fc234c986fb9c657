#!/usr/bin/env bash
# Stop the Garage and moto servers that start.sh launched, found by their PID
# files in the state directory. Does nothing for a server that is not running.
#
# Environment (optional):
#   R2SYNC_TEST_STATE_DIR  state directory (default: target/test-servers in the repo)
set -euo pipefail

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo_root=$(cd "$script_dir/../.." && pwd)
state_dir=${R2SYNC_TEST_STATE_DIR:-$repo_root/target/test-servers}

# Seconds to wait after SIGTERM before sending SIGKILL.
grace_seconds=10

# Succeed if PID is a live process whose command line contains PATTERN. The check
# on the command line keeps a reused PID from being killed.
is_server_process() {
    local pid=$1 pattern=$2
    local state

    [[ $pid =~ ^[0-9]+$ && -r /proc/$pid/cmdline ]] || return 1
    # A zombie has already exited and only waits for its parent to reap it.
    state=$(awk '{ print $3 }' "/proc/$pid/stat" 2>/dev/null) || return 1
    [[ $state != Z ]] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$pattern"
}

# Stop the server NAME whose command line contains PATTERN.
stop_server() {
    local name=$1 pattern=$2
    local pid_file=$state_dir/$name.pid
    local pid deadline

    [[ -f $pid_file ]] || return 0
    pid=$(<"$pid_file")

    if is_server_process "$pid" "$pattern"; then
        kill -TERM "$pid" 2>/dev/null || true
        deadline=$((SECONDS + grace_seconds))
        while is_server_process "$pid" "$pattern" && ((SECONDS < deadline)); do
            sleep 0.1
        done
        if is_server_process "$pid" "$pattern"; then
            echo "[stop.sh] $name (pid $pid) still running ${grace_seconds}s after SIGTERM, sending SIGKILL" >&2
            kill -KILL "$pid" 2>/dev/null || true
            for _ in {1..50}; do
                is_server_process "$pid" "$pattern" || break
                sleep 0.1
            done
            if is_server_process "$pid" "$pattern"; then
                echo "[stop.sh] error: $name (pid $pid) still running 5s after SIGKILL" >&2
                return 1
            fi
        fi
        echo "[stop.sh] stopped $name (pid $pid)"
    fi

    rm -f "$pid_file"
}

[[ -d $state_dir ]] || exit 0

stop_server garage 'garage.* server'
stop_server moto moto_server

# The credentials in the env file belong to the servers just stopped.
rm -f "$state_dir/env"
