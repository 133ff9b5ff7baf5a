#!/usr/bin/env bash
# Write benchmark of the owner's writable mount against the native filesystem, same run:
#   fio random 4 KiB writes and sequential 1 MiB writes on a 64 MiB file (psync, end_fsync=1),
#   and dbench (its default loadfile, 2 clients), each ROUNDS times, interleaved, best and median.
# usage: benches/owner_write.sh [ROUNDS=3] [DBENCH_SECS=10]
# Loopback only: the DHT stays off (no public bootstrap routers).
export CCBT_ENABLE_DHT=false CCBT_DHT_BOOTSTRAP= CCBT_PORT_MAPPING=false
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}; DSECS=${2:-10}
for c in fio dbench; do command -v $c >/dev/null || { echo "$c missing: apt-get install $c" >&2; exit 1; }; done
cargo build --release -q -p ccbt
BIN=$PWD/target/release/ccbt
W=$(mktemp -d /tmp/ccbt-bench-write.XXXXXX)
PID=
cleanup() { umount -l "$W/m" 2>/dev/null || true; [ -n "$PID" ] && kill "$PID" 2>/dev/null; rm -rf "$W"; }
trap cleanup EXIT
mkdir -p "$W/src" "$W/m" "$W/native"
echo seed > "$W/src/seed"
ID=$("$BIN" -q --data-dir "$W/A" publish "$W/src")
"$BIN" -q --data-dir "$W/A" mount "$ID" "$W/m" --listen 127.0.0.1:$((20000 + RANDOM % 20000)) > "$W/mount.log" 2>&1 & PID=$!
for _ in $(seq 100); do mountpoint -q "$W/m" && break; sleep 0.1; done
mountpoint -q "$W/m" || { cat "$W/mount.log"; exit 1; }
DBF=$(ls /usr/share/dbench/client.txt 2>/dev/null || true)
fiojob() { # dir rw bs -> IOPS (terse v3 field 49 = write IOPS) and KiB/s (field 48)
  fio --name=w --directory="$1" --rw="$2" --bs="$3" --size=64m --ioengine=psync --end_fsync=1 \
      --output-format=terse --terse-version=3 2>/dev/null | awk -F';' '{print $49, $48}'
  rm -f "$1"/w.*
}
dbenchjob() { # dir -> MB/sec
  dbench ${DBF:+-c "$DBF"} -D "$1" -t "$DSECS" 2 2>/dev/null | awk '/Throughput/ {print $2}'
  rm -rf "$1"/clients
}
declare -A R
for r in $(seq "$ROUNDS"); do
  for side in native mount; do
    d=$([ $side = native ] && echo "$W/native" || echo "$W/m")
    read -r iops _ < <(fiojob "$d" randwrite 4k); R[rand-$side]+="$iops "
    read -r _ kbs < <(fiojob "$d" write 1m); R[seq-$side]+="$((kbs / 1024)) "
    R[dbench-$side]+="$(dbenchjob "$d") "
  done
done
stat() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {printf "%s %s\n", a[NR], a[int((NR+1)/2)]}'; }
printf '%-28s %14s %14s %14s %14s %8s\n' case mount-best mount-median native-best native-median ratio
for k in rand seq dbench; do
  unit=$(case $k in rand) echo IOPS;; seq) echo MiB/s;; dbench) echo MB/s;; esac)
  read -r mb mm < <(echo "${R[$k-mount]}" | stat)
  read -r nb nm < <(echo "${R[$k-native]}" | stat)
  printf '%-28s %14s %14s %14s %14s %7.1f%%\n' "$k ($unit)" "$mb" "$mm" "$nb" "$nm" "$(echo "100*$mm/$nm" | bc -l)"
done
