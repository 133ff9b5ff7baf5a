#!/usr/bin/env bash
# The daemon's idle cost: N torrents (default 100, complete, seeding, no trackers, no peers) and 10
# shares loaded, then RSS and CPU seconds per minute of `ccbt daemon`, transmission-daemon and
# qbittorrent-nox holding the same torrents, measured in the same run one after the other (each
# alone on the machine). Then the API's latency under load (wrk, p50 and p99) on `GET /api/items`.
# Loopback only, in a network namespace of its own; DHT, LSD, UPnP off everywhere.
# IDLE_DETAIL=1 also lists each daemon's resident memory by mapping.
# usage: benches/daemon_idle.sh [N=100] [MEASURE_SECS=60]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-100}; SECS=${2:-60}
for t in transmission-daemon transmission-remote qbittorrent-nox wrk curl; do
  command -v "$t" >/dev/null || { echo "$t missing (make deps; qbittorrent-nox: apt-get install qbittorrent-nox)"; exit 1; }
done
BENCH_NAME=idle; . benches/lib.sh "$0" "$@"
# cli/link-order.txt places the functions an idle daemon runs together (cli/build.rs); names the
# build no longer has (after large changes) are placed elsewhere, and resident code grows.
FOUND=$(nm --defined-only "$BIN" | awk '{print $3}' | sort -u | comm -12 - <(sort -u cli/link-order.txt) | wc -l)
echo "link order: $FOUND of $(wc -l < cli/link-order.txt) functions found in the binary (scripts/link-order.sh refreshes it)"
echo "making $N torrents and 10 shares..."
. benches/idle_items.sh
make_idle_items "$W" "$BIN" "$N"
# Sample PID's RSS (KiB) and CPU seconds over SECS.
measure() { # label pid
  local label=$1 pid=$2 c0 c1 rss
  sleep 20  # settle after loading
  c0=$(awk '{print $14 + $15}' "/proc/$pid/stat")
  sleep "$SECS"
  c1=$(awk '{print $14 + $15}' "/proc/$pid/stat")
  rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
  # Private memory (heap, stacks: RssAnon) apart from file-backed pages (the binary's and shared
  # libraries' code, shared with other processes and reclaimable), and PSS (shared pages divided
  # among their users).
  local anon pss
  anon=$(awk '/RssAnon/ {print $2}' "/proc/$pid/status")
  pss=$(awk '/^Pss:/ {s += $2} END {print s}' "/proc/$pid/smaps_rollup")
  local cpu; cpu=$(echo "($c1 - $c0) / $(getconf CLK_TCK) * 60 / $SECS" | bc -l)
  printf '%-22s RSS %7.1f MiB (anon %6.1f MiB, PSS %6.1f MiB)   CPU %6.3f s per minute\n' "$label" \
    "$(echo "$rss / 1024" | bc -l)" "$(echo "$anon / 1024" | bc -l)" "$(echo "$pss / 1024" | bc -l)" "$cpu"
  echo "$label $rss $cpu" >> "$W/all"
  if [ -n "${IDLE_DETAIL:-}" ]; then # resident KiB by mapping (file and permissions), the largest first
    awk '/^[0-9a-f]+-[0-9a-f]+ / {n = ($6 == "" ? "[anon]" : $6) " " $2} /^Rss:/ {r[n] += $2} END {for (k in r) if (r[k] >= 64) print "    " r[k], k}' \
      "/proc/$pid/smaps" | sort -rn | head -14
  fi
}
# ccbt
API=127.0.0.1:$((20000 + RANDOM % 10000))
"$BIN" --data-dir "$W/cd" daemon --api "$API" --listen "127.0.0.1:$((30000 + RANDOM % 10000))" > "$W/ccbt.log" 2>&1 &
CPID=$!; PIDS+=($CPID)
for _ in $(seq 100); do curl -sf -o /dev/null "http://$API/metrics" && break; sleep 0.1; done
for i in $(seq "$N"); do "$BIN" -q --data-dir "$W/cd" add "$W/t/t$i.torrent" -o "$W/data" > /dev/null; done
for _ in $(seq 300); do
  [ "$("$BIN" --data-dir "$W/cd" --json list | grep -c '"state": "seeding"')" -ge "$N" ] && break; sleep 0.2
