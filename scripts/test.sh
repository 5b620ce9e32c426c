#!/usr/bin/env bash
# The whole test suite, as CI runs it: set-up, formatting and lints, every test (root-only
# tests run when root: real ext4 file systems on loop devices), a smoke run of the
# benchmark, and the format-independent tests again on media of the older tree formats.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
cargo fmt --check
cargo clippy --release --all-targets --quiet -- -D warnings
cargo build --release --quiet
python3 bench/bench.py --smoke
cargo test --release

# The same reading, writing, paring and damage tests again on media of the older tree formats
# a medium keeps for life (FORMAT.md "The tree"): 1, fixed blocks; 2, content-defined blocks
# without frames; tests/support's Env makes its media so when TRAYBACK_TREE_FORMAT is set.
# Every `media init` a test runs through tests/support (Env, in_test_tree_format) takes the
# format, unless the test names one itself. Not among them: tests of one format's own
# behaviour (frames, frames_attacks, cdc_attacks, incremental_cost, scale_attacks), of the
# source side (walk, walk_attacks, memory, logs: what a backup logs of its source), the agent,
# UI and package tests (their media are the agent's or the lab's), gc_failures (100 s a
# format), and tests without a medium (planners, decode_alloc). About 4 minutes for both.
OLD_FORMAT_TESTS=(roundtrip crash damage hostile hostile_media readers restore_safety room
    room_failures crypt crypt_attacks crypt_id_file crypt_rollback no_panic errors schedule_pare
    reach_attacks media_proof)
for format in 1 2; do
    echo "== tests on media of tree format $format"
    TRAYBACK_TREE_FORMAT=$format cargo test --release --quiet \
        $(printf -- '--test %s ' "${OLD_FORMAT_TESTS[@]}")
done
