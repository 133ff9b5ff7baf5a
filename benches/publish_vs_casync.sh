#!/usr/bin/env bash
# `ccbt publish` of a 1 GiB folder into an empty store and again into a full one (all dedup),
# against `casync make` on the same folder, alternated in one run, page cache warm.
# Prints seconds, MB/s and peak RSS for each, and the ratios.
# usage: benches/publish_vs_casync.sh [RUNS=2] [MIB=1024]
# Loopback only: the DHT stays off (no public bootstrap routers).
export CCBT_ENABLE_DHT=false CCBT_DHT_BOOTSTRAP= CCBT_PORT_MAPPING=false
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-2}; MIB=${2:-1024}
command -v casync >/dev/null || { echo "casync missing: apt-get install casync" >&2; exit 1; }
cargo build --release -q -p ccbt
BIN=$PWD/target/release/ccbt
W=$(mktemp -d /tmp/ccbt-bench-publish.XXXXXX); trap 'rm -rf "$W"' EXIT
mkdir -p "$W/tree/sub"
head -c $((MIB * 1048576 * 6 / 10)) /dev/urandom > "$W/tree/a.bin"
head -c $((MIB * 1048576 * 4 / 10)) /dev/urandom > "$W/tree/sub/b.bin"
BYTES=$(du -sb "$W/tree" | cut -f1)
cat "$W/tree/a.bin" "$W/tree/sub/b.bin" > /dev/null
run() { # label, command...: prints "label seconds MB/s rssKB"
  local label=$1; shift
  /usr/bin/time -f "%e %M" -o "$W/t" "$@" > /dev/null
  read -r secs rss < "$W/t"
  printf '%-14s %6.2f s %7.0f MB/s  peak RSS %6.0f MiB\n' "$label" "$secs" "$(echo "$BYTES / $secs / 1000000" | bc -l)" "$(echo "$rss / 1024" | bc -l)"
  echo "$label $secs" >> "$W/all"
}
for i in $(seq "$RUNS"); do
  rm -rf "$W/data" "$W/store.castr" "$W"/*.caidx
  run ccbt-empty "$BIN" -q --data-dir "$W/data" publish "$W/tree"
  run ccbt-full "$BIN" -q --data-dir "$W/data" publish "$W/tree" --new
  run casync-empty casync make --store="$W/store.castr" "$W/a.caidx" "$W/tree"
  run casync-full casync make --store="$W/store.castr" "$W/b.caidx" "$W/tree"
done
med() { grep "^$1 " "$W/all" | awk '{print $2}' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
for k in empty full; do
  c=$(med ccbt-$k); s=$(med casync-$k)
  printf 'median %-5s: ccbt %.2f s (%.0f MB/s), casync %.2f s (%.0f MB/s), ccbt is %.1fx faster\n' "$k" "$c" "$(echo "$BYTES/$c/1000000" | bc -l)" "$s" "$(echo "$BYTES/$s/1000000" | bc -l)" "$(echo "$s/$c" | bc -l)"
done
