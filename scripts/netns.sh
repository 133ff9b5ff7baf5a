#!/usr/bin/env bash
# Runs a command in a new network namespace that has only loopback, so nothing it starts (a DHT
# node with a forgotten bootstrap setting, a tracker URL, UPnP) can send a packet off this
# machine: such a mistake fails loudly instead of leaking. Needs root (unshare -n).
set -euo pipefail
if [ "$(id -u)" -ne 0 ]; then
  echo "netns: running the tests needs root (a loopback-only network namespace, FUSE mounts)" >&2
  exit 1
fi
exec unshare --net -- bash -c '
  set -euo pipefail
  ip link set lo up
  if ip -o link show | grep -v ": lo:" | grep -q .; then
    echo "netns: an interface other than loopback exists" >&2
    exit 1
  fi
  exec "$@"' netns "$@"
