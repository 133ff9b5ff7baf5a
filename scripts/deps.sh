#!/usr/bin/env bash
# Installs the Debian packages ccbt builds and tests with, only those that are missing.
# librocksdb-dev (+ libsnappy-dev) + libclang-dev: link Debian's RocksDB statically (see .cargo/config.toml) instead of a 20-minute build.
# python3-libtorrent, mktorrent: independent BitTorrent software the interop tests compare against.
# fuse3: mount/umount helpers for the FUSE tests.
# iproute2: the loopback-only network namespace the suite runs in; python3-cryptography: ed25519
# keys in libtorrent's format for the BEP 44 interop tests.
# stunnel4 + openssl: an HTTPS tracker (TLS terminator, test CA); nginx-light: a web seed (BEP 19).
# miniupnpd-nftables + nftables: the NAT-PMP router of the port mapping test (its own namespaces).
# prometheus: promtool checks the daemon's metrics; tmux drives the dashboard; python3-venv holds
# schemathesis (PyPI), which fuzzes the daemon's API against its OpenAPI document.
set -euo pipefail
PKGS=(librocksdb-dev libsnappy-dev libclang-dev pkg-config python3-libtorrent mktorrent fuse3 bc casync aria2 opentracker transmission-cli transmission-daemon rsync fio stress-ng dbench iproute2 python3-cryptography stunnel4 openssl nginx-light miniupnpd-nftables nftables prometheus tmux python3-venv wrk)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "deps: all Debian packages present"
else
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# The lint half of `make test` needs these rustup components.
if command -v rustup >/dev/null; then
  cargo clippy --version >/dev/null 2>&1 || rustup component add clippy
  cargo fmt --version >/dev/null 2>&1 || rustup component add rustfmt
fi
# schemathesis from PyPI in a venv of its own (tests find it at $CCBT_SCHEMATHESIS).
ST_VENV="${CCBT_TOOLS_DIR:-$HOME/.cache/ccbt-tools}/schemathesis"
if [ ! -x "$ST_VENV/bin/schemathesis" ]; then
  echo "deps: installing schemathesis into $ST_VENV"
  /usr/bin/python3 -m venv "$ST_VENV"
  "$ST_VENV/bin/pip" install -q schemathesis
fi
