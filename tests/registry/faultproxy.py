#!/usr/bin/python3
"""The test suite's own fault-injecting reverse proxy, in front of a real registry.

It forwards every request to --upstream (https:// verified with --ca, or http://), keeping the
client's Host header and adding X-Forwarded-Proto, so the Location URLs the registry returns
point back at the proxy. Request bodies (Content-Length or chunked) and response bodies stream
through. With --tls-cert/--tls-key it serves HTTPS itself. It also runs a second listener, the
"blob store", that redirected blob GETs land on (see the redirect fault).

Faults come from rules: --rule JSON (repeatable) and the control file --rules FILE, which the
test may rewrite at any time (write a temp file and rename it); the proxy re-reads it when it
changes and then resets every rule's counters. The file holds a JSON list of rules, or
{"rules": [...]}. A malformed file makes every request fail with 500 and the reason.

A rule: {"fault": KIND, "path": REGEX, "method": "GET" or ["GET", "HEAD"], "skip": S,
"times": N, ...}. It matches a request whose method is listed (default: any) and whose target
(path and query) REGEX finds (re.search; default: any). The first S matching requests pass
untouched (default 0), the next N get the fault (default: every one after the skipped). The
first rule that takes a request decides. KIND:
  status        answer STATUS (default 503) without asking the upstream; "retry_after": V adds
                Retry-After: V; "body": text (default a registry-style JSON error)
  cut_response  forward; send the response headers and AFTER bytes of the body (default: half
                of Content-Length), then cut the connection
  cut_request   read AFTER bytes of the request body (default 0), then cut the connection
                without an answer; nothing reaches the upstream
  flip          forward; XOR byte OFFSET of the response body (default: the middle) with 0x01
  redirect      answer 307, Location: the blob-store listener on host HOST (default
                "localhost", so a client that came to 127.0.0.1 sees another host); that
                listener fetches the original target from the upstream with the original
                request's Authorization, like a presigned storage URL. A redirected request that
                carries an Authorization header gets 400 unless "allow_auth": true
  delay         forward after SECONDS (default 1)

Every request is one JSON line in --log: time, listener (front|store), method, target,
status (null when the connection was cut before an answer), auth (whether an Authorization
header came with it), req_bytes, resp_bytes (body bytes sent), fault (KIND or null), rule
(its index: --rule ones first, then the file's).

Usage: faultproxy.py --upstream URL [--ca FILE] [--tls-cert F --tls-key F] [--rules FILE]
       [--rule JSON]... --log FILE --ready FILE
It listens on 127.0.0.1 on ports the kernel picks and writes "PORT STORE_PORT" to --ready.
"""
import argparse
import http.client
import http.server
import json
import os
import re
import secrets
import select
import socket
import ssl
import sys
import threading
import time
import urllib.parse

sys.dont_write_bytecode = True  # no __pycache__ beside the tests
from suiteserver import loopback, write_ready

HOP = {"connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization",
       "te", "trailer", "transfer-encoding", "upgrade", "expect"}
KINDS = {"status", "cut_response", "cut_request", "flip", "redirect", "delay"}
CHUNK = 65536


def check_rule(r):
    if not isinstance(r, dict) or r.get("fault") not in KINDS:
        raise ValueError("a rule needs \"fault\" in %s: %r" % (sorted(KINDS), r))
    re.compile(r.get("path", ""))
    m = r.get("method")
    if m is not None and not isinstance(m, (str, list)):
        raise ValueError("\"method\" is a string or a list: %r" % r)
    return r


