#!/usr/bin/python3
"""A BEP 17 (Hoffman-style) HTTP seed script for tests: serves the pieces of one torrent's files
from disk by `?info_hash=..&piece=N[&ranges=a-b,...]`. The 1st and the 20th request get 503
with a 1-second wait (the busy answer clients must honour); a wrong info_hash gets 404.

usage: bep17_seed.py PORT INFO_HASH_HEX PIECE_LENGTH ROOT FILES_JSON
FILES_JSON: [[relative path, length], ...] in torrent order (v1, no pad files).
"""
import http.server, json, os, sys, urllib.parse

port, ih_hex, plen, root, files_json = sys.argv[1:6]
plen = int(plen)
files = json.loads(files_json)
total = sum(l for _, l in files)
count = [0]


def read(start, end):
    out, off = b"", 0
    for path, length in files:
        a, b = max(start, off), min(end, off + length)
        if a < b:
            with open(os.path.join(root, path), "rb") as f:
                f.seek(a - off)
                out += f.read(b - a)
        off += length
    return out


class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        q = urllib.parse.urlparse(self.path).query
        # parse_qs decodes %XX to text; the hash needs bytes.
        params = dict(p.split("=", 1) for p in q.split("&") if "=" in p)
        ih = urllib.parse.unquote_to_bytes(params.get("info_hash", ""))
        if ih.hex() != ih_hex:
            return self.answer(404, b"unknown torrent")
        piece = int(params["piece"])
        count[0] += 1
        if count[0] in (1, 20):
            return self.answer(503, b"1")
        base = piece * plen
        plast = min(base + plen, total)
        ranges = [(0, plast - base)]
        if "ranges" in params:
            ranges = []
            for r in urllib.parse.unquote(params["ranges"]).split(","):
                a, b = r.split("-")
                ranges.append((int(a), int(b) + 1))
        body = b"".join(read(base + a, base + b) for a, b in ranges)
        self.answer(200, body)

    def answer(self, code, body):
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


http.server.ThreadingHTTPServer(("127.0.0.1", int(port)), H).serve_forever()
