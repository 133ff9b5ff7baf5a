#!/usr/bin/env bash
# LEDBAT yields to TCP at a router's queue: ccbt's uTP against libtorrent's, same run.
#
# scripts/delaynet.sh joins dlA and dlB through a router namespace (DELAY_MS each way); the
# router's interface toward dlA is shaped by tc tbf to RATE with a QUEUE buffer, as a home
# router's downlink. Everything flows B -> A: a TCP download (curl from nginx in dlB) alone, then
# beside a uTP transfer (ccbt seeder -> ccbt leecher, then libtorrent -> libtorrent, both with TCP
# off): the share of its lone rate TCP keeps (goal >= 80 %), and what uTP got alone.
#
# Why not loopback (benches/utp.sh did that): a TCP sender's packets count against its socket
# (TCP small queues) while they sit in the same host's qdisc, so local TCP never builds the queue
# that LEDBAT backs off from. Here the queue is at a router, as on a real path.
#
# usage: benches/ledbat_yield.sh [RATE=20mbit] [QUEUE=300ms] [DELAY_MS=10] [SECS=15]
# Root only. Nothing leaves the namespaces.
set -euo pipefail
cd "$(dirname "$0")/.."
RATE=${1:-20mbit}; QUEUE=${2:-300ms}; DELAY=${3:-10}; SECS=${4:-15}
command -v nginx >/dev/null || { echo "nginx missing (make deps)" >&2; exit 1; }
command -v curl >/dev/null || { echo "curl missing (make deps)" >&2; exit 1; }
BENCH_NAME=ledbat; . benches/lib.sh "$0" "$@"
DELAYNET=1
scripts/delaynet.sh up "$DELAY" 0
A="ip netns exec dlA"; B="ip netns exec dlB"
HA=10.77.1.2; HB=10.77.2.2
ip netns exec dlR tc qdisc add dev vA0 root tbf rate "$RATE" burst 32kb latency "$QUEUE"

# Enough data that no transfer ends inside the window: 4x what the link carries in it.
BYTES=$(( $(echo "$RATE" | sed 's/mbit$//') * 1000000 / 8 * SECS * 4 ))
mkdir -p "$W/www" "$W/ng" "$W/seed/data"
head -c "$BYTES" /dev/urandom > "$W/www/f.bin"
cp "$W/www/f.bin" "$W/seed/data/a.bin"
"$BIN" -q create "$W/seed/data" --v1 --piece-length 1M -o "$W/t.torrent"
cat > "$W/ng/nginx.conf" <<N
daemon off; user root; worker_processes 1; pid $W/ng/pid; error_log $W/ng/err;
events {}
http { access_log off; client_body_temp_path $W/ng/b; proxy_temp_path $W/ng/p; fastcgi_temp_path $W/ng/f;
  uwsgi_temp_path $W/ng/u; scgi_temp_path $W/ng/s;
  server { listen $HB:8080; root $W/www; } }
N
$B nginx -c "$W/ng/nginx.conf" -p "$W/ng" &
PIDS+=($!)
UTP_ONLY='"enable_outgoing_tcp": false, "enable_incoming_tcp": false, "enable_outgoing_utp": true, "enable_incoming_utp": true'
LT_SETTINGS="{$UTP_ONLY, \"listen_interfaces\": \"$HB:6001\", \"outgoing_interfaces\": \"\"}" \
  $B /usr/bin/python3 "$LT" seed "$W/t.torrent" "$W/seed" 6001 > "$W/ltseed.out" 2>&1 &
PIDS+=($!)
CCBT_ENABLE_TCP=false $B "$BIN" -q --data-dir "$W/cs" seed "$W/t.torrent" "$W/seed" --listen "$HB:6002" \
  --no-trackers > "$W/cseed.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 600); do grep -q ready "$W/ltseed.out" 2>/dev/null && break; sleep 0.2; done
grep -q ready "$W/ltseed.out" || { echo "the libtorrent seeder did not start" >&2; cat "$W/ltseed.out" >&2; exit 1; }
sleep 2

# TCP's rate over SECS seconds (bytes/s).
tcp_rate() {
  $A curl -s -o /dev/null --max-time "$SECS" -w '%{speed_download}' "http://$HB:8080/f.bin" || true
}
# Bytes dlA has received (only the flow under test runs): the uTP rate alone, headers included.
rx() { $A cat /sys/class/net/vA/statistics/rx_bytes; }
# Starts a uTP leecher in dlA: ccbt | lt; prints its pid, its directory in $W/dl.
start_utp() {
  rm -rf "$W/dl" "$W/d"; mkdir -p "$W/dl"
  if [ "$1" = ccbt ]; then
    CCBT_ENABLE_TCP=false $A "$BIN" -q --data-dir "$W/d" download "$W/t.torrent" -o "$W/dl" \
      --listen "$HA:7001" --no-trackers --no-resume --peer "$HB:6002" > "$W/leech.log" 2>&1 &
  else
    LT_SETTINGS="{$UTP_ONLY, \"listen_interfaces\": \"$HA:7002\", \"outgoing_interfaces\": \"\"}" \
      $A /usr/bin/python3 "$LT" leech "$W/t.torrent" "$W/dl" 7002 600 "$HB:6001" > "$W/leech.log" 2>&1 &
  fi
  echo $!
}
# uTP alone: bytes moved in SECS seconds, after 3 s to start.
utp_alone() {
  local p b0 b1; p=$(start_utp "$1"); PIDS+=("$p")
  sleep 3; b0=$(rx); sleep "$SECS"; b1=$(rx)
  kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true
  echo $(( (b1 - b0) / SECS ))
}
utp_beside() {
  local p r; p=$(start_utp "$1"); PIDS+=("$p")
  sleep 3; r=$(tcp_rate)
  kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true
  echo "$r"
}
alone=$(tcp_rate)
c_alone=$(utp_alone ccbt); l_alone=$(utp_alone lt)
c_tcp=$(utp_beside ccbt); l_tcp=$(utp_beside lt)
alone2=$(tcp_rate)
echo "link: $RATE, $QUEUE buffer at the router, RTT $((2 * DELAY)) ms; $SECS s windows"
python3 - "$alone" "$alone2" "$c_alone" "$l_alone" "$c_tcp" "$l_tcp" <<'PY'
import sys
alone, alone2, ca, la, ct, lt = map(float, sys.argv[1:])
ref = (alone + alone2) / 2
m = lambda b: b / 1048576
print(f'TCP alone: {m(alone):.2f} MiB/s (again at the end: {m(alone2):.2f})')
print('| uTP sender | uTP alone | TCP beside it | TCP keeps |')
print('|---|---|---|---|')
for n, a, t in (('ccbt', ca, ct), ('libtorrent', la, lt)):
    print(f'| {n} | {m(a):.2f} MiB/s | {m(t):.2f} MiB/s | {100 * t / ref:.0f} % |')
print(f'goal: TCP keeps >= 80 % beside ccbt; ccbt {100 * ct / ref:.0f} %, libtorrent {100 * lt / ref:.0f} %')
PY
