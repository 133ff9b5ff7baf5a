#!/usr/bin/python3
"""libtorrent (python3-libtorrent, Debian) as an independent reference for ccbt's tests.

  lt_tool.py info TORRENT                 -> JSON: hashes, piece info, files (pads flagged)
  lt_tool.py check TORRENT SAVE_PATH      -> JSON: libtorrent re-checks the data, counts valid pieces
  lt_tool.py create SRC OUT v1|v2|hybrid PIECE_BYTES  -> JSON: hashes, seconds spent hashing
  lt_tool.py seed TORRENT SAVE_PATH PORT [PEER...]    -> seeds until killed (prints "ready" JSON)
  lt_tool.py leech TORRENT SAVE_PATH PORT TIMEOUT [PEER...] -> downloads, prints JSON with seconds
  lt_tool.py magnet URI SAVE_PATH PORT TIMEOUT [PEER...]    -> metadata (BEP 9) then files, JSON

Sessions listen on 127.0.0.1 only, with DHT, LSD, UPnP and NAT-PMP off.
"""
import json, os, sys, tempfile, time
import libtorrent as lt


def hashes(ti):
    ih = ti.info_hashes()
    return (str(ih.v1) if ih.has_v1() else None, str(ih.v2) if ih.has_v2() else None)


def info(path):
    ti = lt.torrent_info(path)
    v1, v2 = hashes(ti)
    fs = ti.files()
    files = []
    for i in range(fs.num_files()):
        files.append(dict(path=fs.file_path(i), length=fs.file_size(i),
                          pad=bool(fs.file_flags(i) & lt.file_storage.flag_pad_file)))
    return dict(name=ti.name(), info_hash_v1=v1, info_hash_v2=v2, piece_length=ti.piece_length(),
                num_pieces=ti.num_pieces(), total_size=ti.total_size(), files=files,
                private=ti.priv())


def check(path, save):
    s = lt.session({'listen_interfaces': '127.0.0.1:0', 'enable_dht': False, 'enable_lsd': False,
                    'enable_upnp': False, 'enable_natpmp': False,
                    'alert_mask': lt.alert.category_t.error_notification
                    | lt.alert.category_t.status_notification | lt.alert.category_t.storage_notification})
    ti = lt.torrent_info(path)
    atp = lt.add_torrent_params()
    atp.ti = ti
    atp.save_path = save
    atp.flags &= ~lt.torrent_flags.auto_managed
    atp.flags |= lt.torrent_flags.paused
    h = s.add_torrent(atp)
    h.force_recheck()
    h.resume()
    # Done when libtorrent says the check finished (torrent_checked_alert); a partial download then
    # sits in "downloading" with no peers, so the state alone cannot tell.
    deadline = time.time() + 300
    errors, checked = [], False
    while time.time() < deadline and not checked:
        for a in s.pop_alerts():
            # A fatal disk error pauses the check for good: report it rather than wait.
            if isinstance(a, (lt.torrent_checked_alert, lt.torrent_error_alert)):
                checked = True
            if a.category() & lt.alert.category_t.error_notification:
                errors.append(a.message())
        time.sleep(0.05)
    st = h.status()
    errors += [a.message() for a in s.pop_alerts() if a.category() & lt.alert.category_t.error_notification]
    return dict(num_pieces=ti.num_pieces(), pieces_have=st.num_pieces, is_seeding=st.is_seeding,
                state=str(st.state), errors=errors)


def create(src, out, mode, piece):
    src = os.path.abspath(src)
    fs = lt.file_storage()
    lt.add_files(fs, src)
    flags = {'v1': lt.create_torrent.v1_only, 'v2': lt.create_torrent.v2_only, 'hybrid': 0}[mode]
    ct = lt.create_torrent(fs, int(piece), flags=flags)
    t0 = time.time()
    lt.set_piece_hashes(ct, os.path.dirname(src))
    dt = time.time() - t0
    with open(out, 'wb') as f:
        f.write(lt.bencode(ct.generate()))
    r = info(out)
    r['seconds'] = dt
    return r


