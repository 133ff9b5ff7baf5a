#!/usr/bin/env bash
# MSE/PE cost: CPU seconds per GiB moved (seeder + leecher) for RC4 against plaintext, ccbt to
# ccbt on loopback, same data, same run. Also the wall time of each transfer.
# usage: benches/mse_cost.sh [MIB=512] [RUNS=2]
set -euo pipefail
cd "$(dirname "$0")/.."
export CCBT_ENABLE_DHT=false CCBT_DHT_BOOTSTRAP= CCBT_PORT_MAPPING=false
MIB=${1:-512}; RUNS=${2:-2}
cargo build --release -q -p ccbt --offline
BIN=$PWD/target/release/ccbt
W=$(mktemp -d /tmp/ccbt-bench-mse.XXXXXX)
SP=""
cleanup() { [ -n "$SP" ] && kill "$SP" 2>/dev/null; wait 2>/dev/null; rm -rf "$W"; }
trap cleanup EXIT
mkdir -p "$W/seed/data"
head -c $((MIB * 1048576)) /dev/urandom > "$W/seed/data/a.bin"
"$BIN" -q create "$W/seed/data" --v1 --piece-length 1M -o "$W/t.torrent"
cpu_of() { awk '{print ($14 + $15) / 100}' "/proc/$1/stat"; }  # user+sys, clock ticks of 1/100 s
for enc in disable require; do
  PORT=$((30000 + RANDOM % 20000))
  CCBT_ENCRYPTION=$enc "$BIN" -q --data-dir "$W/s-$enc" seed "$W/t.torrent" "$W/seed" --listen "127.0.0.1:$PORT" --no-trackers > /dev/null 2>&1 &
  SP=$!
  for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.2; done
  for r in $(seq "$RUNS"); do
    rm -rf "$W/dl" "$W/d"
    s0=$(cpu_of "$SP"); t0=$(date +%s.%N)
    /usr/bin/time -f "%U %S" -o "$W/t" env CCBT_ENCRYPTION=$enc "$BIN" -q --data-dir "$W/d" download "$W/t.torrent" \
      -o "$W/dl" --listen 127.0.0.1:0 --no-trackers --no-resume --peer "127.0.0.1:$PORT"
    wall=$(echo "$(date +%s.%N) - $t0" | bc -l); s1=$(cpu_of "$SP")
    cmp -s "$W/dl/data/a.bin" "$W/seed/data/a.bin" || { echo "download differs"; exit 1; }
    read -r u s < "$W/t"
    cpu=$(echo "$u + $s + $s1 - $s0" | bc -l)
    per=$(echo "$cpu * 1024 / $MIB" | bc -l)
    printf '%-8s run %d: %6.2f s wall, %6.2f CPU s (both ends), %5.2f CPU s per GiB\n' "$enc" "$r" "$wall" "$cpu" "$per"
    echo "$enc $per" >> "$W/all"
  done
  kill "$SP"; wait "$SP" 2>/dev/null || true; SP=""
done
med() { awk -v k="$1" '$1==k {print $2}' "$W/all" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
p=$(med disable); r=$(med require)
printf 'median CPU per GiB: plaintext %.2f s, RC4 %.2f s: RC4 costs %.2f CPU s per GiB more (%.2fx)\n' "$p" "$r" "$(echo "$r - $p" | bc -l)" "$(echo "$r / $p" | bc -l)"
