#!/usr/bin/env bash
# FUSE mount benchmark: fio sequential and random 4 KiB reads on a fully local 1 GiB file through
# `ccbt mount` versus the same file on the native filesystem, same run; then `find | wc -l` and
# `ls -lR` over a 100k-file share through the mount.
# usage: benches/mount_fio.sh [MIB=1024] [FILES=100000]
# Loopback only: the DHT stays off (no public bootstrap routers).
export CCBT_ENABLE_DHT=false CCBT_DHT_BOOTSTRAP= CCBT_PORT_MAPPING=false
set -euo pipefail
cd "$(dirname "$0")/.."
MIB=${1:-1024}; FILES=${2:-100000}
command -v fio >/dev/null || { echo "fio missing: apt-get install fio" >&2; exit 1; }
cargo build --release -q -p ccbt
BIN=$PWD/target/release/ccbt
W=$(mktemp -d /tmp/ccbt-bench-mount.XXXXXX)
PIDS=()
cleanup() { for d in m m2 mb; do umount -l "$W/$d" 2>/dev/null || true; done; for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$W"; }
trap cleanup EXIT
mkdir -p "$W/src" "$W/m" "$W/m2"
head -c $((MIB << 20)) /dev/urandom > "$W/src/big.bin"
ID=$("$BIN" -q --data-dir "$W/A" publish "$W/src")
# The owner's mount holds everything locally (reads never touch the network; it is writable, so
# every read goes through the daemon). A follower mount on another data dir reads the file once
# (fetching it from the owner); its read-only mount then keeps a local copy and passes reads
# through to it in the kernel.
ALISTEN=127.0.0.1:$((20000 + RANDOM % 20000))
"$BIN" -q --data-dir "$W/A" mount "$ID" "$W/m" --listen "$ALISTEN" > "$W/mount.log" 2>&1 & PIDS+=($!)
for _ in $(seq 100); do mountpoint -q "$W/m" && break; sleep 0.1; done
mountpoint -q "$W/m" || { cat "$W/mount.log"; exit 1; }
mkdir -p "$W/mb"
"$BIN" --data-dir "$W/B" mount "$ID" "$W/mb" --peer "$ALISTEN" --listen 127.0.0.1:0 > "$W/mountb.log" 2>&1 & PIDS+=($!)
for _ in $(seq 100); do mountpoint -q "$W/mb" && break; sleep 0.1; done
mountpoint -q "$W/mb" || { cat "$W/mountb.log"; exit 1; }
t0=$(date +%s.%N); cat "$W/mb/big.bin" > /dev/null; t1=$(date +%s.%N)
printf 'follower: first read of %d MiB over loopback: %.2f s\n' "$MIB" "$(echo "$t1-$t0" | bc -l)"
for _ in $(seq 600); do grep -q "local copy for passthrough reads written" "$W/mountb.log" && break; sleep 0.1; done
grep -o "local copy for passthrough reads written.*" "$W/mountb.log" || { echo "no local copy"; cat "$W/mountb.log"; exit 1; }
fiojob() { # name file rw bs invalidate
  fio --name="$1" --filename="$2" --rw="$3" --bs="$4" --size="${MIB}M" --ioengine=psync --direct=0 \
      --invalidate="$5" --runtime=20 --time_based=0 --readonly --output-format=terse --terse-version=3 \
      2>/dev/null | awk -F';' '{print $7}'
}
# Cases, all in this run:
#   native-warm  the source file in the page cache (fio --invalidate=0): what "fully local" costs natively
#   native-cold  fio drops the file's cache first (--invalidate=1): the disk
#   ccbt-fuse    owner mount, fio drops the mount file's cache first: every byte goes through FUSE
#                (store read, BLAKE3 check, reply); the store's own files stay in the page cache, as
#                on a used node
#   ccbt-cached  a second pass without dropping: a reopened, unchanged file keeps the kernel cache
#   ccbt-pass    follower mount, passthrough to its local copy (in the page cache, as the native-warm
#                file is)
#   *-dropped    after `echo 1 > /proc/sys/vm/drop_caches`: native and passthrough from the disk
cat "$W/src/big.bin" > /dev/null
for rw in read randread; do
  bs=$([ $rw = read ] && echo 1M || echo 4k)
  for side in native-warm native-cold ccbt-fuse ccbt-cached ccbt-pass; do
    case $side in
      native-warm) f="$W/src/big.bin"; inv=0 ;; native-cold) f="$W/src/big.bin"; inv=1 ;;
      ccbt-fuse) f="$W/m/big.bin"; inv=1 ;; ccbt-cached) f="$W/m/big.bin"; inv=0 ;;
      ccbt-pass) f="$W/mb/big.bin"; inv=0 ;;
    esac
    [ $side = native-warm ] && cat "$W/src/big.bin" > /dev/null
    kbs=$(fiojob "$rw-$side" "$f" "$rw" "$bs" "$inv")
    printf '%-9s %-14s %9.1f MiB/s\n' "$rw" "$side" "$(echo "$kbs/1024" | bc -l)"
    echo "$rw $side $kbs" >> "$W/res"
  done
