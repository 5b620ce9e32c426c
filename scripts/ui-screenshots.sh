#!/usr/bin/env bash
# Refresh the web interface's screenshots in docs/ (shown in the README): the browser tests
# of tests/ui.rs save them there instead of under target/. Needs chromium and
# chromium-driver (scripts/setup.sh); the inserted-tray pictures need root (loop devices).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
TRAYBACK_SCREENSHOTS="$PWD/docs" cargo test --release --test ui
ls -l docs/ui-*.png
