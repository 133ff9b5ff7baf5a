#!/usr/bin/env bash
# Swarm at scale: one libtorrent seeder and N leechers (default 24), each in its own network
# namespace on a link of its own to a router namespace. Every link is capped by tc tbf both ways
# (seeder SEED_RATE; leechers from 20 to 100 Mbit/s) and has a delay of its own (a round trip of
# 20 to 100 ms, spread independently of the rate; the seeder's 20 ms): there is no sch_netem in
# this kernel, so the router sends every packet through the delay line (benches/delayline), which holds a
# packet from S to D for the sum of both links' one-way delays. Run twice with the same seeder,
# tracker (opentracker) and topology: all leechers ccbt, then all leechers libtorrent. Reports
# completion times (p50, p95, last), the seeder's upload bytes (from the qdisc's counters, not
# from either client) and total CPU. Leechers leave the swarm when complete (both clients alike).
# SWARM_DETAIL=1 lists each leecher's link and completion time, and the qdiscs' counters.
# usage: [CLIENTS="ccbt libtorrent"] benches/swarm_scale.sh [LEECHERS=24] [MIB=32] [SEED_RATE=40mbit] [DELAY=on|off]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-24}; MIB=${2:-32}; SEED_RATE=${3:-40mbit}; DELAY=${4:-on}
command -v opentracker >/dev/null || { echo "opentracker missing (make deps)"; exit 1; }
BENCH_NAME=scale; . benches/lib.sh "$0" "$@"
chmod 755 "$W"
NS=sw$$
cleanup_more() {
  # `|| true`: under set -e a failed kill (already gone) would end this before the namespaces go.
  [ -n "${DL_PID:-}" ] && kill "$DL_PID" 2>/dev/null || true
  [ -n "${DL_SLEEP:-}" ] && kill "$DL_SLEEP" 2>/dev/null || true
  sleep 0.2
  for i in $(seq 0 "$N"); do ip netns del "$NS-n$i" 2>/dev/null || true; done
  ip netns del "$NS-r" 2>/dev/null || true
}
ipof() { echo "10.78.$1.2"; }
rate_of() { # leecher i: 20..100 Mbit/s
  if [ "$1" -eq 0 ]; then echo "$SEED_RATE"; else echo "$((20 + ($1 - 1) * 80 / (N > 1 ? N - 1 : 1)))mbit"; fi
}
rtt_of() { # link i's round trip in ms: 20..100, a different order than the rates
  if [ "$1" -eq 0 ]; then echo 20; else echo "$((20 + (($1 - 1) * 7 % N) * 80 / (N > 1 ? N - 1 : 1)))"; fi
}
ip netns add "$NS-r"
ip -n "$NS-r" link set lo up
ip netns exec "$NS-r" sysctl -qw net.ipv4.ip_forward=1 net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0
: > "$W/hosts"
for i in $(seq 0 "$N"); do
  n="$NS-n$i"
  ip netns add "$n"
  ip -n "$n" link set lo up
  ip link add "sv$$x$i" type veth peer name "sr$$x$i"
  ip link set "sv$$x$i" netns "$n"
  ip link set "sr$$x$i" netns "$NS-r"
  ip -n "$n" link set "sv$$x$i" name eth0
  ip -n "$n" addr add "$(ipof "$i")/24" dev eth0
  ip -n "$n" link set eth0 up
  ip -n "$n" route add default via "10.78.$i.1"
  ip -n "$NS-r" addr add "10.78.$i.1/24" dev "sr$$x$i"
  ip -n "$NS-r" link set "sr$$x$i" up
  r=$(rate_of "$i")
  # Upload cap on the node's side, download cap on the router's side.
  ip netns exec "$n" tc qdisc add dev eth0 root tbf rate "$r" burst 64kb latency 100ms
  ip netns exec "$NS-r" tc qdisc add dev "sr$$x$i" root tbf rate "$r" burst 64kb latency 100ms
  echo "$(ipof "$i") $(( $(rtt_of "$i") / 2 ))" >> "$W/hosts"
  [ "$DELAY" = on ] && ip -n "$NS-r" rule add iif "sr$$x$i" lookup 100
