#!/usr/bin/env bash
# Runs each fuzz target (fuzz/fuzz_targets) for a fixed number of inputs with libFuzzer, through
# cargo fuzz on the nightly toolchain; installs cargo fuzz into the cache folder if it is missing.
# Each target starts from the seeds in fuzz/seeds/TARGET and what earlier runs found interesting
# (kept in the cache). A panic, a crash or a leak fails the run and leaves the input in
# fuzz/artifacts/TARGET. Prints one line per target: the inputs run.
#   hack/fuzz.sh            every target, FUZZ_RUNS inputs each (default 1000000)
#   hack/fuzz.sh TARGET...  those targets
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE="${MFA_RECALL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mfa-recall}"
RUNS="${FUZZ_RUNS:-1000000}"
rustup toolchain list | grep -q '^nightly' || { echo "fuzz: the nightly toolchain is missing: rustup toolchain install nightly" >&2; exit 1; }
export PATH="$CACHE/tools/bin:$PATH"
if ! command -v cargo-fuzz >/dev/null; then
  cargo install --locked cargo-fuzz --version 0.13.2 --root "$CACHE/tools"
fi
export CARGO_TARGET_DIR="$CACHE/fuzz-target"

targets=("$@")
if [ "${#targets[@]}" -eq 0 ]; then
  targets=(provider_headers provider_json auth0_export tenant_objects)
fi
cargo +nightly fuzz build --fuzz-dir fuzz
for target in "${targets[@]}"; do
  corpus="$CACHE/fuzz-corpus/$target"
  mkdir -p "$corpus" "fuzz/artifacts/$target"
  log="$(mktemp)"
  # -rss_limit_mb: an input that makes the operator's parsing hold too much memory is a failure.
  if ! cargo +nightly fuzz run --fuzz-dir fuzz "$target" "$corpus" "fuzz/seeds/$target" -- \
      -runs="$RUNS" -max_len=65536 -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 >"$log" 2>&1; then
    tail -n 60 "$log" >&2
    echo "fuzz: $target FAILED; the input is in fuzz/artifacts/$target" >&2
    exit 1
  fi
  executed="$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || true)"
  echo "fuzz: $target: ${executed:-?} inputs, 0 panics"
  rm -f "$log"
done
