#!/usr/bin/env bash
# Runs each cargo-fuzz target (fuzz/fuzz_targets) for a bounded time: the
# desired-state document parser and the proxy's route table + matcher. A crash
# fails the script and leaves its input in fuzz/artifacts/<target>/.
#
# Usage: scripts/fuzz.sh
# Env:   FUZZ_SECS  seconds per target [default: 30]
set -euo pipefail

# shellcheck source=lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

FUZZ_SECS="${FUZZ_SECS:-30}"
CARGO_FUZZ_VERSION=0.13.2

# libFuzzer needs nightly's -Z sanitizer flags; rustup fetches it from the same
# place as the stable toolchain.
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  info "fuzz: installing the nightly toolchain (minimal profile)"
  rustup toolchain install nightly --profile minimal ||
    die "fuzz: no nightly toolchain and rustup could not install one"
fi
if [[ "$(cargo fuzz --version 2>/dev/null || true)" != *"$CARGO_FUZZ_VERSION"* ]]; then
  info "fuzz: installing cargo-fuzz $CARGO_FUZZ_VERSION"
  cargo install --locked cargo-fuzz --version "$CARGO_FUZZ_VERSION"
fi

cd "$REPO_ROOT"
for target in desired_document route_match; do
  corpus="$REPO_ROOT/target/fuzz-corpus/$target"
  mkdir -p "$corpus"
  info "fuzz: $target for ${FUZZ_SECS}s"
  # The seeds stay read-only in git; what the fuzzer finds goes to target/.
  log="$REPO_ROOT/target/fuzz-$target.log"
  set +e
  cargo +nightly fuzz run --fuzz-dir fuzz "$target" "$corpus" "fuzz/seeds/$target" -- \
    -max_total_time="$FUZZ_SECS" -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1
  status=$?
  set -e
  grep -E '^(Done|stat::number_of_executed_runs|stat::peak_rss_mb|INFO: seed corpus)|panicked|ERROR|SUMMARY' "$log" || true
  [[ "$status" == 0 ]] || die "fuzz: $target failed (exit $status): see $log; the input is in fuzz/artifacts/$target/"
done
