# The idle daemon's load, shared by benches/daemon_idle.sh and scripts/link-order.sh (which must
# profile what the benchmark measures). Source it, then: make_idle_items DIR BIN N
# makes N torrents of one 64 KiB file (DIR/data/tI, their .torrent files in DIR/t) and 10 shares
# of one 200 KB file, published into the store DIR/cd.
make_idle_items() {
  local w=$1 bin=$2 n=$3 i
  mkdir -p "$w/data" "$w/t"
  for i in $(seq "$n"); do
    mkdir -p "$w/data/t$i"
    head -c 65536 /dev/urandom > "$w/data/t$i/f.bin"
    "$bin" -q create "$w/data/t$i" --v1 -o "$w/t/t$i.torrent"
  done
  for i in $(seq 10); do
    mkdir -p "$w/share$i"
    head -c 200000 /dev/urandom > "$w/share$i/a.bin"
    "$bin" -q --data-dir "$w/cd" publish "$w/share$i" > /dev/null
  done
}
