#!/usr/bin/python3
"""A private loopback DHT of libtorrent nodes for ccbt's DHT tests, driven over stdin/stdout.

usage: lt_dht.py --ports P0,P1,... [--bootstrap HOST:PORT] [--v6]   (one node per port)
--v6: every node listens on [::1] only, so the network is an IPv6 DHT (BEP 32).
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
    # 10.77.x.x: the benchmarks' delayed network of namespaces (scripts/delaynet.sh), which
    # reaches nothing else either.
    if not (host.startswith('127.') or host == '[::1]' or host.startswith('10.77.')):
        sys.exit(f'refusing non-loopback address {addr}')
    return addr


V6 = '--v6' in sys.argv
# LT_DHT_HOST: listen on one address of scripts/delaynet.sh's namespaces instead of loopback.
HOST = '[::1]' if V6 else loopback(os.environ.get('LT_DHT_HOST', '127.0.0.1') + ':0').rsplit(':', 1)[0]


def settings(port, boot):
    return {
        'listen_interfaces': f'{HOST}:{port}', 'listen_system_port_fallback': False,
        'outgoing_interfaces': '::1' if V6 else HOST,
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


def plain(a):
    if isinstance(a, lt.dht_stats_alert):
        return dict(k='stats', nodes=sum(b['num_nodes'] for b in a.routing_table))
    if isinstance(a, lt.dht_mutable_item_alert):
        try:
            v = item_bytes(a.item)
        except Exception:
            # The binding cannot turn a value with binary strings (a share head's root) into
            # Python; libtorrent verified it, and the signature covers it.
            v = None
        return dict(k='mutable', key=bytes(a.key), seq=a.seq, v=v, sig=bytes(a.signature),
                    authoritative=a.authoritative)
    if isinstance(a, lt.session_stats_alert):
        return dict(k='counters', values=dict(a.values))
    if isinstance(a, lt.dht_immutable_item_alert):
        try:
            v = item_bytes(a.item)
        except Exception:
            v = None
        return dict(k='immutable', target=str(a.target), v=v)
    if isinstance(a, lt.dht_put_alert):
        return dict(k='put', num_success=a.num_success)
    if isinstance(a, lt.dht_get_peers_reply_alert):
        return dict(k='peers', ih=str(a.info_hash), peers=[f'{p[0]}:{p[1]}' for p in a.peers()])
    return None


class Net:
    def __init__(self, ports, boot, settle=10):
        self.ses, self.alerts, self.seeds = [], [], []
        self.addrs = [f'{HOST}:{p}' for p in ports]
        n = len(ports)
        self.last_announce = 0
        self.seq = 0
        for i in range(n):
            b = boot if i == 0 else self.addrs[0]
            self.ses.append(lt.session(settings(ports[i], b)))
            self.alerts.append([])
            if i:
                # Sequential start: node 0 hears of node i, and hands it the earlier nodes (it is
                # a router to them, and libtorrent keeps routers out of its routing table).
                self.wait(lambda: self.table(0) >= i and self.table(i) >= min(i - 1, 8), settle)

    def pump(self):
        # An alert is only valid until the next pop_alerts: what the commands need is copied out,
        # numbered, so "new since" survives trimming the list.
        for i, s in enumerate(self.ses):
            for a in s.pop_alerts():
                d = plain(a)
                if d is not None:
                    self.seq += 1
                    d['n'] = self.seq
                    self.alerts[i].append(d)
            del self.alerts[i][:-2000]

    def since(self, i, kind, n0):
        return [a for a in self.alerts[i] if a['k'] == kind and a['n'] > n0]
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

    def of(self, i, kind):
        return [a for a in self.alerts[i] if a['k'] == kind]

    def table(self, i):
        n0 = self.seq
        self.ses[i].post_dht_stats()
        st = self.wait(lambda: self.since(i, 'stats', n0), 2)
        return st[-1]['nodes'] if st else -1

    def run(self, c):
        n = c.get('n', len(self.ses) - 1)
        s, al = self.ses[n], self.alerts[n]
        cmd = c['cmd']
        if cmd == 'dump':
            return dict(alerts=[{k: (v.hex() if isinstance(v, bytes) else v) for k, v in a.items()}
                                for a in self.alerts[n] if a['k'] != 'stats'])
        if cmd == 'nodes':
            return dict(nodes=self.table(n))
        if cmd == 'add_node':
            host, port = c['addr'].rsplit(':', 1)
            s.add_dht_node((loopback(c['addr']) and host.strip('[]'), int(port)))
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
                for a in self.of(n, 'peers'):
                    if a['ih'] == str(ih):
                        found.update(a['peers'])
                return found if c.get('want') is None or c['want'] in found else None
            if c.get('timed'):
                # One lookup, timed to its reply, with the get_peers queries it sent.
                def counter(name):
                    n0 = self.seq
                    s.post_session_stats()
                    r = self.wait(lambda: self.since(n, 'counters', n0), 5)
                    return r[-1]['values'].get(name, 0) if r else 0
                q0 = counter('dht.dht_get_peers_out')
                n0 = self.seq
                t0 = time.time()
                s.dht_get_peers(ih)
                end = t0 + c.get('timeout', 30)
                hit = None
                while time.time() < end and not hit:
                    s.wait_for_alert(100)
                    self.pump()
                    hit = [a for a in self.since(n, 'peers', n0) if a['ih'] == str(ih) and a['peers']]
                ms = (time.time() - t0) * 1000
                peers = sorted({p for a in (hit or []) for p in a['peers']})
                return dict(found=bool(hit), ms=ms, peers=peers,
                            queries=counter('dht.dht_get_peers_out') - q0)
            for _ in range(5):
                s.dht_get_peers(ih)
                if self.wait(got, 5):
                    break
            return dict(peers=sorted(found))
        if cmd == 'get_mutable':
            # Asked again until an item with at least min_seq arrives (libtorrent reports each
            # node's answer; an empty one has no item to read).
            key = bytes.fromhex(c['key'])
            salt = c.get('salt', '').encode()
            want = c.get('min_seq', 0)
            end = time.time() + c.get('timeout', 30)
            best = None
            while time.time() < end and best is None:
                al.clear()
                s.dht_get_mutable_item(key, salt)
                t_end = min(end, time.time() + 5)
                while time.time() < t_end and best is None:
                    self.pump()
                    for a in self.of(n, 'mutable'):
                        v = a['v']
                        if a['key'] != key or v in (b'', b'0:') or a['seq'] < want or a['seq'] <= 0:
                            continue
                        best = dict(found=True, seq=a['seq'], value_hex=v.hex() if v else None,
                                    signature=a['sig'].hex(), authoritative=a['authoritative'])
                    time.sleep(0.05)
            return best or dict(found=False)
        if cmd == 'put_mutable':
            priv, pub = keypair(bytes.fromhex(c['seed']))
            n0 = self.seq
            s.dht_put_mutable_item(priv, pub, c['value'], c.get('salt', '').encode())
            a = self.wait(lambda: self.since(n, 'put', n0), 20)
            return dict(put_nodes=a[-1]['num_success'] if a else 0, key=bytes(pub).hex())
        if cmd == 'get_immutable':
            # One lookup, timed, with the get queries it sent (libtorrent's counters).
            def counter(name):
                n0 = self.seq
                s.post_session_stats()
                c = self.wait(lambda: self.since(n, 'counters', n0), 5)
                return c[-1]['values'].get(name, 0) if c else 0
            q0 = counter('dht.dht_get_out')
            target = lt.sha1_hash(bytes.fromhex(c['target']))
            n0 = self.seq
            t0 = time.time()
            s.dht_get_immutable_item(target)
            # Timed to the alert: wait_for_alert returns as soon as one is posted.
            end = t0 + c.get('timeout', 30)
            got = None
            while time.time() < end and not got:
                s.wait_for_alert(100)
                self.pump()
                got = [a for a in self.since(n, 'immutable', n0) if a['target'] == str(target)]
            ms = (time.time() - t0) * 1000
            found = bool(got) and got[-1]['v'] not in (None, b'', b'0:')
            return dict(found=found, ms=ms, queries=counter('dht.dht_get_out') - q0)
        if cmd == 'put_immutable':
            n0 = self.seq
            target = s.dht_put_immutable_item(c['value'])
            a = self.wait(lambda: self.since(n, 'put', n0), 20)
            return dict(target=str(target), put_nodes=a[-1]['num_success'] if a else 0)
        return dict(error=f'unknown command {cmd}')


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--ports', required=True)
    ap.add_argument('--bootstrap', default='')
    ap.add_argument('--settle', type=float, default=10, help='seconds to wait for each node to join')
    ap.add_argument('--v6', action='store_true', help='an IPv6 DHT on [::1]')
    a = ap.parse_args()
    if a.bootstrap:
        loopback(a.bootstrap)
    ports = [int(p) for p in a.ports.split(',')]
    net = Net(ports, a.bootstrap, a.settle)
    # Sequential start: node 0 hands the earlier nodes to the later ones.
    print(json.dumps(dict(ready=True, nodes=net.addrs, tables=[net.table(i) for i in range(len(ports))])),
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