def session(port):
    s = _session(port)
    limit = int(os.environ.get('LT_UPLOAD_LIMIT', '0') or 0)
    down = int(os.environ.get('LT_DOWNLOAD_LIMIT', '0') or 0)
    if limit or down:
        # libtorrent exempts local-network peers (all of 127/8) from rate limits by default.
        pc = s.get_peer_class(lt.session.local_peer_class_id)
        if limit:
            pc['upload_limit'] = limit
        if down:
            pc['download_limit'] = down
        s.set_peer_class(lt.session.local_peer_class_id, pc)
    return s


def _session(port):
    return lt.session({
        'listen_interfaces': f'127.0.0.1:{port}', 'listen_system_port_fallback': False,
        'outgoing_interfaces': '127.0.0.1',
        'enable_dht': False, 'enable_lsd': False, 'enable_upnp': False, 'enable_natpmp': False,
        'enable_incoming_utp': False, 'enable_outgoing_utp': False,
        'allow_multiple_connections_per_ip': True,
        'announce_to_all_trackers': True, 'announce_to_all_tiers': True,
        'alert_mask': lt.alert.category_t.error_notification | lt.alert.category_t.status_notification,
        'upload_rate_limit': int(os.environ.get('LT_UPLOAD_LIMIT', '0') or 0),
        **json.loads(os.environ.get('LT_SETTINGS', '{}')),
    })


def add(s, path, save, peers, seed_mode=False):
    atp = lt.add_torrent_params()
    atp.ti = lt.torrent_info(path)
    atp.save_path = save
    if seed_mode:
        atp.flags |= lt.torrent_flags.seed_mode
    h = s.add_torrent(atp)
    for p in peers:
        host, port = p.rsplit(':', 1)
        host = host.strip('[]')
        h.connect_peer((host, int(port)))
    return h


def seed(path, save, port, peers):
    s = session(port)
    h = add(s, path, save, peers)
    h.force_recheck()
    deadline = time.time() + 120
    while time.time() < deadline and not h.status().is_seeding:
        time.sleep(0.05)
    print(json.dumps(dict(ready=h.status().is_seeding, port=port)), flush=True)
    while True:  # until killed; re-dial peers now and then (some never dial us)
        time.sleep(1)
        for p in peers:
            host, pp = p.rsplit(':', 1)
            host = host.strip('[]')
            h.connect_peer((host, int(pp)))


def wait_seeding(h, t0, timeout, peers, on_status=lambda st: None):
    # Until the torrent is complete or the deadline; re-dial the peers every other second.
    deadline = t0 + float(timeout)
    while time.time() < deadline:
        st = h.status()
        on_status(st)
        if st.is_seeding:
            break
        if int(time.time() - t0) % 2 == 0:
            for p in peers:
                host, pp = p.rsplit(':', 1)
                host = host.strip('[]')
                h.connect_peer((host, int(pp)))
        time.sleep(0.05)
    return h.status()


def leech(path, save, port, timeout, peers):
    s = session(port)
    t0 = time.time()
    h = add(s, path, save, peers)
    st = wait_seeding(h, t0, timeout, peers)
    return dict(done=st.is_seeding, seconds=time.time() - t0, total_download=st.total_payload_download,
                peers=st.num_peers)


def magnet(uri, save, port, timeout, peers):
    # libtorrent fetches the metadata (BEP 9) from the peers, then the files.
    s = session(port)
    t0 = time.time()
    atp = lt.parse_magnet_uri(uri)
    atp.save_path = save
    h = s.add_torrent(atp)
    got_meta = []

    def meta_time(st):
        if not got_meta and st.has_metadata:
            got_meta.append(time.time() - t0)
    st = wait_seeding(h, t0, timeout, peers, meta_time)
    return dict(done=st.is_seeding, has_metadata=st.has_metadata,
                metadata_seconds=got_meta[0] if got_meta else None,
                seconds=time.time() - t0, name=st.name)


def main():
    cmd = sys.argv[1]
    if cmd == 'info':
        r = info(sys.argv[2])
    elif cmd == 'check':
        r = check(sys.argv[2], sys.argv[3])
    elif cmd == 'create':
        r = create(*sys.argv[2:6])
    elif cmd == 'seed':
        seed(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5:])
        return
    elif cmd == 'magnet':
        r = magnet(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5], sys.argv[6:])
    elif cmd == 'leech':
        r = leech(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5], sys.argv[6:])
    else:
        sys.exit(f'unknown command {cmd}')
    print(json.dumps(r))


main()
