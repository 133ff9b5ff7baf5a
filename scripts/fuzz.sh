#!/usr/bin/env bash
# Runs every cargo-fuzz target in tests/fuzz for SECS seconds each (default 60), after replaying
# its kept regression inputs. Corpora start from tests/fuzz/seeds and the test data, and grow in
# target/fuzz-corpus. A crash stops the run; its input is in tests/fuzz/artifacts/<target>/ -
# fix it, then keep the input in tests/fuzz/regressions/<target>/.
# usage: scripts/fuzz.sh [SECS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-60}; shift || true
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
rustup toolchain list | grep -q nightly || rustup toolchain install nightly --profile minimal
FUZZ="cargo +nightly fuzz"
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || mapfile -t TARGETS < <(cd tests/fuzz && $FUZZ list)
(cd tests/fuzz && $FUZZ build -O)
root=$PWD
for t in "${TARGETS[@]}"; do
  corpus=$root/target/fuzz-corpus/$t
  mkdir -p "$corpus"
  cp -n "$root/tests/fuzz/seeds/$t"/* "$corpus/" 2>/dev/null || true
  case $t in bencode|metainfo) cp -n "$root"/tests/data/bad-torrents/*.torrent "$corpus/" ;; esac
  if [ -d "$root/tests/fuzz/regressions/$t" ]; then
    (cd tests/fuzz && $FUZZ run -O "$t" "$root/tests/fuzz/regressions/$t" -- -runs=0)
  fi
  log=$root/target/fuzz-corpus/$t.log
  if ! (cd tests/fuzz && $FUZZ run -O "$t" "$corpus" -- -max_total_time="$SECS" -rss_limit_mb=2048 -max_len=1048576 -print_final_stats=1) > "$log" 2>&1; then
    tail -40 "$log"; echo "fuzz: $t CRASHED (input in tests/fuzz/artifacts/$t/)"; exit 1
  fi
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
  echo "fuzz: $t ${SECS}s: $runs executions, no crash"
done
