#!/usr/bin/python3
"""A userspace netem for a kernel without sch_netem: a TUN device that holds every IP packet
routed into it for DELAY ms, drops a LOSS fraction of them (at random, seeded), and writes the
rest back into the kernel, which routes them on. `scripts/delaynet.sh` builds the namespaces
around it. Packets leave in the order they came (a fixed delay never reorders).

usage: delayline.py NAME DELAY_MS LOSS [HOSTS]   (prints "ready" once the device exists)
HOSTS: a file of "IPv4 MS" lines, each host's own link delay: a packet from S to D is held
DELAY_MS + MS(S) + MS(D) (hosts not listed add nothing), so each host sits at the end of a link
of its own length and no flow is reordered.
Stops on SIGTERM or when stdin closes. Prints packet counts at exit.
"""
import fcntl, heapq, os, random, select, signal, struct, sys, time

TUNSETIFF = 0x400454CA
IFF_TUN, IFF_NO_PI = 0x0001, 0x1000


def main():
    name, delay, loss = sys.argv[1], float(sys.argv[2]) / 1000.0, float(sys.argv[3])
    hosts = {}
    if len(sys.argv) > 4:
        for line in open(sys.argv[4]):
            ip, ms = line.split()
            hosts[bytes(int(x) for x in ip.split('.'))] = float(ms) / 1000.0
    fd = os.open('/dev/net/tun', os.O_RDWR | os.O_NONBLOCK)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack('16sH', name.encode(), IFF_TUN | IFF_NO_PI))
    print('ready', flush=True)
    rng = random.Random(1)
    held, seq = [], 0
    stats = dict(packets=0, dropped=0, sent=0)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    while not stop:
        now = time.monotonic()
        while held and held[0][0] <= now:
            _, _, pkt = heapq.heappop(held)
            try:
                os.write(fd, pkt)
                stats['sent'] += 1
            except BlockingIOError:
                stats['dropped'] += 1
        timeout = max(0.0, held[0][0] - now) if held else 0.5
        r, _, _ = select.select([fd, sys.stdin], [], [], timeout)
        if sys.stdin in r and not os.read(sys.stdin.fileno(), 4096):
            break
        if fd in r:
            now = time.monotonic()
            while True:
                try:
                    pkt = os.read(fd, 65536)
                except BlockingIOError:
                    break
                stats['packets'] += 1
                if rng.random() < loss:
                    stats['dropped'] += 1
                    continue
                seq += 1
                extra = 0.0
                if hosts and len(pkt) >= 20 and pkt[0] >> 4 == 4:
                    extra = hosts.get(pkt[12:16], 0.0) + hosts.get(pkt[16:20], 0.0)
                heapq.heappush(held, (now + delay + extra, seq, pkt))
    print(stats, file=sys.stderr, flush=True)


main()