done
if [ "$DELAY" = on ]; then
  mkfifo "$W/dl.in"
  sleep infinity > "$W/dl.in" &
  DL_SLEEP=$!
  PIDS+=("$DL_SLEEP") # killed before the exit trap's `wait`, which would otherwise never return
  ip netns exec "$NS-r" target/release/delayline dl0 0 0 "$W/hosts" \
    < "$W/dl.in" > "$W/dl.out" 2> "$W/dl.err" &
  DL_PID=$!
  PIDS+=("$DL_PID")
  for _ in $(seq 50); do grep -q ready "$W/dl.out" 2>/dev/null && break; sleep 0.1; done
  grep -q ready "$W/dl.out" || { cat "$W/dl.err"; exit 1; }
  ip -n "$NS-r" link set dl0 up
  ip netns exec "$NS-r" sysctl -qw net.ipv4.conf.dl0.rp_filter=0
  ip -n "$NS-r" route add default dev dl0 table 100
fi
mkdir -p "$W/seed/data"
head -c $((MIB * 1048576)) /dev/urandom > "$W/seed/data/a.bin"
TR="http://$(ipof 0):6969/announce"
"$BIN" -q create "$W/seed/data" --v1 --piece-length 256K -t "$TR" -o "$W/t.torrent"
IH=$("$BIN" --json info "$W/t.torrent" | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["info_hash_v1"])')
mkdir -p "$W/ot"
chmod 755 "$W/ot"
echo "$IH" > "$W/ot/whitelist.txt"
chmod 644 "$W/ot/whitelist.txt"
printf 'listen.tcp %s:6969\nlisten.udp %s:6969\naccess.whitelist whitelist.txt\ntracker.rootdir %s\n' \
  "$(ipof 0)" "$(ipof 0)" "$W/ot" > "$W/ot/opentracker.conf"
ip netns exec "$NS-n0" opentracker -f "$W/ot/opentracker.conf" > /dev/null 2>&1 &
PIDS+=($!)
if [ "$DELAY" = on ]; then
  # The delay is there: a TCP connect from leecher 1 to the tracker takes one round trip.
  sleep 0.5
  ip netns exec "$NS-n1" /usr/bin/python3 -c 'import socket,sys,time
t=time.monotonic(); socket.create_connection((sys.argv[1], 6969), 5).close()
print("TCP connect leecher 1 -> seeder: %.0f ms (links: %s ms round trip)" % ((time.monotonic()-t)*1000, sys.argv[2]))' \
    "$(ipof 0)" "$(rtt_of 0) + $(rtt_of 1)"
fi
lt_settings() { echo "{\"listen_interfaces\": \"$(ipof "$1"):7000\", \"outgoing_interfaces\": \"\"}"; }
ip netns exec "$NS-n0" env LT_SETTINGS="$(lt_settings 0)" /usr/bin/python3 "$LT" seed "$W/t.torrent" "$W/seed" 7000 \
  > "$W/seed.out" 2>&1 &
