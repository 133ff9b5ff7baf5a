#!/usr/bin/env bash
# DHT lookups, ccbt against libtorrent, same network, same targets, same run.
#
# One mixed DHT of libtorrent nodes (tests/scripts/lt_dht.py) and ccbt nodes (`ccbt seed` on
# empty data dirs), in a network namespace of its own with only loopback, where netem delays
# every packet (RTT about 20-80 ms) and drops 1 %. libtorrent nodes put immutable items; then
# every target is looked up once by a ccbt node (through its running node, warm routing table)
# and once by a libtorrent node: latency p50/p95, success, get queries per lookup. Last, a cold
# mount by share id alone through that DHT: seconds from the command to the first byte read.
#
# usage: benches/dht_lookup.sh [LT_NODES] [CCBT_NODES] [ITEMS]     (defaults 40 24 40)
# Root only (namespace, netem, FUSE). Nothing leaves the namespace.
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH_NAME=dht; . benches/lib.sh "$0" "$@"
# Loopback only: the DHT bootstraps from the namespace's own nodes.
export CCBT_DHT_MAX_NODES_PER_IP=0 CCBT_DHT_QUERIES_PER_IP_PER_SEC=0
LT_NODES=${1:-40}
CCBT_NODES=${2:-24}
ITEMS=${3:-40}
CPIDS=()
UNMOUNT=("$W/mnt")
if tc qdisc add dev lo root netem delay 25ms 15ms loss 1% 2>/dev/null; then
  NET="netem 25±15 ms each way, 1 % loss"
else
  NET="plain loopback: this kernel has no netem (sch_netem), so no delay or loss"
  echo "warning: $NET" >&2
fi

ports=$(seq 42000 $((42000 + LT_NODES - 1)) | paste -sd,)
mkfifo "$W/lt.in"
/usr/bin/python3 tests/scripts/lt_dht.py --ports "$ports" --settle 2 < "$W/lt.in" > "$W/lt.out" 2> "$W/lt.err" &
PIDS+=($!)
exec 3> "$W/lt.in"
lt() { local n; n=$(wc -l < "$W/lt.out"); echo "$1" >&3; while [ "$(wc -l < "$W/lt.out")" -le "$n" ]; do sleep 0.05; done; tail -1 "$W/lt.out"; }
for _ in $(seq 600); do [ -s "$W/lt.out" ] && break; sleep 0.5; done
head -1 "$W/lt.out" | grep -q ready || { echo "libtorrent nodes did not start" >&2; cat "$W/lt.err" >&2; exit 1; }
BOOT=127.0.0.1:42000
for i in $(seq 0 $((CCBT_NODES - 1))); do
  "$BIN" --data-dir "$W/c$i" --dht-bootstrap "$BOOT" seed --listen "127.0.0.1:$((43000 + i))" > "$W/c$i.log" 2>&1 &
  PIDS+=($!)
  CPIDS+=($!)
done
echo "network: $LT_NODES libtorrent + $CCBT_NODES ccbt nodes; $NET; settling 40 s" >&2
sleep 40
targets=()
for i in $(seq "$ITEMS"); do
  t=$(lt "{\"cmd\":\"put_immutable\",\"n\":$((i % LT_NODES)),\"value\":\"dht bench item $i $RANDOM\"}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["target"])')
  targets+=("$t")
done
sleep 5
: > "$W/ccbt.jsonl"; : > "$W/lt.jsonl"
i=0
for t in "${targets[@]}"; do
  c=$((i % CCBT_NODES)); n=$(((i * 7 + 3) % LT_NODES)); i=$((i + 1))
  "$BIN" --data-dir "$W/c$c" dht get "$t" --json 2>/dev/null >> "$W/ccbt.jsonl" || echo '{"found": false}' >> "$W/ccbt.jsonl"
  lt "{\"cmd\":\"get_immutable\",\"n\":$n,\"target\":\"$t\"}" >> "$W/lt.jsonl"
done
rss=$(for p in "${CPIDS[@]}"; do grep VmRSS "/proc/$p/status" | awk '{print $2}'; done | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')

# Cold mount by share id alone, through this DHT.
mkdir -p "$W/share" "$W/mnt"
head -c $((8 << 20)) /dev/urandom > "$W/share/video.bin"
id=$("$BIN" -q --data-dir "$W/owner" publish "$W/share")
"$BIN" --data-dir "$W/owner" --dht-bootstrap "$BOOT" seed --listen 127.0.0.1:44000 > "$W/owner.log" 2>&1 &
PIDS+=($!)
sleep 5
t0=$(date +%s.%N)
"$BIN" --data-dir "$W/fresh" --dht-bootstrap "$BOOT" mount "$id" "$W/mnt" --listen 127.0.0.1:44001 > "$W/mount.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1200); do
  head -c 1 "$W/mnt/video.bin" > /dev/null 2>&1 && break
  sleep 0.05
done
t1=$(date +%s.%N)
cold=$(echo "$t1 - $t0" | bc)
cmp -s "$W/mnt/video.bin" "$W/share/video.bin" && same=yes || same=NO

echo "network: $LT_NODES libtorrent + $CCBT_NODES ccbt nodes, $ITEMS targets; $NET"
python3 - "$W/ccbt.jsonl" "$W/lt.jsonl" "$rss" "$cold" "$same" <<'EOF'
import json, sys
def load(p):
    return [json.loads(l) for l in open(p) if l.strip()]
def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float('nan')
c, l = load(sys.argv[1]), load(sys.argv[2])
rows = []
for name, r in (('ccbt', c), ('libtorrent', l)):
    ok = [x for x in r if x.get('found', True) is not False and 'ms' in x]
    ms = [x['ms'] for x in ok]
    q = [x['queries'] for x in ok]
    rows.append((name, len(ok), len(r), pct(ms, .5), pct(ms, .95), sum(q) / max(1, len(q))))
print('| node | success | p50 ms | p95 ms | get queries per lookup |')
print('|---|---|---|---|---|')
for n, ok, tot, p50, p95, qq in rows:
    print(f'| {n} | {ok}/{tot} ({100 * ok / max(1, tot):.0f} %) | {p50:.0f} | {p95:.0f} | {qq:.1f} |')
print(f'ccbt p50 / libtorrent p50: {rows[0][3] / rows[1][3]:.2f}; queries ratio {rows[0][5] / max(0.01, rows[1][5]):.2f}')
print(f'ccbt node RSS (median): {int(sys.argv[3]) / 1024:.1f} MiB')
print(f'cold mount by share id, command to first byte: {float(sys.argv[4]):.2f} s (whole file byte-exact: {sys.argv[5]})')
EOF
