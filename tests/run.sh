#!/usr/bin/env bash
# Run the test suite against local Garage and moto servers: start them, export
# their endpoints and credentials, run the tests, and stop the servers on exit.
# Without arguments: unit and quick integration tests, then the integration
# tests that use credentials at trace level (see below). With arguments: only
# `cargo test --locked ARGS`. Exits with cargo's exit code.
#
# Example: bash tests/run.sh --test locking -- --nocapture
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# start.sh and stop.sh must agree on the state directory, so pass it as an
# absolute path before changing directory.
state_dir=${R2SYNC_TEST_STATE_DIR:-$repo_root/target/test-servers}
mkdir -p "$state_dir"
R2SYNC_TEST_STATE_DIR=$(cd "$state_dir" && pwd)
export R2SYNC_TEST_STATE_DIR

cd "$repo_root"

trap 'bash tests/servers/stop.sh' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

bash tests/servers/start.sh
# shellcheck source=/dev/null
source "$R2SYNC_TEST_STATE_DIR/env"

# Makes the integration tests fail, not skip, when R2SYNC_TEST_SERVERS is empty.
export R2SYNC_TEST_REQUIRE_SERVERS=1

# The test servers are on 127.0.0.1, so requests to them must bypass any proxy.
export NO_PROXY=127.0.0.1,localhost${NO_PROXY:+,$NO_PROXY}
export no_proxy=$NO_PROXY

status=0
if [[ $# -gt 0 ]]; then
    cargo test --locked "$@" || status=$?
    exit "$status"
fi

# Integration tests, one `--test NAME` per file in tests/, minus the names given.
test_targets() {
    local file name
    for file in tests/*.rs; do
        name=$(basename "$file" .rs)
        if [[ " $* " != *" $name "* ]]; then
            printf -- '--test %s ' "$name"
        fi
    done
}

# The fault-injecting proxy that some tests use must work first.
python3 tests/servers/fault_proxy.py --self-test || exit 1

# The unit tests and the quick integration tests at the normal log level.
# shellcheck disable=SC2046
cargo test --locked --lib --bins $(test_targets e2e_hugo faults crash) || status=$?

# Then every test that gives r2sync credentials or tokens at trace level
# (-vvv): the shared helpers fail a test whose output contains a secret
# access key. The three long tests run only here, so each scenario runs once
# with the most verbose logs. The two front matter tests use no credentials.
if [[ $status -eq 0 ]]; then
    # shellcheck disable=SC2046
    R2SYNC_TEST_TRACE=1 cargo test --locked $(test_targets fixtures front_matter_reference) || status=$?
fi
exit "$status"
