#!/usr/bin/env bash
# Install what a fresh Debian/Ubuntu machine lacks to build and test trayback:
# pkg-config + libudev-dev (the udev crate), udev (udevd, udevadm), e2fsprogs (mkfs.ext4 for
# loop-device media), xfsprogs, btrfs-progs and dosfstools (XFS, btrfs and FAT disks in the
# agent tests), util-linux (mount, losetup, setpriv), coreutils, time (GNU time), zstd, and
# for the independent reader of tests/crypt.rs Python's PyYAML and cryptography >= 44, and
# chromium + chromium-driver (headless Chromium through WebDriver: the web interface's tests);
# for the Debian package (scripts/deb.sh, tests/package.rs) cargo-deb from crates.io, lintian,
# man-db and dpkg-dev; Python's prometheus_client (tests/agent_metrics.rs parses the metrics).
# Idempotent; quiet when everything is there. Needs root (or sudo) only when something is missing.
set -euo pipefail

missing=()
command -v pkg-config >/dev/null || missing+=(pkg-config)
[ -e /usr/include/libudev.h ] || missing+=(libudev-dev)
command -v udevadm >/dev/null || missing+=(udev)
command -v mkfs.ext4 >/dev/null || [ -x /sbin/mkfs.ext4 ] || missing+=(e2fsprogs)
command -v setpriv >/dev/null || missing+=(util-linux)
command -v mkfs.xfs >/dev/null || [ -x /sbin/mkfs.xfs ] || missing+=(xfsprogs)
command -v mkfs.btrfs >/dev/null || [ -x /sbin/mkfs.btrfs ] || missing+=(btrfs-progs)
command -v mkfs.vfat >/dev/null || [ -x /sbin/mkfs.vfat ] || missing+=(dosfstools)
command -v python3 >/dev/null || missing+=(python3)
command -v cc >/dev/null || missing+=(gcc)
[ -x /usr/bin/time ] || missing+=(time)   # GNU time: peak RSS in tests/no_panic.rs
command -v zstd >/dev/null || missing+=(zstd)   # tests/independent_reader.py inflates with it
[ -x /usr/bin/chromium ] || missing+=(chromium)   # tests/ui.rs drives it headless
[ -x /usr/bin/chromedriver ] || missing+=(chromium-driver)
command -v lintian >/dev/null || missing+=(lintian)   # tests/package.rs
command -v man >/dev/null || missing+=(man-db)
command -v dpkg-deb >/dev/null || missing+=(dpkg)
command -v systemd-analyze >/dev/null || missing+=(systemd)

if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO="sudo"
  echo "setup: installing ${missing[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# The independent reader (tests/crypt.rs) needs Argon2id from the `cryptography` package,
# which it has from version 44 on (Debian 12 ships 38): from PyPI when missing.
pip_install() {
  echo "setup: installing python $* from PyPI" >&2
  python3 -m pip install -q "$@" 2>/dev/null || python3 -m pip install -q --break-system-packages "$@"
}
python3 -c 'from cryptography.hazmat.primitives.kdf.argon2 import Argon2id' 2>/dev/null \
  || pip_install 'cryptography>=44'
python3 -c 'import yaml' 2>/dev/null || pip_install pyyaml
python3 -c 'import prometheus_client.openmetrics.parser' 2>/dev/null || pip_install prometheus_client

if ! command -v cargo >/dev/null; then
  echo "setup: cargo not found; install Rust (https://rustup.rs) and run again" >&2
  exit 1
fi

# The Debian package is built with cargo-deb (scripts/deb.sh).
command -v cargo-deb >/dev/null || {
  echo "setup: installing cargo-deb from crates.io" >&2
  cargo install --locked --quiet cargo-deb
}
