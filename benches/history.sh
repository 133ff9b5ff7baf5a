#!/usr/bin/env bash
# History at scale: a share of 10,000 files (100 dirs x 100 files of 1-4 KiB) given VERSIONS
# versions of a few edits each (3 files rewritten, 1 added, 1 removed per version, the same
# edits for both), published with `ccbt publish` and committed with git in the same run.
# Measures: `ccbt log` (cold: summaries computed and cached; warm), `ccbt diff @1 @VERSIONS`,
# `ls` of `.ccbt/history/<middle>/` on a mount (first look: listing loaded), and the store's
# growth in bytes per version against git's (.git after each commit's loose objects, and after
# `git gc`).
# usage: benches/history.sh [VERSIONS=1000]
# Loopback only: the DHT stays off.
export CCBT_ENABLE_DHT=false CCBT_DHT_BOOTSTRAP= CCBT_PORT_MAPPING=false
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-1000}
command -v git >/dev/null || { echo "git missing: apt-get install git" >&2; exit 1; }
cargo build --release -q -p ccbt
BIN=$PWD/target/release/ccbt
W=$(mktemp -d /tmp/ccbt-bench-history.XXXXXX)
cleanup() { umount -l "$W/m" 2>/dev/null || true; rm -rf "$W"; }
trap cleanup EXIT
mkdir -p "$W/src"
/usr/bin/python3 - "$W/src" <<'PY'
import os, random, sys
root = sys.argv[1]
r = random.Random(1)
for d in range(100):
    os.makedirs(f"{root}/d{d:03}", exist_ok=True)
    for f in range(100):
        with open(f"{root}/d{d:03}/f{f:03}.txt", "wb") as fh:
            fh.write(r.randbytes(r.randint(1024, 4096)))
PY
cp -a "$W/src" "$W/git"
git -C "$W/git" init -q && git -C "$W/git" config user.email b@x && git -C "$W/git" config user.name b
ID=$("$BIN" -q --data-dir "$W/A" publish "$W/src")
git -C "$W/git" add -A && git -C "$W/git" commit -qm v1
stored() { "$BIN" --json --data-dir "$W/A" cas stats | /usr/bin/python3 -c 'import json,sys; s=json.load(sys.stdin); print(s["stored_chunk_bytes"] + s["node_bytes"])'; }
cas0=$(du -sb "$W/A/cas" | cut -f1); git0=$(du -sb "$W/git/.git" | cut -f1); log0=$(stored)
edit() { # $1: tree, $2: version (deterministic edits)
    /usr/bin/python3 - "$1" "$2" <<'PY'
import os, random, sys
root, v = sys.argv[1], int(sys.argv[2])
r = random.Random(v)
for _ in range(3):
    p = f"{root}/d{r.randrange(100):03}/f{r.randrange(100):03}.txt"
    if os.path.exists(p):
        with open(p, "r+b") as fh:
            fh.seek(r.randrange(1000)); fh.write(r.randbytes(64))
p = f"{root}/d{r.randrange(100):03}/new{v}.txt"
open(p, "wb").write(r.randbytes(2048))
gone = f"{root}/d{r.randrange(100):03}/f{r.randrange(100):03}.txt"
if os.path.exists(gone):
    os.remove(gone)
PY
}
tc=0; tg=0
for v in $(seq 2 "$N"); do
    edit "$W/src" "$v"; edit "$W/git" "$v"
    a=$(date +%s.%N); "$BIN" -q --data-dir "$W/A" publish "$W/src" > /dev/null; b=$(date +%s.%N)
    git -C "$W/git" add -A && git -C "$W/git" commit -qm "v$v"; c=$(date +%s.%N)
    tc=$(echo "$tc + $b - $a" | bc -l); tg=$(echo "$tg + $c - $b" | bc -l)
done
cas1=$(du -sb "$W/A/cas" | cut -f1); git1=$(du -sb "$W/git/.git" | cut -f1); log1=$(stored)
git -C "$W/git" gc -q; git2=$(du -sb "$W/git/.git" | cut -f1)
t() { local a; a=$(date +%s.%N); "$@" > /dev/null; echo "$(date +%s.%N) - $a" | bc -l; }
LOG_COLD=$(t "$BIN" --data-dir "$W/A" log "$ID")
LOG_WARM=$(t "$BIN" --data-dir "$W/A" log "$ID")
GITLOG=$(t git -C "$W/git" log --stat)
DIFF=$(t "$BIN" --data-dir "$W/A" diff "$ID@1" "@$N")
GITDIFF=$(t git -C "$W/git" diff --stat HEAD~$((N - 1)) HEAD)
mkdir -p "$W/m"
"$BIN" --data-dir "$W/A" mount "$ID" "$W/m" --listen 127.0.0.1:0 > "$W/mount.log" 2>&1 &
for _ in $(seq 100); do mountpoint -q "$W/m" && break; sleep 0.1; done
MID=$((N / 2))
LS=$(t ls -R "$W/m/.ccbt/history/$MID/")
LS2=$(t ls -R "$W/m/.ccbt/history/$MID/")
COUNT=$(ls -R "$W/m/.ccbt/history/$MID/" | grep -c '\.txt$')
"$BIN" unmount "$W/m"
printf 'history bench: %d files, %d versions (%d files in version %d)\n' 10000 "$N" "$COUNT" "$MID"
printf 'publish+commit loop: ccbt publish %.1f s total, git add+commit %.1f s total\n' "$tc" "$tg"
printf 'ccbt log: cold %.3f s, warm %.3f s  (git log --stat %.3f s)\n' "$LOG_COLD" "$LOG_WARM" "$GITLOG"
printf 'ccbt diff @1 @%d: %.3f s  (git diff --stat %.3f s)\n' "$N" "$DIFF" "$GITDIFF"
printf 'ls -R .ccbt/history/%d: first %.3f s, again %.3f s\n' "$MID" "$LS" "$LS2"
printf 'bytes per version: ccbt store on disk %.0f (chunks + nodes %.0f), git loose %.0f, git after gc %.0f\n' \
    "$(echo "($cas1 - $cas0) / ($N - 1)" | bc -l)" "$(echo "($log1 - $log0) / ($N - 1)" | bc -l)" \
    "$(echo "($git1 - $git0) / ($N - 1)" | bc -l)" "$(echo "($git2 - $git0) / ($N - 1)" | bc -l)"
printf 'ratio ccbt/git (loose): %.2f\n' "$(echo "($cas1 - $cas0) / ($git1 - $git0)" | bc -l)"
