#!/usr/bin/env bash
# uTP over a delayed, lossy link (issue 15's "netem 50 ms RTT and 0.1 % loss"), ccbt against
# libtorrent in the same run. This kernel has no sch_netem, so the link is scripts/delaynet.sh:
# two namespaces joined through a router namespace whose userspace delay line (a TUN device) holds
# each packet DELAY_MS and drops LOSS of them. Seeder in dlA (10.77.1.2), leecher in dlB
# (10.77.2.2), SIZE MiB each: libtorrent->libtorrent over uTP (TCP off) and over TCP,
# ccbt->ccbt over uTP (TCP off) and over TCP (uTP off). Goals: ccbt uTP >= 3x libtorrent's uTP,
# and >= 80 % of ccbt's own TCP on this link.
# usage: benches/utp_delay.sh [SIZE_MIB=40] [DELAY_MS=25] [LOSS=0.001]
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH_NAME=utpd; . benches/lib.sh "$0" "$@"
SIZE=${1:-40}; DELAY=${2:-25}; LOSS=${3:-0.001}
DELAYNET=1
scripts/delaynet.sh up "$DELAY" "$LOSS"
A="ip netns exec dlA"; B="ip netns exec dlB"
mkdir -p "$W/seed/data"
head -c $((SIZE * 1048576)) /dev/urandom > "$W/seed/data/a.bin"
"$BIN" -q create "$W/seed/data" --v1 --piece-length 1M -o "$W/t.torrent"
lt_settings() { # ip port utp(true|false)
  local tcp=true; [ "$3" = true ] && tcp=false
  echo "{\"listen_interfaces\": \"$1:$2\", \"outgoing_interfaces\": \"$1\", \"enable_outgoing_utp\": $3, \"enable_incoming_utp\": $3, \"enable_outgoing_tcp\": $tcp, \"enable_incoming_tcp\": $tcp}"
}
mibs() { echo "$SIZE / $1" | bc -l; }
report() { printf '%-28s %7.2f s %8.2f MiB/s\n' "$1" "$2" "$(mibs "$2")"; echo "$1|$2" >> "$W/all"; }
lt_run() { # label utp
  local sp=$((20000 + RANDOM % 10000)) lp=$((30000 + RANDOM % 10000))
  LT_SETTINGS="$(lt_settings 10.77.1.2 $sp "$2")" $A /usr/bin/python3 "$LT" seed "$W/t.torrent" "$W/seed" "$sp" > "$W/ltseed.out" 2>&1 &
  local pid=$!; PIDS+=($pid)
  for _ in $(seq 300); do grep -q ready "$W/ltseed.out" 2>/dev/null && break; sleep 0.2; done
  rm -rf "$W/lt"
  LT_SETTINGS="$(lt_settings 10.77.2.2 $lp "$2")" $B /usr/bin/python3 "$LT" leech "$W/t.torrent" "$W/lt" "$lp" 900 "10.77.1.2:$sp" > "$W/lt.json"
  kill $pid 2>/dev/null || true
  cmp -s "$W/lt/data/a.bin" "$W/seed/data/a.bin" || { echo "$1: download differs"; exit 1; }
  report "$1" "$(/usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["seconds"])' "$W/lt.json")"
}
ccbt_run() { # label env...
  local label=$1; shift
  local sp=$((40000 + RANDOM % 10000))
  env "$@" $A "$BIN" -q --data-dir "$W/cs" seed "$W/t.torrent" "$W/seed" --listen "10.77.1.2:$sp" --no-trackers > "$W/cseed.log" 2>&1 &
  local pid=$!; PIDS+=($pid)
  sleep 2
  rm -rf "$W/dl" "$W/d"
  local t0; t0=$(date +%s.%N)
  env "$@" $B timeout 900 "$BIN" -q --data-dir "$W/d" download "$W/t.torrent" -o "$W/dl" --listen 10.77.2.2:0 \
    --no-trackers --no-resume --peer "10.77.1.2:$sp"
  local s; s=$(echo "$(date +%s.%N) - $t0" | bc -l)
  kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true
  cmp -s "$W/dl/data/a.bin" "$W/seed/data/a.bin" || { echo "$label: download differs"; exit 1; }
  report "$label" "$s"
}
echo "link: ${DELAY} ms each way ($((2 * DELAY)) ms RTT), loss $LOSS; $SIZE MiB"
lt_run "libtorrent->libtorrent uTP" true
lt_run "libtorrent->libtorrent TCP" false
ccbt_run "ccbt->ccbt uTP" CCBT_ENABLE_TCP=false
ccbt_run "ccbt->ccbt TCP" CCBT_ENABLE_UTP=false
get() { awk -F'|' -v k="$1" '$1==k {print $2}' "$W/all"; }
printf 'ccbt uTP / libtorrent uTP: %.2fx (goal >= 3); ccbt uTP / ccbt TCP: %.2f (goal >= 0.8); libtorrent uTP / libtorrent TCP: %.2f\n' \
  "$(echo "$(get 'libtorrent->libtorrent uTP') / $(get 'ccbt->ccbt uTP')" | bc -l)" \
  "$(echo "$(get 'ccbt->ccbt TCP') / $(get 'ccbt->ccbt uTP')" | bc -l)" \
  "$(echo "$(get 'libtorrent->libtorrent TCP') / $(get 'libtorrent->libtorrent uTP')" | bc -l)"