class Rules:
    """--rule rules, then the control file's; re-read when the file changes (counters reset)."""

    def __init__(self, cli, path):
        self.cli = [check_rule(json.loads(r)) for r in cli]
        self.path = path
        self.sig = None
        self.error = None
        self.lock = threading.Lock()
        self.set(list(self.cli))

    def set(self, rules):
        self.rules = rules
        self.seen = [0] * len(rules)

    def reload(self):
        if not self.path:
            return
        try:
            st = os.stat(self.path)
            sig = (st.st_ino, st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            sig = None
        if sig == self.sig:
            return
        self.sig = sig
        self.error = None
        try:
            extra = []
            if sig is not None:
                data = json.load(open(self.path))
                extra = data["rules"] if isinstance(data, dict) else data
                extra = [check_rule(r) for r in extra]
            self.set(self.cli + extra)
        except (ValueError, KeyError, TypeError, OSError, re.error) as e:
            self.error = "faultproxy: bad rules file %s: %s" % (self.path, e)
            self.set([])

    def pick(self, method, target):
        """(index, rule) of the fault for this request, or (None, None); raises on a bad file."""
        with self.lock:
            self.reload()
            if self.error:
                raise ValueError(self.error)
            for i, r in enumerate(self.rules):
                m = r.get("method")
                if m is not None and method not in ([m] if isinstance(m, str) else m):
                    continue
                if not re.search(r.get("path", ""), target):
                    continue
                self.seen[i] += 1
                n = self.seen[i] - int(r.get("skip", 0))
                if n <= 0:
                    continue
                if r.get("times") is not None and n > int(r["times"]):
                    continue
                return i, r
        return None, None


class Proxy:
    """What both listeners share."""

    def __init__(self, a):
        u = urllib.parse.urlsplit(a.upstream)
        if u.scheme not in ("http", "https") or not u.port:
            raise SystemExit("--upstream wants http(s)://HOST:PORT, not %r" % a.upstream)
        self.up_scheme, self.up_host, self.up_port = u.scheme, u.hostname, u.port
        self.up_ctx = None
        if u.scheme == "https":
            self.up_ctx = ssl.create_default_context(cafile=a.ca)
        self.front_scheme = "https" if a.tls_cert else "http"
        self.rules = Rules(a.rule or [], a.rules)
        self.log_path = a.log
        self.log_lock = threading.Lock()
        self.redirects = {}  # token -> (target, Authorization or None, allow_auth)
        self.store_port = None

    def connect(self):
        if self.up_ctx:
            return http.client.HTTPSConnection(self.up_host, self.up_port, context=self.up_ctx, timeout=120)
        return http.client.HTTPConnection(self.up_host, self.up_port, timeout=120)

    def log(self, rec):
        rec["time"] = time.time()
        with self.log_lock, open(self.log_path, "a") as f:
            f.write(json.dumps(rec, sort_keys=True) + "\n")


class Cut(Exception):
    """The connection to the client was cut on purpose."""


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "kiln-test-faultproxy"
    timeout = 300
    listener = "front"
    upconn = None

    def log_message(self, fmt, *args):  # --log is the record
        pass

    # --- request bodies -------------------------------------------------------------------------
    def body_chunks(self):
        """The request body, decoded, in pieces; counts self.req_bytes."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            while True:
                size = int(self.rfile.readline(1024).split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65536) not in (b"\r\n", b"\n", b""):
                        pass
                    return
                yield from self.read_exact(size)
                self.rfile.readline(16)
        else:
            yield from self.read_exact(int(self.headers.get("Content-Length") or 0))

    def read_exact(self, n):
        while n > 0:
            data = self.rfile.read(min(n, CHUNK))
            if not data:
                raise ConnectionError("client closed the request body early")
            n -= len(data)
            self.req_bytes += len(data)
            yield data

    # --- answers --------------------------------------------------------------------------------
    def cut(self):
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.close_connection = True
        raise Cut()

    def answer(self, status, body, headers=()):
        if isinstance(body, str):
            body = body.encode()
        self.send_response_only(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
            self.resp_bytes += len(body)
        self.status = status

    def upstream(self):
        """The kept-alive upstream connection, or a new one when the upstream closed it."""
        c = self.upconn
        if c is not None and c.sock is not None:
            r, _, _ = select.select([c.sock], [], [], 0)
            if r:  # readable while idle: closed (or garbage): start over
                c.close()
                c = None
        if c is None or c.sock is None:
            c = self.server.proxy.connect()
            self.upconn = c
        return c

    def send_upstream(self, target, headers, body):
        c = self.upstream()
        chunked = "chunked" in self.headers.get("Transfer-Encoding", "").lower()
        c.putrequest(self.command, target, skip_host=True, skip_accept_encoding=True)
        for k, v in headers:
            c.putheader(k, v)
        if chunked:
            c.putheader("Transfer-Encoding", "chunked")
        c.endheaders()
        for data in body:
            c.send(b"%x\r\n%s\r\n" % (len(data), data) if chunked else data)
        if chunked:
            c.send(b"0\r\n\r\n")
        return c.getresponse()

    def relay(self, resp, rule):
        """Sends RESP to the client, applying a cut_response or flip RULE."""
        length = resp.getheader("Content-Length")
        no_body = self.command == "HEAD" or resp.status in (204, 304)
        chunked = not no_body and length is None
        self.send_response_only(resp.status, resp.reason)
        for k, v in resp.getheaders():
            if k.lower() not in HOP:
                self.send_header(k, v)
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.status = resp.status
        kind = rule.get("fault") if rule else None
        half = int(length) // 2 if length else 0
        cut_at = int(rule.get("after", half)) if kind == "cut_response" else None
        flip_at = int(rule.get("offset", half)) if kind == "flip" else None
        if no_body:
            resp.read()
            return self.keep_upstream(resp)
        sent = 0
        while True:
            data = resp.read(CHUNK)
            if not data:
                break
            if flip_at is not None and sent <= flip_at < sent + len(data):
                b = bytearray(data)
                b[flip_at - sent] ^= 0x01
                data = bytes(b)
            if cut_at is not None and sent + len(data) >= cut_at:
                data = data[:cut_at - sent]
                self.write_body(data, chunked)
                sent += len(data)
                self.resp_bytes = sent
                self.drop_upstream()
                self.cut()
            self.write_body(data, chunked)
            sent += len(data)
            self.resp_bytes = sent
        if chunked:
            self.wfile.write(b"0\r\n\r\n")
        self.keep_upstream(resp)

    def write_body(self, data, chunked):
        if chunked and data:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        elif data:
            self.wfile.write(data)

    def keep_upstream(self, resp):
        if resp.will_close:
            self.drop_upstream()

    def drop_upstream(self):
        if self.upconn is not None:
            self.upconn.close()
            self.upconn = None

    def forward(self, target, headers, rule):
        try:
            resp = self.send_upstream(target, headers, self.body_chunks())
        except (OSError, http.client.HTTPException) as e:
            self.drop_upstream()
            self.close_connection = True
            return self.answer(502, "faultproxy: upstream: %s\n" % e)
        self.relay(resp, rule)

    # --- the listeners --------------------------------------------------------------------------
    def front(self):
        p = self.server.proxy
        headers = [(k, v) for k, v in self.headers.items() if k.lower() not in HOP]
        headers.append(("X-Forwarded-Proto", p.front_scheme))
        try:
            idx, rule = p.rules.pick(self.command, self.path)
        except ValueError as e:
            self.drain()
            return self.answer(500, str(e) + "\n")
        self.rec.update(rule=idx, fault=rule.get("fault") if rule else None)
        kind = rule.get("fault") if rule else None
        if kind == "status":
            self.drain()
            extra = [("Content-Type", "application/json")]
            if "retry_after" in rule:
                extra.append(("Retry-After", str(rule["retry_after"])))
            body = rule.get("body", json.dumps({"errors": [{"code": "UNAVAILABLE", "message":
                                                            "faultproxy: injected %s" % rule.get("status", 503)}]}))
            return self.answer(int(rule.get("status", 503)), body, extra)
        if kind == "cut_request":
            want = int(rule.get("after", 0))
            if want > 0:
                for _ in self.body_chunks():
                    if self.req_bytes >= want:
                        break
            self.cut()
        if kind == "redirect":
            self.drain()
            tok = secrets.token_hex(8)
            p.redirects[tok] = (self.path, self.headers.get("Authorization"), bool(rule.get("allow_auth")))
            loc = "%s://%s:%d/store/%s" % (p.front_scheme, rule.get("host", "localhost"), p.store_port, tok)
            return self.answer(307, "", [("Location", loc)])
        if kind == "delay":
            time.sleep(float(rule.get("seconds", 1)))
        self.forward(self.path, headers, rule)

    def store(self):
        p = self.server.proxy
        m = re.fullmatch(r"/store/([0-9a-f]+)", urllib.parse.urlsplit(self.path).path)
        entry = p.redirects.get(m.group(1)) if m else None
        if entry is None or self.command not in ("GET", "HEAD"):
            return self.answer(404, "faultproxy: no such redirect\n")
        self.rec["target"] = entry[0]
        if self.rec["auth"] and not entry[2]:
            return self.answer(400, "faultproxy: the redirected request carried an Authorization header\n")
        headers = [(k, v) for k, v in self.headers.items()
                   if k.lower() not in HOP and k.lower() not in ("host", "authorization")]
        if entry[1]:
            headers.append(("Authorization", entry[1]))
        headers.append(("Host", "%s:%d" % (p.up_host, p.up_port)))
        self.forward(entry[0], headers, None)

    def drain(self):
        for _ in self.body_chunks():
            pass

    def handle_any(self):
        self.req_bytes = self.resp_bytes = 0
        self.status = None
        self.rec = {"listener": self.listener, "method": self.command, "target": self.path,
                    "auth": "Authorization" in self.headers, "fault": None, "rule": None}
        try:
            (self.front if self.listener == "front" else self.store)()
        except Cut:
            pass
        except (OSError, ConnectionError, http.client.HTTPException) as e:
            self.rec["error"] = "%s: %s" % (type(e).__name__, e)
            self.close_connection = True
            self.drop_upstream()
        finally:
            self.rec.update(status=self.status, req_bytes=self.req_bytes, resp_bytes=self.resp_bytes)
            self.server.proxy.log(self.rec)

    do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = handle_any


class StoreHandler(Handler):
    listener = "store"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--upstream", required=True, help="http(s)://HOST:PORT of the registry")
    ap.add_argument("--ca", help="CA file to verify an https upstream")
    ap.add_argument("--tls-cert", help="serve HTTPS with this certificate")
    ap.add_argument("--tls-key")
    ap.add_argument("--rules", help="control file (JSON), re-read when it changes")
    ap.add_argument("--rule", action="append", help="a rule (JSON); repeatable")
    ap.add_argument("--log", required=True, help="JSON lines, one per request")
    ap.add_argument("--ready", required=True, help="\"PORT STORE_PORT\" is written here")
    a = ap.parse_args()
    proxy = Proxy(a)
    front, store = loopback(Handler), loopback(StoreHandler)
    front.proxy = store.proxy = proxy
    proxy.store_port = store.server_address[1]
    if a.tls_cert:
        front.tls(a.tls_cert, a.tls_key)
        store.tls(a.tls_cert, a.tls_key)
    threading.Thread(target=store.serve_forever, daemon=True).start()
    write_ready(a.ready, front.server_address[1], store.server_address[1])
    print("faultproxy: 127.0.0.1:%d (store 127.0.0.1:%d) -> %s" % (
        front.server_address[1], store.server_address[1], a.upstream), file=sys.stderr, flush=True)
    front.serve_forever()


if __name__ == "__main__":
    main()
