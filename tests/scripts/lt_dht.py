#!/usr/bin/python3
"""A private loopback DHT of libtorrent nodes for ccbt's DHT tests, driven over stdin/stdout.

usage: lt_dht.py --nodes N --base-port P [--bootstrap HOST:PORT]
Node 0 starts the network (or joins --bootstrap); nodes 1.. bootstrap from node 0. Prints one JSON
line {"ready": true, "nodes": [...]} once every routing table is filled, then answers one JSON
line per command line read from stdin, for example
  {"cmd": "seed", "n": 1, "torrent": T, "save": D}        seed T, announced only on the DHT
  {"cmd": "magnet", "n": 3, "uri": M, "save": D}           download a magnet (DHT peers only)
  {"cmd": "get_mutable", "n": 3, "key": HEX, "salt": S}    BEP 44 get (libtorrent verifies)
  {"cmd": "put_mutable", "n": 1, "seed": HEX, "value": V, "salt": S}
  {"cmd": "put_immutable", "n": 1, "value": V}             (V: a string)
  {"cmd": "get_peers", "n": 3, "ih": HEX}
  {"cmd": "add_node", "n": 0, "addr": "127.0.0.1:PORT"}    tell a node about another
Every wait is bounded; nothing leaves 127.0.0.0/8 (all discovery but the DHT is off, and the DHT
bootstraps only from loopback)."""
import argparse, hashlib, json, os, select, sys, time
import libtorrent as lt

TIMEOUT = 60


def loopback(addr):
    host = addr.rsplit(':', 1)[0]
    if not host.startswith('127.'):
        sys.exit(f'refusing non-loopback address {addr}')
    return addr


def settings(port, boot):
    return {
        'listen_interfaces': f'127.0.0.1:{port}', 'listen_system_port_fallback': False,
        'outgoing_interfaces': '127.0.0.1',
        'enable_dht': True, 'dht_bootstrap_nodes': boot,
        'enable_lsd': False, 'enable_upnp': False, 'enable_natpmp': False,
        'enable_incoming_utp': False, 'enable_outgoing_utp': False,
        # Every node shares 127.0.0.0/8: libtorrent's per-IP limits would keep one node.
        'dht_restrict_routing_ips': False, 'dht_restrict_search_ips': False,
        'dht_ignore_dark_internet': False, 'dht_prefer_verified_node_ids': False,
        'dht_enforce_node_id': False, 'dht_block_ratelimit': 100000,
        'dht_upload_rate_limit': 1 << 20, 'dht_aggressive_lookups': True,
        'allow_multiple_connections_per_ip': True,
        'alert_mask': lt.alert.category_t.error_notification | lt.alert.category_t.status_notification
        | lt.alert.category_t.dht_notification | lt.alert.category_t.dht_operation_notification
        | lt.alert.category_t.peer_notification,
    }


