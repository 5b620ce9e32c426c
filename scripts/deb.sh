#!/usr/bin/env bash
# Build the Debian package: the release binary, the generated files of the package layout
# (man pages, completions, udev rule, units with /usr paths) under target/package from that
# same binary (`trayback package-files`), then `cargo deb --no-build` (the binary is already
# stripped by the release profile). Prints the .deb's path.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v cargo-deb >/dev/null || { echo "deb: cargo-deb missing (scripts/setup.sh installs it)" >&2; exit 1; }
cargo build --release --quiet
rm -rf target/package
target/release/trayback package-files target/package
cargo deb --no-build --no-strip --quiet
