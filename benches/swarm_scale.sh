#!/usr/bin/env bash
# Swarm at scale: one libtorrent seeder and N leechers (default 24), each in its own network
# namespace behind a bridge, every link capped by tc tbf both ways (seeder SEED_RATE; leechers
# from 20 to 100 Mbit/s). Run twice with the same seeder, tracker (opentracker) and topology: all
# leechers ccbt, then all leechers libtorrent. Reports completion times (p50, p95, last), the
# seeder's upload bytes (from the qdisc's counters, not from either client) and total CPU.
# Leechers leave the swarm when complete (both clients the same way).
# No netem in this kernel (only tbf and htb): links have bandwidth caps but no added delay or loss.
# usage: benches/swarm_scale.sh [LEECHERS=24] [MIB=32] [SEED_RATE=40mbit]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-24}; MIB=${2:-32}; SEED_RATE=${3:-40mbit}
command -v opentracker >/dev/null || { echo "opentracker missing (make deps)"; exit 1; }
BENCH_NAME=scale; . benches/lib.sh "$0" "$@"
chmod 755 "$W"
NS=sw$$
cleanup_more() {
  for i in $(seq 0 "$N"); do ip netns del "$NS-n$i" 2>/dev/null || true; done
  ip netns del "$NS-br" 2>/dev/null || true
}
ipof() { echo "10.77.$(($1 / 250)).$(($1 % 250 + 1))"; }
rate_of() { # leecher i: 20..100 Mbit/s
  if [ "$1" -eq 0 ]; then echo "$SEED_RATE"; else echo "$((20 + ($1 - 1) * 80 / (N > 1 ? N - 1 : 1)))mbit"; fi
}
ip netns add "$NS-br"
ip -n "$NS-br" link set lo up
ip -n "$NS-br" link add br0 type bridge
ip -n "$NS-br" link set br0 up
for i in $(seq 0 "$N"); do
  n="$NS-n$i"
  ip netns add "$n"
  ip -n "$n" link set lo up
  ip link add "sv$$x$i" type veth peer name "sb$$x$i"
  ip link set "sv$$x$i" netns "$n"
  ip link set "sb$$x$i" netns "$NS-br"
  ip -n "$n" link set "sv$$x$i" name eth0
  ip -n "$n" addr add "$(ipof "$i")/16" dev eth0
  ip -n "$n" link set eth0 up
  ip -n "$NS-br" link set "sb$$x$i" master br0
  ip -n "$NS-br" link set "sb$$x$i" up
  r=$(rate_of "$i")
  # Upload cap on the node's side, download cap on the bridge's side.
  ip netns exec "$n" tc qdisc add dev eth0 root tbf rate "$r" burst 64kb latency 100ms
  ip netns exec "$NS-br" tc qdisc add dev "sb$$x$i" root tbf rate "$r" burst 64kb latency 100ms
done
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
lt_settings() { echo "{\"listen_interfaces\": \"$(ipof "$1"):7000\", \"outgoing_interfaces\": \"\"}"; }
ip netns exec "$NS-n0" env LT_SETTINGS="$(lt_settings 0)" /usr/bin/python3 "$LT" seed "$W/t.torrent" "$W/seed" 7000 \
  > "$W/seed.out" 2>&1 &
PIDS+=($!)
for _ in $(seq 600); do grep -q ready "$W/seed.out" 2>/dev/null && break; sleep 0.2; done
grep -q '"ready": true' "$W/seed.out" || { echo "seeder not ready"; cat "$W/seed.out"; exit 1; }
sent() { ip netns exec "$NS-n0" tc -s qdisc show dev eth0 | awk '/Sent/ {print $2; exit}'; }
pct() { sort -n | awk -v p="$1" '{a[NR]=$1} END {i=int((NR*p+99)/100); if (i<1) i=1; print a[i]}'; }
run() { # label
  local label=$1 before pids=()
  before=$(sent)
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
  local up=$(( $(sent) - before ))
  local times cpu
  times=$(for i in $(seq 1 "$N"); do awk '{print $1}' "$W/time.$i"; done)
  cpu=$(for i in $(seq 1 "$N"); do awk '{print $2 + $3}' "$W/time.$i"; done | awk '{s+=$1} END {print s}')
  printf '%-10s p50 %6.2f s  p95 %6.2f s  last %6.2f s  seeder upload %6.1f MiB (%.2fx the file)  CPU %6.1f s  failed %d\n' \
    "$label" "$(echo "$times" | pct 50)" "$(echo "$times" | pct 95)" "$(echo "$times" | pct 100)" \
    "$(echo "$up / 1048576" | bc -l)" "$(echo "$up / ($MIB * 1048576)" | bc -l)" "$cpu" "$failed"
  echo "$label $(echo "$times" | pct 50) $(echo "$times" | pct 95) $(echo "$times" | pct 100) $up $cpu" >> "$W/all"
}
echo "swarm: 1 libtorrent seeder ($SEED_RATE) + $N leechers (20-100 Mbit/s), $MIB MiB, tracker only"
run ccbt
run libtorrent
get() { awk -v k="$1" -v f="$2" '$1==k {print $f}' "$W/all"; }
printf 'ccbt / libtorrent: p50 %.2fx, p95 %.2fx (goal <= 0.8), last %.2fx, seeder upload %.2fx, CPU %.2fx\n' \
  "$(echo "$(get ccbt 2) / $(get libtorrent 2)" | bc -l)" "$(echo "$(get ccbt 3) / $(get libtorrent 3)" | bc -l)" \
  "$(echo "$(get ccbt 4) / $(get libtorrent 4)" | bc -l)" "$(echo "$(get ccbt 5) / $(get libtorrent 5)" | bc -l)" \
  "$(echo "$(get ccbt 6) / $(get libtorrent 6)" | bc -l)"