def keypair(seed32):
    """libtorrent's ed25519 (orlp) key format from a 32-byte seed: the secret is the clamped
    SHA-512 of the seed (64 bytes), the public key the usual 32 bytes."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives import serialization
    h = bytearray(hashlib.sha512(seed32).digest())
    h[0] &= 248
    h[31] &= 63
    h[31] |= 64
    pub = Ed25519PrivateKey.from_private_bytes(seed32).public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return bytes(h), pub


def item_bytes(x):
    return lt.bencode(x)


class Net:
    def __init__(self, n, base, boot):
        self.ses, self.alerts, self.seeds = [], [], []
        self.addrs = [f'127.0.0.1:{base + i}' for i in range(n)]
        self.last_announce = 0
        for i in range(n):
            b = boot if i == 0 else self.addrs[0]
            self.ses.append(lt.session(settings(base + i, b)))
            self.alerts.append([])
            if i:
                # Sequential start: node 0 hears of node i, and hands it the earlier nodes (it is
                # a router to them, and libtorrent keeps routers out of its routing table).
                self.wait(lambda: self.table(0) >= i and self.table(i) >= i - 1, 10)

    def pump(self):
        for i, s in enumerate(self.ses):
            self.alerts[i].extend(s.pop_alerts())
            del self.alerts[i][:-2000]
        if time.time() - self.last_announce > 5:
            self.last_announce = time.time()
            for h in self.seeds:
                h.force_dht_announce()

    def wait(self, pred, t=TIMEOUT):
        end = time.time() + t
        while time.time() < end:
            self.pump()
            v = pred()
            if v:
                return v
            time.sleep(0.05)
        return None

    def table(self, i):
        n0 = sum(1 for a in self.alerts[i] if isinstance(a, lt.dht_stats_alert))
        self.ses[i].post_dht_stats()
        st = self.wait(lambda: [a for a in self.alerts[i] if isinstance(a, lt.dht_stats_alert)][n0:], 2)
        return sum(b['num_nodes'] for b in st[-1].routing_table) if st else -1

    def run(self, c):
        n = c.get('n', len(self.ses) - 1)
        s, al = self.ses[n], self.alerts[n]
        cmd = c['cmd']
        if cmd == 'nodes':
            return dict(nodes=self.table(n))
        if cmd == 'add_node':
            host, port = c['addr'].rsplit(':', 1)
            s.add_dht_node((loopback(c['addr']) and host, int(port)))
            return dict(ok=True)
        if cmd == 'seed':
            atp = lt.add_torrent_params()
            atp.ti = lt.torrent_info(c['torrent'])
            atp.save_path = c['save']
            atp.flags |= lt.torrent_flags.seed_mode
            atp.flags &= ~(lt.torrent_flags.auto_managed | lt.torrent_flags.paused)
            h = s.add_torrent(atp)
            self.seeds.append(h)
            ok = self.wait(lambda: h.status().is_seeding, 30)
            h.force_dht_announce()
            ih = h.torrent_file().info_hashes()
            return dict(ok=bool(ok), v1=str(ih.v1) if ih.has_v1() else None,
                        v2=str(ih.v2) if ih.has_v2() else None)
        if cmd == 'magnet':
            atp = lt.parse_magnet_uri(c['uri'])
            atp.save_path = c['save']
            atp.flags &= ~(lt.torrent_flags.auto_managed | lt.torrent_flags.paused)
            t0 = time.time()
            h = s.add_torrent(atp)
            done = self.wait(lambda: h.status().has_metadata and h.status().is_seeding, c.get('timeout', TIMEOUT))
            peers = [f'{p.ip[0]}:{p.ip[1]}' for p in h.get_peer_info()]
            return dict(done=bool(done), seconds=time.time() - t0, peers=peers)
        if cmd == 'get_peers':
            ih = lt.sha1_hash(bytes.fromhex(c['ih']))
            found = set()

            def got():
                for a in al:
                    if isinstance(a, lt.dht_get_peers_reply_alert) and a.info_hash == ih:
                        found.update(f'{p[0]}:{p[1]}' for p in a.peers())
                return found if c.get('want') is None or c['want'] in found else None
            for _ in range(5):
                s.dht_get_peers(ih)
                if self.wait(got, 5):
                    break
            return dict(peers=sorted(found))
        if cmd == 'get_mutable':
            key = bytes.fromhex(c['key'])
            salt = c.get('salt', '').encode()
            al.clear()
            s.dht_get_mutable_item(key, salt)
            want = c.get('min_seq', 0)

            def got():
                xs = [a for a in al if isinstance(a, lt.dht_mutable_item_alert) and bytes(a.key) == key]
                best = max(xs, key=lambda a: a.seq, default=None)
                if best is not None and (best.authoritative or best.seq >= want) and best.seq >= want:
                    return best
                return None
            a = self.wait(got, c.get('timeout', 20))
            if a is None:
                xs = [x for x in al if isinstance(x, lt.dht_mutable_item_alert) and bytes(x.key) == key]
                a = max(xs, key=lambda x: x.seq, default=None)
            if a is None:
                return dict(found=False)
            return dict(found=True, seq=a.seq, value_hex=item_bytes(a.item).hex(),
                        signature=bytes(a.signature).hex(), authoritative=a.authoritative)
        if cmd == 'put_mutable':
            priv, pub = keypair(bytes.fromhex(c['seed']))
            n0 = sum(1 for a in al if isinstance(a, lt.dht_put_alert))
            s.dht_put_mutable_item(priv, pub, c['value'], c.get('salt', '').encode())
            a = self.wait(lambda: [x for x in al if isinstance(x, lt.dht_put_alert)][n0:], 20)
            return dict(put_nodes=a[-1].num_success if a else 0, key=bytes(pub).hex())
        if cmd == 'put_immutable':
            n0 = sum(1 for a in al if isinstance(a, lt.dht_put_alert))
            target = s.dht_put_immutable_item(c['value'])
            a = self.wait(lambda: [x for x in al if isinstance(x, lt.dht_put_alert)][n0:], 20)
            return dict(target=str(target), put_nodes=a[-1].num_success if a else 0)
        return dict(error=f'unknown command {cmd}')


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--nodes', type=int, default=4)
    ap.add_argument('--base-port', type=int, required=True)
    ap.add_argument('--bootstrap', default='')
    a = ap.parse_args()
    if a.bootstrap:
        loopback(a.bootstrap)
    net = Net(a.nodes, a.base_port, a.bootstrap)
    # Sequential start: node 0 hands the earlier nodes to the later ones.
    print(json.dumps(dict(ready=True, nodes=net.addrs, tables=[net.table(i) for i in range(a.nodes)])),
          flush=True)
    buf = b''
    while True:
        r, _, _ = select.select([sys.stdin], [], [], 0.1)
        net.pump()
        if not r:
            continue
        chunk = os.read(sys.stdin.fileno(), 65536)
        if not chunk:
            break
        buf += chunk
        while b'\n' in buf:
            line, buf = buf.split(b'\n', 1)
            if line.strip():
                try:
                    out = net.run(json.loads(line))
                except Exception as e:   # a test sees the error instead of a hang
                    out = dict(error=repr(e))
                print(json.dumps(out), flush=True)


main()
