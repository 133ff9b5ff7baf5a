#!/usr/bin/env bash
# Transmission seeds; ccbt and libtorrent leechers alternate (RUNS each) on the same torrent and
# dial it. Issue 15's goal: ccbt within 1.2x of libtorrent's time from the same seeder.
# usage: benches/transmission_seed.sh [RUNS=3] [MIB=64]
# Loopback only: the DHT stays off.
export CCBT_ENABLE_DHT=false CCBT_DHT_BOOTSTRAP= CCBT_PORT_MAPPING=false
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-3}; MIB=${2:-64}
command -v transmission-daemon >/dev/null || { echo "transmission-daemon missing (make deps)"; exit 1; }
cargo build --release -q -p ccbt
BIN=$PWD/target/release/ccbt; LT=$PWD/tests/scripts/lt_tool.py
W=$(mktemp -d /tmp/ccbt-bench-tr.XXXXXX)
TRPID=""
cleanup() { [ -n "$TRPID" ] && kill "$TRPID" 2>/dev/null; wait 2>/dev/null; rm -rf "$W"; }
trap cleanup EXIT
mkdir -p "$W/seed/data"
head -c $((MIB * 1048576)) /dev/urandom > "$W/seed/data/a.bin"
"$BIN" -q create "$W/seed/data" --v1 --piece-length 262144 -o "$W/t.torrent"
PP=$((20000 + RANDOM % 20000)); RP=$((PP + 1))
# A fresh Transmission for every leecher: one that has served a peer from 127.0.0.1 does not
# serve the next one from the same address (seen here), so each run gets its own daemon.
start_tr() {
  rm -rf "$W/cfg"; mkdir -p "$W/cfg"
  PP=$((20000 + RANDOM % 20000)); RP=$((PP + 1))
  cat > "$W/cfg/settings.json" <<J
{"bind-address-ipv4": "127.0.0.1", "peer-port": $PP, "peer-port-random-on-start": false,
 "port-forwarding-enabled": false, "dht-enabled": false, "lpd-enabled": false, "pex-enabled": false,
 "utp-enabled": false, "blocklist-enabled": false, "encryption": 1, "rpc-enabled": true,
 "rpc-bind-address": "127.0.0.1", "rpc-port": $RP, "rpc-authentication-required": false,
 "rpc-whitelist-enabled": false, "rpc-host-whitelist-enabled": false, "download-dir": "$W/seed",
 "incomplete-dir-enabled": false, "start-added-torrents": true, "ratio-limit-enabled": false,
 "speed-limit-down-enabled": false, "speed-limit-up-enabled": false, "message-level": 1}
J
  transmission-daemon -f -g "$W/cfg" >/dev/null 2>&1 &
  TRPID=$!
  for _ in $(seq 100); do transmission-remote "127.0.0.1:$RP" -l >/dev/null 2>&1 && break; sleep 0.2; done
  transmission-remote "127.0.0.1:$RP" -a "$W/t.torrent" >/dev/null
  for _ in $(seq 300); do transmission-remote "127.0.0.1:$RP" -l | grep -q "100%" && break; sleep 0.2; done
  transmission-remote "127.0.0.1:$RP" -l | grep -q "100%" || { echo "Transmission did not verify its data"; exit 1; }
}
stop_tr() { kill "$TRPID" 2>/dev/null; wait "$TRPID" 2>/dev/null || true; TRPID=""; }
for i in $(seq "$RUNS"); do
  start_tr
  rm -rf "$W/lt"
  LP=$((40000 + RANDOM % 20000))
  /usr/bin/python3 "$LT" leech "$W/t.torrent" "$W/lt" "$LP" 300 "127.0.0.1:$PP" > "$W/lt.json"
  l=$(/usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["seconds"])' "$W/lt.json")
  stop_tr; start_tr
  rm -rf "$W/dl" "$W/d"
  t0=$(date +%s.%N)
  timeout 300 "$BIN" -q --data-dir "$W/d" download "$W/t.torrent" -o "$W/dl" \
      --listen 127.0.0.1:0 --peer "127.0.0.1:$PP" --no-trackers --no-resume
  c=$(echo "$(date +%s.%N) - $t0" | bc -l)
  cmp -s "$W/dl/data/a.bin" "$W/seed/data/a.bin" || { echo "ccbt download differs"; exit 1; }
  stop_tr
  printf 'run %d: ccbt %6.2f s  libtorrent %6.2f s  ratio %.2f\n' "$i" "$c" "$l" "$(echo "$c/$l" | bc -l)"
  echo "$c $l" >> "$W/all"
done
med() { awk -v c="$1" '{print $c}' "$W/all" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
c=$(med 1); l=$(med 2)
printf 'median %d MiB from Transmission: ccbt %.2f s, libtorrent %.2f s, ccbt/libtorrent %.2fx (goal <= 1.2)\n' \
  "$MIB" "$c" "$l" "$(echo "$c/$l" | bc -l)"