done
echo "ccbt: $("$BIN" --data-dir "$W/cd" --json list | grep -c '"state": "seeding"') of $N seeding"
measure "ccbt daemon" "$CPID"
TOKEN=$(cat "$W/cd/api-token")
echo "API latency, GET /api/items with $N items (wrk, 2 threads, 16 connections, 10 s):"
wrk -t2 -c16 -d10s --latency -H "Authorization: Bearer $TOKEN" "http://$API/api/items" | grep -E "50%|99%|Requests/sec"
echo "API latency, GET /metrics:"
wrk -t2 -c16 -d10s --latency "http://$API/metrics" | grep -E "50%|99%|Requests/sec"
kill "$CPID"; wait "$CPID" 2>/dev/null || true
# transmission-daemon
R=$((40000 + RANDOM % 10000))
mkdir -p "$W/tr"
cat > "$W/tr/settings.json" <<EOF
{"bind-address-ipv4": "127.0.0.1", "dht-enabled": false, "lpd-enabled": false, "pex-enabled": true,
 "port-forwarding-enabled": false, "utp-enabled": false, "peer-port": $((R + 1)), "rpc-enabled": true,
 "rpc-bind-address": "127.0.0.1", "rpc-port": $R, "rpc-authentication-required": false,
 "rpc-whitelist": "127.0.0.1", "rpc-host-whitelist-enabled": false, "download-dir": "$W/data"}
EOF
transmission-daemon -f -g "$W/tr" > "$W/tr.log" 2>&1 &
TPID=$!; PIDS+=($TPID)
for _ in $(seq 100); do transmission-remote "127.0.0.1:$R" -l > /dev/null 2>&1 && break; sleep 0.1; done
for i in $(seq "$N"); do transmission-remote "127.0.0.1:$R" -a "$W/t/t$i.torrent" -w "$W/data" > /dev/null; done
for _ in $(seq 300); do
  [ "$(transmission-remote "127.0.0.1:$R" -l | grep -c -E 'Seeding|Idle')" -ge "$N" ] && break; sleep 0.2
done
echo "transmission: $(transmission-remote "127.0.0.1:$R" -l | grep -c -E 'Seeding|Idle') of $N seeding"
measure "transmission-daemon" "$TPID"
kill "$TPID"; wait "$TPID" 2>/dev/null || true
# qbittorrent-nox
WP=$((50000 + RANDOM % 10000))
mkdir -p "$W/qbt/qBittorrent/config"
cat > "$W/qbt/qBittorrent/config/qBittorrent.conf" <<EOF
[LegalNotice]
Accepted=true

[BitTorrent]
Session\\DHTEnabled=false
Session\\LSDEnabled=false
Session\\Port=$((WP + 1))
Session\\Interface=lo
Session\\InterfaceName=lo
Session\\DefaultSavePath=$W/data
Session\\QueueingSystemEnabled=false

[Network]
PortForwardingEnabled=false

[Preferences]
Connection\\UPnP=false
WebUI\\Enabled=true
WebUI\\Address=127.0.0.1
WebUI\\Port=$WP
WebUI\\LocalHostAuth=false
WebUI\\HostHeaderValidation=false
WebUI\\CSRFProtection=false
EOF
qbittorrent-nox --profile="$W/qbt" > "$W/qbt.log" 2>&1 < /dev/null &
QPID=$!; PIDS+=($QPID)
QAPI="http://127.0.0.1:$WP/api/v2"
for _ in $(seq 100); do curl -sf "$QAPI/app/version" > /dev/null 2>&1 && break; sleep 0.1; done
for i in $(seq "$N"); do curl -sf -F "torrents=@$W/t/t$i.torrent" -F "savepath=$W/data" "$QAPI/torrents/add" > /dev/null; done
for _ in $(seq 300); do
  [ "$(curl -sf "$QAPI/torrents/info" | grep -o '"state":"[a-zA-Z]*UP"' | wc -l)" -ge "$N" ] && break; sleep 0.2
done
echo "qbittorrent: $(curl -sf "$QAPI/torrents/info" | grep -o '"state":"[a-zA-Z]*UP"' | wc -l) of $N seeding"
measure "qbittorrent-nox" "$QPID"
kill "$QPID"; wait "$QPID" 2>/dev/null || true
get() { awk -v k="$1" -v f="$2" '$1==k {print $f}' "$W/all"; }
printf 'ccbt / transmission-daemon: RSS %.2fx, CPU %.2fx;  ccbt / qbittorrent-nox: RSS %.2fx, CPU %.2fx\n' \
  "$(echo "$(get ccbt 3) / $(get transmission-daemon 2)" | bc -l)" \
  "$(echo "($(get ccbt 4) + 0.0001) / ($(get transmission-daemon 3) + 0.0001)" | bc -l)" \
  "$(echo "$(get ccbt 3) / $(get qbittorrent-nox 2)" | bc -l)" \
  "$(echo "($(get ccbt 4) + 0.0001) / ($(get qbittorrent-nox 3) + 0.0001)" | bc -l)"