PIDS+=($!)
for _ in $(seq 600); do grep -q ready "$W/seed.out" 2>/dev/null && break; sleep 0.2; done
grep -q '"ready": true' "$W/seed.out" || { echo "seeder not ready"; cat "$W/seed.out"; exit 1; }
sent() { ip netns exec "$NS-n0" tc -s qdisc show dev eth0 | awk '/Sent/ {print $2; exit}'; }
pct() { sort -n | awk -v p="$1" '{a[NR]=$1} END {i=int((NR*p+99)/100); if (i<1) i=1; print a[i]}'; }
run() { # label
  local label=$1 before pids=() sampler=
  before=$(sent)
  if [ -n "${SWARM_DETAIL:-}" ]; then # the seeder's upload each second, to see when it idles
    (while :; do echo "$(date +%s.%N) $(sent)"; sleep 1; done) > "$W/upload.$label" &
    sampler=$!
  fi
  for i in $(seq 1 "$N"); do
    rm -rf "$W/dl$i" "$W/d$i"
    if [ "$label" = ccbt ]; then
      ip netns exec "$NS-n$i" /usr/bin/time -f "%e %U %S" -o "$W/time.$i" timeout 300 \
        "$BIN" -q --data-dir "$W/d$i" download "$W/t.torrent" -o "$W/dl$i" --listen "$(ipof "$i"):7000" \
        --no-resume > "$W/log.$i" 2>&1 &
    else
      ip netns exec "$NS-n$i" env LT_SETTINGS="$(lt_settings "$i")" /usr/bin/time -f "%e %U %S" -o "$W/time.$i" \
        timeout 300 /usr/bin/python3 "$LT" leech "$W/t.torrent" "$W/dl$i" 7000 290 > "$W/log.$i" 2>&1 &
    fi
    pids+=($!)
  done
  local failed=0
  for p in "${pids[@]}"; do wait "$p" || failed=$((failed + 1)); done
  for i in $(seq 1 "$N"); do
    cmp -s "$W/dl$i/data/a.bin" "$W/seed/data/a.bin" || { echo "$label leecher $i: incomplete or wrong"; tail -3 "$W/log.$i"; failed=$((failed + 1)); }
  done
  if [ -n "${SWARM_DETAIL:-}" ]; then # each leecher's link and time, slowest last
    for i in $(seq 1 "$N"); do echo "  $label leecher $i: $(rate_of "$i") $(rtt_of "$i") ms $(awk '{print $1}' "$W/time.$i") s"; done | sort -k6 -n
  fi
  if [ -n "$sampler" ]; then # the seeder's upload each second; its qdisc: bytes sent, packets dropped
    kill "$sampler" 2>/dev/null || true
    echo "  seeder upload, MB/s each second: $(awk 'NR > 1 {printf "%.1f ", ($2 - b) / ($1 - t) / 1e6} {t = $1; b = $2}' "$W/upload.$label")"
    ip netns exec "$NS-n0" tc -s qdisc show dev eth0 | awk '/Sent/ {print "  seeder qdisc (cumulative):", $0; exit}'
    ip netns exec "$NS-r" tc -s qdisc show | awk '/dropped/ {gsub(",", ""); d += $7} END {print "  packets dropped at the leechers\x27 downlinks (cumulative):", d}'
    if [ "$DELAY" = on ]; then ip -n "$NS-r" -s link show dl0 | awk 'f {printf "  delay line (cumulative): %d packets of %.0f bytes on average\n", $2, $1 / $2; exit} /RX:/ {f = 1}'; fi
  fi
  local up=$(( $(sent) - before ))
  local times cpu
  times=$(for i in $(seq 1 "$N"); do awk '{print $1}' "$W/time.$i"; done)
  cpu=$(for i in $(seq 1 "$N"); do awk '{print $2 + $3}' "$W/time.$i"; done | awk '{s+=$1} END {print s}')
  printf '%-10s p50 %6.2f s  p95 %6.2f s  last %6.2f s  seeder upload %6.1f MiB (%.2fx the file)  CPU %6.1f s  failed %d\n' \
    "$label" "$(echo "$times" | pct 50)" "$(echo "$times" | pct 95)" "$(echo "$times" | pct 100)" \
    "$(echo "$up / 1048576" | bc -l)" "$(echo "$up / ($MIB * 1048576)" | bc -l)" "$cpu" "$failed"
  echo "$label $(echo "$times" | pct 50) $(echo "$times" | pct 95) $(echo "$times" | pct 100) $up $cpu" >> "$W/all"
}
echo "swarm: 1 libtorrent seeder ($SEED_RATE) + $N leechers (20-100 Mbit/s, delay $DELAY: RTT 20-100 ms per link), $MIB MiB, tracker only"
# CLIENTS=ccbt (or libtorrent) runs one of the two, to try a change; the ratios need both.
for c in ${CLIENTS:-ccbt libtorrent}; do run "$c"; done
[ "$(grep -c . "$W/all")" -ge 2 ] || exit 0
get() { awk -v k="$1" -v f="$2" '$1==k {print $f}' "$W/all"; }
printf 'ccbt / libtorrent: p50 %.2fx, p95 %.2fx (goal <= 0.8), last %.2fx, seeder upload %.2fx, CPU %.2fx\n' \
  "$(echo "$(get ccbt 2) / $(get libtorrent 2)" | bc -l)" "$(echo "$(get ccbt 3) / $(get libtorrent 3)" | bc -l)" \
  "$(echo "$(get ccbt 4) / $(get libtorrent 4)" | bc -l)" "$(echo "$(get ccbt 5) / $(get libtorrent 5)" | bc -l)" \
  "$(echo "$(get ccbt 6) / $(get libtorrent 6)" | bc -l)"