done
for rw in read randread; do
  bs=$([ $rw = read ] && echo 1M || echo 4k)
  for side in native-dropped ccbt-pass-dropped; do
    case $side in native-dropped) f="$W/src/big.bin" ;; ccbt-pass-dropped) f="$W/mb/big.bin" ;; esac
    sync; echo 1 > /proc/sys/vm/drop_caches
    kbs=$(fiojob "$rw-$side" "$f" "$rw" "$bs" 0)
    printf '%-9s %-17s %9.1f MiB/s\n' "$rw" "$side" "$(echo "$kbs/1024" | bc -l)"
    echo "$rw $side $kbs" >> "$W/res"
  done
done
for rw in read randread; do
  n=$(awk -v r=$rw '$1==r && $2=="native-warm" {print $3}' "$W/res")
  for side in ccbt-fuse ccbt-cached ccbt-pass; do
    c=$(awk -v r=$rw -v s=$side '$1==r && $2==s {print $3}' "$W/res")
    printf '%-9s %-14s / native-warm = %.0f%%\n' "$rw" "$side" "$(echo "100*$c/$n" | bc -l)"
  done
  n=$(awk -v r=$rw '$1==r && $2=="native-dropped" {print $3}' "$W/res")
  c=$(awk -v r=$rw '$1==r && $2=="ccbt-pass-dropped" {print $3}' "$W/res")
  printf '%-9s %-17s / native-dropped = %.0f%%\n' "$rw" "ccbt-pass-dropped" "$(echo "100*$c/$n" | bc -l)"
done
# 100k files.
mkdir -p "$W/many"
/usr/bin/python3 - "$W/many" "$FILES" <<'PY'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    d = os.path.join(root, f"d{i % 100:03d}", f"e{(i // 100) % 10}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"f{i}.txt"), "w") as f:
        f.write(f"file {i}\n")
PY
t0=$(date +%s.%N); ID2=$("$BIN" -q --data-dir "$W/C" publish "$W/many"); t1=$(date +%s.%N)
printf 'publish of %d small files: %.2f s\n' "$FILES" "$(echo "$t1-$t0" | bc -l)"
"$BIN" -q --data-dir "$W/C" mount "$ID2" "$W/m2" --listen 127.0.0.1:0 > "$W/mount2.log" 2>&1 & PIDS+=($!)
for _ in $(seq 600); do mountpoint -q "$W/m2" && break; sleep 0.1; done
t0=$(date +%s.%N); n=$(find "$W/m2" | wc -l); t1=$(date +%s.%N)
printf 'find over the mount: %d entries in %.2f s\n' "$n" "$(echo "$t1-$t0" | bc -l)"
t0=$(date +%s.%N); ls -lR "$W/m2" > /dev/null; t1=$(date +%s.%N)
printf 'ls -lR over the mount: %.2f s\n' "$(echo "$t1-$t0" | bc -l)"
t0=$(date +%s.%N); n=$(find "$W/many" | wc -l); t1=$(date +%s.%N)
printf 'find on the native fs: %d entries in %.2f s\n' "$n" "$(echo "$t1-$t0" | bc -l)"
