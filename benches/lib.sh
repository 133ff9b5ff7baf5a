# Shared by the benchmarks that run in a network namespace of their own. From the repo root:
#   BENCH_NAME=name; . benches/lib.sh "$0" "$@"
# re-runs the script inside a loopback-only namespace (scripts/netns.sh), turns off what could
# leave it (the DHT's public routers, port mapping), builds the release binary ($BIN; $LT is the
# libtorrent tool), makes the work dir $W and sets the exit trap: every pid in PIDS killed, every
# dir in UNMOUNT unmounted, delaynet taken down when DELAYNET=1, `cleanup_more` run if defined,
# $W removed.
if [ -z "${CCBT_BENCH_IN_NETNS:-}" ]; then
  export CCBT_BENCH_IN_NETNS=1
  exec ./scripts/netns.sh "$@"
fi
export CCBT_ENABLE_DHT=false CCBT_DHT_BOOTSTRAP= CCBT_PORT_MAPPING=false
cargo build --release -q -p ccbt -p ccbt-delayline --offline
# CCBT_BENCH_BIN: another build of ccbt to measure (an A/B of a change), in place of this tree's.
BIN=${CCBT_BENCH_BIN:-$PWD/target/release/ccbt}
LT=$PWD/tests/scripts/lt_tool.py
W=$(mktemp -d "/tmp/ccbt-bench-${BENCH_NAME:-run}.XXXXXX")
PIDS=()
UNMOUNT=()
bench_cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for d in "${UNMOUNT[@]}"; do umount -l "$d" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ -n "${DELAYNET:-}" ]; then scripts/delaynet.sh down >/dev/null 2>&1 || true; fi
  if declare -F cleanup_more >/dev/null; then cleanup_more; fi
  rm -rf "$W"
}
trap bench_cleanup EXIT
