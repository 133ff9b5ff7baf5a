#!/usr/bin/env bash
# A two-host network with a delayed, lossy path between them, for benchmarks on a kernel without
# netem: namespaces dlA (10.77.1.2) and dlB (10.77.2.2), each joined by a veth pair to a router
# namespace dlR, where every packet between them goes through the delay line (a TUN device that
# delays and drops in userspace: target/release/delayline, from benches/delayline; benches/lib.sh
# builds it). One-way delay DELAY_MS each way: RTT = 2 x DELAY_MS.
# Nothing here can reach another machine: the namespaces have no other interface.
# usage: scripts/delaynet.sh up DELAY_MS LOSS | down
#   then: ip netns exec dlA CMD ..., ip netns exec dlB CMD ...
set -euo pipefail
cd "$(dirname "$0")/.."
case ${1:-} in
up)
  DELAY=${2:?DELAY_MS}; LOSS=${3:?LOSS}
  for n in dlR dlA dlB; do ip netns add $n; ip -n $n link set lo up; done
  for h in A B; do
    i=$([ $h = A ] && echo 1 || echo 2)
    ip link add v$h netns dl$h type veth peer name v${h}0 netns dlR
    ip -n dl$h addr add 10.77.$i.2/24 dev v$h; ip -n dl$h link set v$h up
    ip -n dl$h route add default via 10.77.$i.1
    ip -n dlR addr add 10.77.$i.1/24 dev v${h}0; ip -n dlR link set v${h}0 up
  done
  ip netns exec dlR sysctl -qw net.ipv4.ip_forward=1 net.ipv4.conf.all.rp_filter=0 \
    net.ipv4.conf.default.rp_filter=0
  # The delay line holds the TUN device open; it stops when its stdin (a FIFO kept open by the
  # sleeper below) closes, or on SIGTERM from `down`.
  mkfifo /tmp/delaynet.in
  (sleep infinity > /tmp/delaynet.in & echo $! > /tmp/delaynet.sleep)
  [ -x target/release/delayline ] || { echo "target/release/delayline missing: cargo build --release -p ccbt-delayline" >&2; exit 1; }
  ip netns exec dlR target/release/delayline dl0 "$DELAY" "$LOSS" \
    < /tmp/delaynet.in > /tmp/delaynet.out 2> /tmp/delaynet.err &
  echo $! > /tmp/delaynet.pid
  for _ in $(seq 50); do grep -q ready /tmp/delaynet.out 2>/dev/null && break; sleep 0.1; done
  grep -q ready /tmp/delaynet.out || { cat /tmp/delaynet.err; exit 1; }
  ip -n dlR link set dl0 up
  ip netns exec dlR sysctl -qw net.ipv4.conf.dl0.rp_filter=0
  # Everything arriving from the hosts goes into the delay line; what comes back out of it is
  # routed by destination as usual.
  for h in A B; do ip -n dlR rule add iif v${h}0 lookup 100; done
  ip -n dlR route add default dev dl0 table 100
  ;;
down)
  kill "$(cat /tmp/delaynet.pid 2>/dev/null)" 2>/dev/null || true
  kill "$(cat /tmp/delaynet.sleep 2>/dev/null)" 2>/dev/null || true
  sleep 0.2
  for n in dlA dlB dlR; do ip netns del $n 2>/dev/null || true; done
  cat /tmp/delaynet.err 2>/dev/null || true
  rm -f /tmp/delaynet.in /tmp/delaynet.out /tmp/delaynet.err /tmp/delaynet.pid /tmp/delaynet.sleep
  ;;
*) echo "usage: $0 up DELAY_MS LOSS | down" >&2; exit 1 ;;
esac
