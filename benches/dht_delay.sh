#!/usr/bin/env bash
# DHT lookups over a delayed, lossy path: issue 14's benchmark on a kernel without sch_netem.
#
# scripts/delaynet.sh joins two namespaces through a userspace delay line (DELAY_MS each way,
# LOSS dropped). The DHT lives in dlB (10.77.2.2): LT_NODES libtorrent nodes (one process,
# tests/scripts/lt_dht.py) and CCBT_NODES ccbt nodes (`ccbt seed`, each serving a small share, so
# each share id is announced). The two lookup clients sit in dlA (10.77.1.2), one ccbt node and
# one libtorrent node, so every query either sends crosses the delayed path: 64 nodes with the
# defaults. libtorrent nodes put ITEMS immutable items; each target is looked up once by each
# client (BEP 44 get), and each share swarm once (get_peers): success, latency p50/p95, queries
# per lookup, same targets, same run (latency to the first result: the first peers, or the first
# verified item). Then ccbt's node memory, and a cold mount by share id alone
# from dlA through that DHT (seconds from the command to the first byte read).
#
# usage: benches/dht_delay.sh [LT_NODES=40] [CCBT_NODES=22] [ITEMS=40] [DELAY_MS=25] [LOSS=0.01]
# Root only. Nothing leaves the namespaces.
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH_NAME=dht-delay; . benches/lib.sh "$0" "$@"
export CCBT_DHT_MAX_NODES_PER_IP=0 CCBT_DHT_QUERIES_PER_IP_PER_SEC=0
LT_NODES=${1:-40}; CCBT_NODES=${2:-22}; ITEMS=${3:-40}; DELAY=${4:-25}; LOSS=${5:-0.01}
CPIDS=()
UNMOUNT=("$W/mnt"); DELAYNET=1
scripts/delaynet.sh up "$DELAY" "$LOSS"
A="ip netns exec dlA"; B="ip netns exec dlB"
HB=10.77.2.2; HA=10.77.1.2
BOOT=$HB:42000

# A driver for one lt_dht.py process: lt NAME '{json}' prints its one-line reply.
start_lt() { # name netns-cmd host ports [bootstrap]
  local name=$1 ns=$2 host=$3 ports=$4 boot=${5:-}
  mkfifo "$W/$name.in"
  $ns env LT_DHT_HOST="$host" /usr/bin/python3 tests/scripts/lt_dht.py --ports "$ports" --settle 2 \
    ${boot:+--bootstrap "$boot"} < "$W/$name.in" > "$W/$name.out" 2> "$W/$name.err" &
  PIDS+=($!)
}
lt() { # name json
  local n; n=$(wc -l < "$W/$1.out"); echo "$2" >> "$W/$1.in.buf"; echo "$2" >&"${FD[$1]}"
  while [ "$(wc -l < "$W/$1.out")" -le "$n" ]; do sleep 0.05; done; tail -1 "$W/$1.out"
}
declare -A FD
start_lt ltB "$B" "$HB" "$(seq 42000 $((42000 + LT_NODES - 1)) | paste -sd,)"
exec 3> "$W/ltB.in"; FD[ltB]=3
for _ in $(seq 1200); do [ -s "$W/ltB.out" ] && break; sleep 0.5; done
head -1 "$W/ltB.out" | grep -q ready || { echo "libtorrent nodes did not start" >&2; cat "$W/ltB.err" >&2; exit 1; }
ids=()
for i in $(seq 0 $((CCBT_NODES - 1))); do
  mkdir -p "$W/s$i"; head -c 1000 /dev/urandom > "$W/s$i/f.bin"
  ids+=("$("$BIN" -q --data-dir "$W/c$i" publish "$W/s$i")")
  $B "$BIN" --data-dir "$W/c$i" --dht-bootstrap "$BOOT" seed --listen "$HB:$((43000 + i))" > "$W/c$i.log" 2>&1 &
  PIDS+=($!); CPIDS+=($!)
