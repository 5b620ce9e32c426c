#!/usr/bin/env bash
# The whole test suite, as CI runs it: set-up, formatting and lints, every test (root-only
# tests run when root: real ext4 file systems on loop devices), and a smoke run of the
# benchmark.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
cargo fmt --check
cargo clippy --release --all-targets --quiet -- -D warnings
cargo build --release --quiet
python3 bench/bench.py --smoke
cargo test --release
