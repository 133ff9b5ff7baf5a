#!/usr/bin/env bash
# Regenerates cli/link-order.txt, the functions an idle daemon runs, which cli/build.rs has the
# linker place together (see docs/performance.md, "Daemon idle cost"). Runs `ccbt daemon` under
# callgrind through the daemon_idle benchmark's load: start, 100 torrents added through the API,
# 10 shares, items and metrics read, 90 s at rest (the benchmark measures the first 80), a clean stop. Every function callgrind saw run
# in the binary is listed, in first-call order. Re-run it after large changes (a function missing
# from the list is only placed elsewhere, never lost). Loopback only, in a namespace of its own.
# usage: scripts/link-order.sh
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${CCBT_IN_NETNS:-}" ]; then
  export CCBT_IN_NETNS=1
  exec ./scripts/netns.sh "$0" "$@"
fi
command -v valgrind >/dev/null || { echo "valgrind missing (apt-get install valgrind)"; exit 1; }
export CCBT_ENABLE_DHT=false CCBT_DHT_BOOTSTRAP= CCBT_PORT_MAPPING=false
cargo build --release -q -p ccbt --offline
BIN=$PWD/target/release/ccbt
W=$(mktemp -d /tmp/ccbt-link-order.XXXXXX)
DPID=
cleanup() {
  [ -n "$DPID" ] && kill -9 "$DPID" 2>/dev/null || true
  rm -rf "$W"
}
trap cleanup EXIT
. benches/idle_items.sh
make_idle_items "$W" "$BIN" 100
API=127.0.0.1:$((20000 + RANDOM % 10000))
valgrind --tool=callgrind --demangle=no --callgrind-out-file="$W/cg.out" \
  "$BIN" --data-dir "$W/cd" daemon --api "$API" --listen "127.0.0.1:$((30000 + RANDOM % 10000))" \
  > "$W/daemon.log" 2>&1 &
DPID=$!
for _ in $(seq 300); do curl -sf -o /dev/null "http://$API/metrics" && break; sleep 0.2; done
curl -sf -o /dev/null "http://$API/metrics" || { tail "$W/daemon.log"; exit 1; }
for i in $(seq 100); do "$BIN" -q --data-dir "$W/cd" add "$W/t/t$i.torrent" -o "$W/data" > /dev/null; done
for _ in $(seq 300); do
  [ "$("$BIN" --data-dir "$W/cd" --json list | grep -c '"state": "seeding"')" -ge 100 ] && break; sleep 0.5
done
TOKEN=$(cat "$W/cd/api-token")
for _ in $(seq 20); do
  curl -sf -H "Authorization: Bearer $TOKEN" "http://$API/api/items" > /dev/null
  curl -sf "http://$API/metrics" > /dev/null
done
sleep 90
"$BIN" --data-dir "$W/cd" stop > /dev/null
for _ in $(seq 600); do kill -0 "$DPID" 2>/dev/null || break; sleep 0.2; done
kill -0 "$DPID" 2>/dev/null && { echo "the daemon did not stop"; exit 1; }
DPID=
# Callgrind names each function once, as `fn=(id) name` or `cfn=(id) name`; `'N` marks a
# recursion depth. Keep the names the binary defines (its own code, not libc's).
nm --defined-only "$BIN" | awk '$2 ~ /^[tTwW]$/ {print $3}' | sort -u > "$W/defined"
grep -oE '^c?fn=\([0-9]+\) .+' "$W/cg.out" | sed -E "s/^c?fn=\([0-9]+\) //; s/'[0-9]+\$//" \
  | awk 'NR == FNR {d[$0] = 1; next} ($0 in d) && !seen[$0]++' "$W/defined" - > cli/link-order.txt
echo "cli/link-order.txt: $(wc -l < cli/link-order.txt) functions; rebuilding"
cargo build --release -q -p ccbt --offline
