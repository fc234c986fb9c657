#!/usr/bin/env bash
# Start a single-node Garage and a moto server on 127.0.0.1, each with an empty
# bucket `r2sync-test`, and write their endpoints and credentials to
# $STATE_DIR/env as shell exports.
#
# Every start begins with empty servers: servers left running by an earlier start
# are stopped first and Garage's data from it is deleted.
#
# Environment (all optional):
#   R2SYNC_TEST_STATE_DIR        state directory for data, logs, PID files and the
#                                env file (default: target/test-servers in the repo)
#   R2SYNC_TEST_MOTO_PORT        moto S3 port (default: a free port)
#   R2SYNC_TEST_GARAGE_PORT      Garage S3 API port (default: a free port)
#   R2SYNC_TEST_GARAGE_RPC_PORT  Garage RPC port (default: a free port)
#   R2SYNC_TEST_START_TIMEOUT    seconds to wait for each server (default: 60)
set -euo pipefail

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo_root=$(cd "$script_dir/../.." && pwd)
state_dir=${R2SYNC_TEST_STATE_DIR:-$repo_root/target/test-servers}
timeout=${R2SYNC_TEST_START_TIMEOUT:-60}

bucket=r2sync-test

# moto accepts any access key and secret. us-east-1 is its default region.
moto_access_key_id=testing
moto_secret_access_key=testing-secret
moto_region=us-east-1

# Clients must sign requests to Garage with the s3_region from its config file.
garage_region=garage

# Keep every HTTP client that this script starts away from any proxy, because
# all servers it talks to are on 127.0.0.1.
export NO_PROXY=127.0.0.1,localhost
export no_proxy=$NO_PROXY

log() {
    printf '[start.sh] %s\n' "$*"
}

die() {
    printf '[start.sh] error: %s\n' "$*" >&2
    exit 1
}

# Print the seconds since the EPOCHREALTIME value $1, with one decimal.
elapsed_since() {
    awk -v start="$1" -v now="$EPOCHREALTIME" 'BEGIN { printf "%.1f", now - start }'
}

# Print N distinct TCP ports that are free on 127.0.0.1 right now. All sockets stay
# bound until every port is chosen, so the ports differ from each other.
pick_free_ports() {
    python3 - "$1" <<'EOF'
import socket
import sys

sockets = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    sockets.append(s)
print(" ".join(str(s.getsockname()[1]) for s in sockets))
EOF
}

# Run COMMAND every 0.2 s until it succeeds. Fail with the end of LOG_FILE if the
# process PID exits first or LOG_FILE contains FATAL_PATTERN (an extended regular
# expression, or empty for none), or with a message after $timeout seconds.
# Arguments: NAME PID LOG_FILE FATAL_PATTERN COMMAND...
wait_until() {
    local name=$1 pid=$2 log_file=$3 fatal_pattern=$4
    shift 4
    local deadline=$((SECONDS + timeout))
    local failure

    until "$@" >/dev/null 2>&1; do
        failure=
        if ! kill -0 "$pid" 2>/dev/null; then
            failure="exited during startup"
        elif [[ -n $fatal_pattern ]] && grep -Eq -- "$fatal_pattern" "$log_file"; then
            failure="failed during startup"
        fi
        if [[ -n $failure ]]; then
            printf '[start.sh] error: %s (pid %s) %s. Last lines of %s:\n' \
                "$name" "$pid" "$failure" "$log_file" >&2
            tail -n 20 "$log_file" >&2
            exit 1
        fi

        if ((SECONDS >= deadline)); then
            die "$name (pid $pid) timed out: no response within ${timeout}s. See $log_file"
        fi
        sleep 0.2
    done
}

# Succeed when an HTTP server responds on URL, with any status code.
http_answers() {
    curl --silent --output /dev/null --max-time 2 "$1"
}

# Check that a signed HeadBucket on the bucket succeeds, retrying for up to
# $timeout seconds. With --create, create the bucket first.
# Arguments: [--create] ENDPOINT REGION ACCESS_KEY_ID SECRET_ACCESS_KEY BUCKET
check_bucket() {
    python3 - "$timeout" "$@" <<'EOF'
import sys
import time

import boto3
from botocore.config import Config

timeout = float(sys.argv[1])
args = sys.argv[2:]
create = args[0] == "--create"
if create:
    args = args[1:]
endpoint, region, access_key_id, secret_access_key, bucket = args

s3 = boto3.client(
    "s3",
    endpoint_url=endpoint,
    region_name=region,
    aws_access_key_id=access_key_id,
    aws_secret_access_key=secret_access_key,
    config=Config(
        s3={"addressing_style": "path"},
        connect_timeout=2,
        read_timeout=10,
        retries={"max_attempts": 1},
    ),
)
if create:
    s3.create_bucket(Bucket=bucket)

deadline = time.monotonic() + timeout
while True:
    try:
        s3.head_bucket(Bucket=bucket)
        break
    except Exception as error:
        if time.monotonic() >= deadline:
            sys.exit(f"HeadBucket {bucket} on {endpoint} failed: {error}")
        time.sleep(0.2)
EOF
}