done
# The lookup clients, across the delayed path.
start_lt ltA "$A" "$HA" 42500 "$BOOT"
exec 4> "$W/ltA.in"; FD[ltA]=4
for _ in $(seq 600); do [ -s "$W/ltA.out" ] && break; sleep 0.5; done
head -1 "$W/ltA.out" | grep -q ready || { echo "the libtorrent client did not start" >&2; cat "$W/ltA.err" >&2; exit 1; }
$A "$BIN" --data-dir "$W/cA" --dht-bootstrap "$BOOT" seed --listen "$HA:43500" > "$W/cA.log" 2>&1 &
PIDS+=($!); CPIDS+=($!)
NET="$LT_NODES libtorrent + $CCBT_NODES ccbt nodes in dlB, one client of each in dlA; ${DELAY} ms each way, loss $LOSS"
echo "network: $NET; settling 60 s" >&2
sleep 60
targets=()
for i in $(seq "$ITEMS"); do
  t=$(lt ltB "{\"cmd\":\"put_immutable\",\"n\":$((i % LT_NODES)),\"value\":\"dht delay item $i $RANDOM\"}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["target"])')
  targets+=("$t")
done
sleep 5
: > "$W/c.get"; : > "$W/l.get"; : > "$W/c.peers"; : > "$W/l.peers"
for t in "${targets[@]}"; do
  $A "$BIN" --data-dir "$W/cA" dht get "$t" --json 2>/dev/null >> "$W/c.get" || echo '{"found": false}' >> "$W/c.get"
  lt ltA "{\"cmd\":\"get_immutable\",\"n\":0,\"target\":\"$t\"}" >> "$W/l.get"
done
for id in "${ids[@]}"; do
  $A "$BIN" --data-dir "$W/cA" dht peers "$id" --json 2>/dev/null >> "$W/c.peers" || echo '{"found": false}' >> "$W/c.peers"
  lt ltA "{\"cmd\":\"get_peers\",\"n\":0,\"ih\":\"$id\",\"timed\":true}" >> "$W/l.peers"
done
rss=$(for p in "${CPIDS[@]}"; do grep VmRSS "/proc/$p/status" | awk '{print $2}'; done | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
out=$($A "$BIN" --data-dir "$W/cA" --json dht status 2>/dev/null || echo '{}')

# Cold mount by share id alone, from dlA, through this DHT.
mkdir -p "$W/share" "$W/mnt"
head -c $((8 << 20)) /dev/urandom > "$W/share/video.bin"
id=$("$BIN" -q --data-dir "$W/owner" publish "$W/share")
$B "$BIN" --data-dir "$W/owner" --dht-bootstrap "$BOOT" seed --listen "$HB:44000" > "$W/owner.log" 2>&1 &
PIDS+=($!)
sleep 10
t0=$(date +%s.%N)
$A "$BIN" --data-dir "$W/fresh" --dht-bootstrap "$BOOT" mount "$id" "$W/mnt" --listen "$HA:44001" > "$W/mount.log" 2>&1 &
MP=$!
PIDS+=($MP)
# `ip netns exec` gives the mount its own mount namespace: read it from inside that one.
got=no
for _ in $(seq 2400); do
  nsenter -t "$MP" -m head -c 1 "$W/mnt/video.bin" > /dev/null 2>&1 && { got=yes; break; }
  sleep 0.05
done
t1=$(date +%s.%N)
cold=$(echo "$t1 - $t0" | bc)
if [ "$got" = yes ] && ! nsenter -t "$MP" -m cmp -s "$W/mnt/video.bin" "$W/share/video.bin"; then
  echo "cold mount: the bytes read differ from the owner's" >&2; got=no
fi
if [ "$got" = no ]; then
  echo "cold mount: no byte within 120 s; its log:" >&2; tail -5 "$W/mount.log" >&2
  cold=-1
fi

echo "network: $NET; $ITEMS items, ${#ids[@]} share swarms"
python3 - "$W" "$rss" "$cold" <<'PY'
import json, sys
w, rss, cold = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
def load(p):
    out = []
    for l in open(p):
        l = l.strip()
        if l:
            try: out.append(json.loads(l))
            except ValueError: out.append({'found': False})
    return out
def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float('nan')
def row(name, r, ok):
    # Latency to the first result (first peers, first verified item): libtorrent's alerts
    # report that, and a download starts dialing then. ccbt's whole walk is 'ms'.
    good = [x for x in r if ok(x) and 'ms' in x]
    ms = [x.get('first_ms', x['ms']) for x in good]
    q = [x['queries'] for x in good if 'queries' in x]
    return (name, len(good), len(r), pct(ms, .5), pct(ms, .95), sum(q) / max(1, len(q)))
for what, cf, lf, okc, okl in (
    ('BEP 44 get (immutable)', 'c.get', 'l.get',
     lambda x: x.get('found', True) is not False, lambda x: x.get('found')),
    ('get_peers (share swarms)', 'c.peers', 'l.peers',
     lambda x: bool(x.get('peers')), lambda x: x.get('found'))):
    rows = [row('ccbt', load(f'{w}/{cf}'), okc), row('libtorrent', load(f'{w}/{lf}'), okl)]
    print(f'\n{what}')
    print('| client | success | p50 ms | p95 ms | queries per lookup |')
    print('|---|---|---|---|---|')
    for n, ok, tot, p50, p95, qq in rows:
        print(f'| {n} | {ok}/{tot} ({100 * ok / max(1, tot):.0f} %) | {p50:.0f} | {p95:.0f} | {qq:.1f} |')
    if rows[1][3] == rows[1][3] and rows[1][3] > 0:
        print(f'ccbt p50 / libtorrent p50: {rows[0][3] / rows[1][3]:.2f}; queries ratio {rows[0][5] / max(0.01, rows[1][5]):.2f}')
print(f'\nccbt node RSS (median of the ccbt nodes): {rss / 1024:.1f} MiB')
print(f'cold mount by share id from dlA, command to first byte: {cold:.2f} s' if cold >= 0
      else 'cold mount by share id from dlA: FAILED (no byte within 120 s)')
PY
