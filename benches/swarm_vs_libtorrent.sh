#!/usr/bin/env bash
# Loopback download benchmark: a libtorrent seeder; ccbt and libtorrent leechers alternate (RUNS each)
# on the same torrent. Prints MiB/s, CPU seconds (user+sys) and peak RSS per run, medians and ratios.
# usage: benches/swarm_vs_libtorrent.sh [RUNS=3] [MIB=1024] [PIECE=262144]
# Loopback only: the DHT stays off (no public bootstrap routers).
export CCBT_ENABLE_DHT=false CCBT_DHT_BOOTSTRAP= CCBT_PORT_MAPPING=false
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-3}; MIB=${2:-1024}; PIECE=${3:-262144}
cargo build --release -q -p ccbt
BIN=$PWD/target/release/ccbt; LT=$PWD/tests/scripts/lt_tool.py
W=$(mktemp -d /tmp/ccbt-bench-swarm.XXXXXX)
SEEDPID=""
cleanup() { [ -n "$SEEDPID" ] && kill "$SEEDPID" 2>/dev/null; rm -rf "$W"; }
trap cleanup EXIT
mkdir -p "$W/seed/data/sub"
head -c $((MIB * 1048576 * 4 / 10 + 1)) /dev/urandom > "$W/seed/data/a.bin"
head -c $((MIB * 1048576 * 3 / 10 + 7)) /dev/urandom > "$W/seed/data/sub/b.bin"
head -c $((MIB * 1048576 - MIB * 1048576 * 7 / 10 - 8)) /dev/urandom > "$W/seed/data/sub/c.bin"
BYTES=$(du -sb "$W/seed/data" | cut -f1)
"$BIN" -q create "$W/seed/data" --v1 --piece-length "$PIECE" -o "$W/t.torrent"
SP=$((20000 + RANDOM % 20000))
/usr/bin/python3 "$LT" seed "$W/t.torrent" "$W/seed" "$SP" > "$W/seed.out" 2>&1 &
SEEDPID=$!
for _ in $(seq 600); do grep -q ready "$W/seed.out" && break; sleep 0.2; done
grep -q '"ready": true' "$W/seed.out" || { echo "seeder not ready"; cat "$W/seed.out"; exit 1; }
row() { # label secs cpu rss_kb
  printf '%-10s %7.2f MiB/s  cpu %6.2f s  peak RSS %6.1f MiB\n' "$1" "$(echo "$BYTES/$2/1048576" | bc -l)" "$3" "$(echo "$4/1024" | bc -l)"
  echo "$1 $(echo "$BYTES/$2/1048576" | bc -l) $3 $4" >> "$W/all"
}
for i in $(seq "$RUNS"); do
  rm -rf "$W/dl" "$W/d"; sync
  /usr/bin/time -f "%e %U %S %M" -o "$W/t" "$BIN" -q --data-dir "$W/d" download "$W/t.torrent" -o "$W/dl" \
      --listen 127.0.0.1:0 --peer "127.0.0.1:$SP" --no-trackers --no-resume
  read -r e u s m < "$W/t"; row ccbt "$e" "$(echo "$u+$s" | bc -l)" "$m"
  cmp -s "$W/dl/data/a.bin" "$W/seed/data/a.bin" || { echo "ccbt download differs"; exit 1; }
  rm -rf "$W/lt"; sync
  LP=$((40000 + RANDOM % 20000))
  /usr/bin/time -f "%e %U %S %M" -o "$W/t" /usr/bin/python3 "$LT" leech "$W/t.torrent" "$W/lt" "$LP" 600 "127.0.0.1:$SP" > "$W/lt.json"
  read -r e u s m < "$W/t"
  secs=$(/usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["seconds"])' "$W/lt.json")
  row libtorrent "$secs" "$(echo "$u+$s" | bc -l)" "$m"
done
med() { grep "^$1 " "$W/all" | awk -v c="$2" '{print $c}' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
c=$(med ccbt 2); l=$(med libtorrent 2); cc=$(med ccbt 3); lc=$(med libtorrent 3); cr=$(med ccbt 4); lr=$(med libtorrent 4)
printf 'median: ccbt %.0f MiB/s, libtorrent %.0f MiB/s, throughput ratio %.2fx\n' "$c" "$l" "$(echo "$c/$l" | bc -l)"
printf 'median CPU per GiB: ccbt %.2f s, libtorrent %.2f s; peak RSS: ccbt %.0f MiB, libtorrent %.0f MiB\n' \
  "$(echo "$cc*1073741824/$BYTES" | bc -l)" "$(echo "$lc*1073741824/$BYTES" | bc -l)" "$(echo "$cr/1024" | bc -l)" "$(echo "$lr/1024" | bc -l)"
