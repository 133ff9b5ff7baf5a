#!/usr/bin/env bash
# Update propagation: a 1 KiB edit in the middle of a 1 GiB file. ccbt: owner node A, follower B
# (`sync --follow`); time from the end of `ccbt publish` to B's applied version, and bytes on B's
# wire. rsync: an rsync daemon on 127.0.0.1 serving the edited folder, `rsync --stats` into an
# up-to-date copy of the old one. Same data, same run.
# usage: benches/update_propagation.sh [MIB=1024]
# Loopback only: the DHT stays off (no public bootstrap routers).
export CCBT_ENABLE_DHT=false CCBT_DHT_BOOTSTRAP= CCBT_PORT_MAPPING=false
set -euo pipefail
cd "$(dirname "$0")/.."
MIB=${1:-1024}
command -v rsync >/dev/null || { echo "rsync missing: apt-get install rsync" >&2; exit 1; }
cargo build --release -q -p ccbt
BIN=$PWD/target/release/ccbt
W=$(mktemp -d /tmp/ccbt-bench-update.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$W"; }
trap cleanup EXIT
[ -n "${KEEP_LOG:-}" ] && trap 'cp "$W/B.err" "$KEEP_LOG"; cleanup' EXIT
mkdir -p "$W/src"
head -c $((MIB << 20)) /dev/urandom > "$W/src/big.bin"
ID=$("$BIN" -q --data-dir "$W/A" publish "$W/src")
AP=$((20000 + RANDOM % 10000)); BP=$((AP + 1))
"$BIN" --data-dir "$W/A" seed --listen 127.0.0.1:$AP > "$W/A.log" 2>&1 & PIDS+=($!)
sleep 1
"$BIN" --json --log-level ${B_LOG:-INFO} --data-dir "$W/B" sync "$ID" "$W/copy" --follow --peer 127.0.0.1:$AP --listen 127.0.0.1:$BP > "$W/B.log" 2>"$W/B.err" & PIDS+=($!)
for _ in $(seq 600); do grep -q '"seq":1' "$W/B.log" 2>/dev/null && break; sleep 0.2; done
grep -q '"seq":1' "$W/B.log" || { echo "initial sync failed"; cat "$W/B.err"; exit 1; }
# rsync side: a copy of the old version, and a daemon serving the source folder.
cp -a "$W/src" "$W/rsync-copy"
cat > "$W/rsyncd.conf" <<CONF
pid file = $W/rsyncd.pid
use chroot = no
[data]
path = $W/src
read only = yes
CONF
RP=$((AP + 2))
rsync --daemon --no-detach --address=127.0.0.1 --port=$RP --config="$W/rsyncd.conf" & PIDS+=($!)
sleep 0.5
# The follower keeps a spare copy of large files it wrote (made and flushed in the background,
# `[xet] sync_spare_mib`); wait (bounded) until it is ready, as it is when edits are seconds apart.
s0=$(date +%s.%N)
for _ in $(seq 600); do ls "$W/copy/.ccbt-sync/spare/"*.ok >/dev/null 2>&1 && break; sleep 0.1; done
printf 'spare copy ready %.1f s after the initial sync check\n' "$(echo "$(date +%s.%N) - $s0" | bc -l)"
# The edit.
dd if=/dev/urandom of="$W/src/big.bin" bs=1024 count=1 seek=$((MIB * 512)) conv=notrunc 2>/dev/null
"$BIN" -q --data-dir "$W/A" publish "$W/src" > /dev/null
t0=$(date +%s.%N)
for _ in $(seq 3000); do grep -q '"seq":2' "$W/B.log" && break; sleep 0.01; done
t1=$(date +%s.%N)
EV=$(grep '"seq":2' "$W/B.log")
cmp -s "$W/src/big.bin" "$W/copy/big.bin" || { echo "follower copy differs"; exit 1; }
WIRE=$(echo "$EV" | /usr/bin/python3 -c 'import json,sys; e=json.load(sys.stdin); print(e["wire_in"])')
APPLY=$(echo "$EV" | /usr/bin/python3 -c 'import json,sys; e=json.load(sys.stdin); print(e["seconds"])')
r0=$(date +%s.%N)
RS=$(rsync -a --stats "rsync://127.0.0.1:$RP/data/" "$W/rsync-copy/")
r1=$(date +%s.%N)
cmp -s "$W/src/big.bin" "$W/rsync-copy/big.bin" || { echo "rsync copy differs"; exit 1; }
RB=$(echo "$RS" | awk -F': ' '/Total bytes received/ {gsub(",","",$2); print $2}')
RSENT=$(echo "$RS" | awk -F': ' '/Total bytes sent/ {gsub(",","",$2); print $2}')
printf 'ccbt : %s bytes on the follower wire, converged %.3f s after publish returned (apply %.3f s)\n' "$WIRE" "$(echo "$t1 - $t0" | bc -l)" "$APPLY"
printf 'rsync: %s bytes received + %s sent, %.3f s\n' "$RB" "$RSENT" "$(echo "$r1 - $r0" | bc -l)"
printf 'ratio: ccbt moves %.2fx the bytes rsync does, in %.2fx the time\n' "$(echo "$WIRE / ($RB + $RSENT)" | bc -l)" "$(echo "($t1 - $t0) / ($r1 - $r0)" | bc -l)"
