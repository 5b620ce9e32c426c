#!/usr/bin/env bash
# Fuzz the decoders of untrusted medium bytes for a while (needs the nightly toolchain).
#   scripts/fuzz.sh listing_decode 60     # target, seconds
#   scripts/fuzz.sh pack_records 60
# Uses cargo-fuzz when installed; otherwise builds with the same instrumentation flags.
set -euo pipefail
target=${1:-listing_decode}
secs=${2:-60}
cd "$(dirname "$0")/../fuzz"
mkdir -p "corpus/$target"
limits=(-max_total_time="$secs" -rss_limit_mb=512 -malloc_limit_mb=512 -timeout=10)
if cargo fuzz --version >/dev/null 2>&1; then
  exec cargo +nightly fuzz run "$target" "corpus/$target" -- "${limits[@]}"
fi
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
  -Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
  -Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks"
cargo +nightly build --release --bin "$target" --target x86_64-unknown-linux-gnu \
  --target-dir target
exec "target/x86_64-unknown-linux-gnu/release/$target" "corpus/$target" "${limits[@]}"
