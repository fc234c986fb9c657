#!/usr/bin/env bash
# Run the test suite against local Garage and moto servers: start them, export
# their endpoints and credentials, run `cargo test --locked` with this script's
# arguments, and stop the servers on exit. Without arguments, the integration
# tests then run once more with trace logs. Exits with cargo's exit code.
#
# Example: bash tests/run.sh -- --nocapture
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
cargo test --locked "$@" || status=$?

# Once more at trace level (-vvv) for every test that gives r2sync
# credentials or tokens: the shared helpers fail a test whose output
# contains a secret access key. The two front matter tests use no
# credentials and are left out to save time.
if [[ $status -eq 0 && $# -eq 0 ]]; then
    R2SYNC_TEST_TRACE=1 cargo test --locked \
        $(find tests -maxdepth 1 -name '*.rs' ! -name fixtures.rs ! -name front_matter_reference.rs \
            -printf '--test %f\n' | sed 's/\.rs$//') || status=$?
fi
exit "$status"
