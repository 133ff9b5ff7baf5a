#!/usr/bin/env bash
# uTP throughput and LEDBAT, ccbt against libtorrent in the same run, in a loopback-only network
# namespace of its own.
#  1. Loopback, one seeder, one leecher, SIZE MiB: libtorrent->libtorrent over uTP (both with TCP
#     off), ccbt->libtorrent (a uTP-only libtorrent leecher), libtorrent->ccbt over uTP, ccbt->ccbt
#     over uTP, ccbt->ccbt over TCP.
# The delayed, lossy path is benches/utp_delay.sh; LEDBAT's yield to TCP is benches/ledbat_yield.sh
# (at a router's queue: on loopback a TCP sender cannot build the queue LEDBAT backs off from).
# usage: benches/utp.sh [SIZE_MIB=200]
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH_NAME=utp; . benches/lib.sh "$0" "$@"
SIZE=${1:-200}
UTP_ONLY='{"enable_outgoing_tcp": false, "enable_incoming_tcp": false, "enable_outgoing_utp": true, "enable_incoming_utp": true}'
mkdir -p "$W/seed/data"
head -c $((SIZE * 1048576)) /dev/urandom > "$W/seed/data/a.bin"
"$BIN" -q create "$W/seed/data" --v1 --piece-length 1M -o "$W/t.torrent"
LTP=$((20000 + RANDOM % 10000))
LT_SETTINGS="$UTP_ONLY" /usr/bin/python3 "$LT" seed "$W/t.torrent" "$W/seed" "$LTP" > "$W/ltseed.out" 2>&1 &
PIDS+=($!)
CP=$((30000 + RANDOM % 10000))
"$BIN" -q --data-dir "$W/cs" seed "$W/t.torrent" "$W/seed" --listen "127.0.0.1:$CP" --no-trackers > "$W/cseed.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 600); do grep -q ready "$W/ltseed.out" 2>/dev/null && break; sleep 0.2; done
sleep 2
mibs() { echo "$SIZE / $1" | bc -l; }
ccbt_get() { # label env... peer
  local label=$1 peer=$2; shift 2
  rm -rf "$W/dl" "$W/d"
  local t0; t0=$(date +%s.%N)
  env "$@" timeout 600 "$BIN" -q --data-dir "$W/d" download "$W/t.torrent" -o "$W/dl" --listen 127.0.0.1:0 \
    --no-trackers --no-resume --peer "$peer"
  local s; s=$(echo "$(date +%s.%N) - $t0" | bc -l)
  cmp -s "$W/dl/data/a.bin" "$W/seed/data/a.bin" || { echo "$label: download differs"; exit 1; }
  printf '%-28s %7.2f s %8.1f MiB/s\n' "$label" "$s" "$(mibs "$s")"
  echo "$label $s" >> "$W/all"
}
rm -rf "$W/lt"
LP=$((40000 + RANDOM % 10000))
LT_SETTINGS="$UTP_ONLY" /usr/bin/python3 "$LT" leech "$W/t.torrent" "$W/lt" "$LP" 600 "127.0.0.1:$LTP" > "$W/lt.json"
s=$(/usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["seconds"])' "$W/lt.json")
printf '%-28s %7.2f s %8.1f MiB/s\n' "libtorrent->libtorrent uTP" "$s" "$(mibs "$s")"
echo "ltlt $s" >> "$W/all"
# A uTP-only libtorrent leecher from the ccbt seeder: ccbt's sender against libtorrent's receiver.
rm -rf "$W/lt"
LT_SETTINGS="$UTP_ONLY" /usr/bin/python3 "$LT" leech "$W/t.torrent" "$W/lt" "$((LP + 1))" 600 "127.0.0.1:$CP" > "$W/lt2.json"
grep -q '"done": true' "$W/lt2.json" || { echo "libtorrent did not finish from ccbt: $(cat "$W/lt2.json")"; exit 1; }
cmp -s "$W/lt/data/a.bin" "$W/seed/data/a.bin" || { echo "ccbt->libtorrent: download differs"; exit 1; }
s=$(/usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["seconds"])' "$W/lt2.json")
printf '%-28s %7.2f s %8.1f MiB/s\n' "ccbt->libtorrent uTP" "$s" "$(mibs "$s")"
echo "ctlt $s" >> "$W/all"
ccbt_get "libtorrent->ccbt uTP" "127.0.0.1:$LTP" CCBT_ENABLE_TCP=false
ccbt_get "ccbt->ccbt uTP" "127.0.0.1:$CP" CCBT_ENABLE_TCP=false
ccbt_get "ccbt->ccbt TCP" "127.0.0.1:$CP" CCBT_ENABLE_UTP=false
get() { awk -v k="$1" '$1==k {print $2}' "$W/all" | head -1; }
lt=$(get ltlt)
printf 'libtorrent uTP from ccbt / libtorrent uTP: %.2fx\n' "$(echo "$lt / $(get ctlt)" | bc -l)"
printf 'ccbt uTP from libtorrent / libtorrent uTP: %.2fx; ccbt->ccbt uTP / libtorrent uTP: %.2fx; ccbt uTP / ccbt TCP: %.2f\n' \
  "$(echo "$lt / $(awk '$1=="libtorrent->ccbt" {print $3}' "$W/all")" | bc -l)" \
  "$(echo "$lt / $(awk '$1=="ccbt->ccbt" && $2=="uTP" {print $3}' "$W/all")" | bc -l)" \
  "$(echo "$(awk '$1=="ccbt->ccbt" && $2=="TCP" {print $3}' "$W/all") / $(awk '$1=="ccbt->ccbt" && $2=="uTP" {print $3}' "$W/all")" | bc -l)"