# Fail unless VALUE can stand inside double quotes in a shell file unchanged.
check_env_value() {
    local name=$1 value=$2
    if [[ -z $value || $value == *[\"\$\`\\]* || $value == *$'\n'* ]]; then
        die "value for $name is empty or contains \", \$, \`, \\ or a line break: '$value'"
    fi
}

# ---- Settings and tools ----

if ! [[ $timeout =~ ^[0-9]+$ ]] || ((timeout == 0)); then
    die "invalid R2SYNC_TEST_START_TIMEOUT '$timeout': expected a positive number of seconds"
fi

garage_bin=$(command -v garage || true)
cargo_bin_dir=${CARGO_HOME:-$HOME/.cargo}/bin
if [[ -z $garage_bin && -x $cargo_bin_dir/garage ]]; then
    garage_bin=$cargo_bin_dir/garage
fi
if [[ -z $garage_bin ]]; then
    die "garage not found on PATH or in $cargo_bin_dir. Install it with: cargo install garage --locked (about 10 minutes on 2 cores)"
fi

if ! command -v moto_server >/dev/null; then
    die 'moto_server not found on PATH. Install it with: pip install "moto[server]"'
fi

if ! python3 -c 'import boto3' 2>/dev/null; then
    die 'python3 cannot import boto3. Install it with: pip install "moto[server]" (which brings boto3)'
fi

if ! command -v curl >/dev/null; then
    die "curl not found on PATH. Install it with: apt-get install curl"
fi

# ---- State directory ----

mkdir -p "$state_dir"
state_dir=$(cd "$state_dir" && pwd)
if [[ $state_dir == *[\"\\]* ]]; then
    die "state directory must not contain \" or \\ because it goes into Garage's TOML config: $state_dir"
fi

bash "$script_dir/stop.sh"

garage_dir=$state_dir/garage
rm -rf "$garage_dir"
rm -f "$state_dir/env" "$state_dir/garage.log" "$state_dir/moto.log"
mkdir -p "$garage_dir/meta" "$garage_dir/data"

# Stop whatever this script started if a later step fails.
trap 'status=$?; if ((status != 0)); then bash "$script_dir/stop.sh"; fi' EXIT

# ---- Ports ----

free_ports=$(pick_free_ports 3)
read -r free_moto_port free_garage_port free_garage_rpc_port <<<"$free_ports"
moto_port=${R2SYNC_TEST_MOTO_PORT:-$free_moto_port}
garage_port=${R2SYNC_TEST_GARAGE_PORT:-$free_garage_port}
garage_rpc_port=${R2SYNC_TEST_GARAGE_RPC_PORT:-$free_garage_rpc_port}
for port_value in "$moto_port" "$garage_port" "$garage_rpc_port"; do
    if ! [[ $port_value =~ ^[0-9]+$ ]] || ((port_value < 1 || port_value > 65535)); then
        die "invalid port '$port_value' in R2SYNC_TEST_MOTO_PORT, R2SYNC_TEST_GARAGE_PORT or R2SYNC_TEST_GARAGE_RPC_PORT: expected 1-65535"
    fi
done
log "ports on 127.0.0.1: moto $moto_port, garage S3 $garage_port, garage RPC $garage_rpc_port"

# ---- Launch both servers, then wait for each ----

garage_config=$garage_dir/garage.toml
garage_rpc_secret=$(python3 -c 'import secrets; print(secrets.token_hex(32))')
(
    umask 077
    cat >"$garage_config" <<EOF
metadata_dir = "$garage_dir/meta"
data_dir = "$garage_dir/data"
db_engine = "sqlite"
replication_factor = 1

rpc_bind_addr = "127.0.0.1:$garage_rpc_port"
rpc_public_addr = "127.0.0.1:$garage_rpc_port"
rpc_secret = "$garage_rpc_secret"

[s3_api]
s3_region = "$garage_region"
api_bind_addr = "127.0.0.1:$garage_port"
EOF
)

garage_cli() {
    RUST_LOG=warn "$garage_bin" -c "$garage_config" "$@"
}

garage_launched_at=$EPOCHREALTIME
NO_COLOR=1 RUST_LOG=netapp=info,garage=info "$garage_bin" -c "$garage_config" server \
    </dev/null >"$state_dir/garage.log" 2>&1 &
garage_pid=$!
echo "$garage_pid" >"$state_dir/garage.pid"
log "launched garage (pid $garage_pid), log: $state_dir/garage.log"

moto_launched_at=$EPOCHREALTIME
moto_server -H 127.0.0.1 -p "$moto_port" \
    </dev/null >"$state_dir/moto.log" 2>&1 &
moto_pid=$!
echo "$moto_pid" >"$state_dir/moto.pid"
log "launched moto (pid $moto_pid), log: $state_dir/moto.log"

# moto keeps everything in memory, so every start has a new empty server.
moto_endpoint=http://127.0.0.1:$moto_port
wait_until moto "$moto_pid" "$state_dir/moto.log" "" http_answers "$moto_endpoint/"
check_bucket --create "$moto_endpoint" "$moto_region" \
    "$moto_access_key_id" "$moto_secret_access_key" "$bucket"
log "moto ready at $moto_endpoint with bucket $bucket after $(elapsed_since "$moto_launched_at")s"

# When its S3 API server fails to start, for example on a port that is in use,
# Garage 2.5 logs "S3 API server exited with error", stops answering RPC and yet
# keeps running.
garage_endpoint=http://127.0.0.1:$garage_port
wait_until garage "$garage_pid" "$state_dir/garage.log" 'server exited with error' \
    garage_cli status

# A new Garage node stores nothing until it has a role in the cluster layout.
garage_node_id=$(garage_cli node id --quiet)
garage_node_id=${garage_node_id%%@*}
garage_cli layout assign --zone dc1 --capacity 1G "$garage_node_id" >/dev/null
garage_cli layout apply --version 1 >/dev/null

garage_key_info=$(garage_cli key create r2sync-test)
garage_access_key_id=$(awk '$1 == "Key" && $2 == "ID:" { print $3 }' <<<"$garage_key_info")
garage_secret_access_key=$(awk '$1 == "Secret" && $2 == "key:" { print $3 }' <<<"$garage_key_info")
if [[ -z $garage_access_key_id || -z $garage_secret_access_key ]]; then
    die "could not read the key ID and secret from the output of 'garage key create'"
fi
garage_cli bucket create "$bucket" >/dev/null
garage_cli bucket allow --read --write --owner "$bucket" --key "$garage_access_key_id" >/dev/null
check_bucket "$garage_endpoint" "$garage_region" \
    "$garage_access_key_id" "$garage_secret_access_key" "$bucket"
log "garage ready at $garage_endpoint with bucket $bucket after $(elapsed_since "$garage_launched_at")s"

# ---- Env file ----

# CONDITIONAL_WRITES is 1 where the server enforces If-None-Match and If-Match
# on PutObject (moto 5.2 returns 412) and 0 where it ignores them (Garage 2.5
# writes the object anyway).
env_lines=(
    "R2SYNC_TEST_SERVERS=moto garage"
    "R2SYNC_TEST_MOTO_ENDPOINT=$moto_endpoint"
    "R2SYNC_TEST_MOTO_BUCKET=$bucket"
    "R2SYNC_TEST_MOTO_ACCESS_KEY_ID=$moto_access_key_id"
    "R2SYNC_TEST_MOTO_SECRET_ACCESS_KEY=$moto_secret_access_key"
    "R2SYNC_TEST_MOTO_REGION=$moto_region"
    "R2SYNC_TEST_MOTO_CONDITIONAL_WRITES=1"
    "R2SYNC_TEST_GARAGE_ENDPOINT=$garage_endpoint"
    "R2SYNC_TEST_GARAGE_BUCKET=$bucket"
    "R2SYNC_TEST_GARAGE_ACCESS_KEY_ID=$garage_access_key_id"
    "R2SYNC_TEST_GARAGE_SECRET_ACCESS_KEY=$garage_secret_access_key"
    "R2SYNC_TEST_GARAGE_REGION=$garage_region"
    "R2SYNC_TEST_GARAGE_CONDITIONAL_WRITES=0"
)
env_file=$state_dir/env
(
    umask 077
    for line in "${env_lines[@]}"; do
        name=${line%%=*}
        value=${line#*=}
        check_env_value "$name" "$value"
        printf 'export %s="%s"\n' "$name" "$value"
    done >"$env_file.tmp"
)
mv "$env_file.tmp" "$env_file"
log "wrote $env_file"
