#!/usr/bin/python3
"""The test suite's own token server: the Docker registry token protocol (the bearer flow of
Docker Hub and GHCR) in front of docker-registry's `auth: token`.

GET /token?service=SERVICE&scope=repository:NAME:pull,push[&scope=...] with no credentials
(anonymous) or HTTP Basic credentials answers {"token", "access_token", "expires_in",
"issued_at"}: a JWT signed with the configured key (ES256 or RS256). The header's `kid` is the
libtrust fingerprint of the signing key, which distribution 2.8 looks up among the keys of its
`rootcertbundle`. The claims are those distribution verifies: iss, sub, aud (= the service),
exp, nbf, iat, jti and access [{type, name, actions}], with only the actions the policy grants
(a scope nothing is granted for is left out, as the spec says). Wrong credentials: 401. A wrong
or missing service: 400. POST (the OAuth2 form) answers 404, which Docker clients take as "use
GET".

Every request is one JSON line in the --log file: time, user, auth (none|basic|bad), status,
scopes requested, access granted. Passwords and tokens are never logged.

Usage: tokenserver.py --config FILE --ready FILE --log FILE   (start.sh runs it)
Config (JSON): service, issuer, alg, expires_in, key, cert (signing key and its certificate),
tls_cert, tls_key (HTTPS; plain HTTP when absent), users {name: password}, policy {user ("" for
anonymous): [[type, name glob, [actions]], ...]}: the first entry matching a scope decides.
It listens on 127.0.0.1, port 0, and writes the port to --ready once it listens.
"""
import argparse
import base64
import datetime
import fnmatch
import hashlib
import hmac
import http.server
import json
import secrets
import sys
import threading
import time
import urllib.parse

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization

sys.dont_write_bytecode = True  # no __pycache__ beside the tests
from suiteserver import loopback, write_ready


def libtrust_kid(cert_pem):
    """libtrust's key id: base32 of the first 30 bytes of sha256(DER SubjectPublicKeyInfo), in
    groups of four separated by ':' (what distribution's token auth puts in its trusted keys)."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    der = cert.public_key().public_bytes(serialization.Encoding.DER,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)
    b32 = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode().rstrip("=")
    return ":".join(b32[i:i + 4] for i in range(0, len(b32), 4))


def parse_scopes(values):
    """[(type, name, [actions])] from scope parameters; one parameter may hold several scopes
    separated by spaces. NAME may itself contain ':' (type:name:actions splits at the ends)."""
    out = []
    for v in values:
        for s in v.split():
            typ, sep, rest = s.partition(":")
            name, sep2, actions = rest.rpartition(":")
            if not sep or not sep2 or not name:
                raise ValueError("malformed scope %r" % s)
            out.append((typ, name, [a for a in actions.split(",") if a]))
    return out


class Server:
    def __init__(self, cfg, log_path):
        self.cfg = cfg
        self.key = open(cfg["key"], "rb").read()
        self.kid = libtrust_kid(open(cfg["cert"], "rb").read())
        self.log_path = log_path
        self.lock = threading.Lock()

    def log(self, rec):
        rec["time"] = time.time()
        with self.lock, open(self.log_path, "a") as f:
            f.write(json.dumps(rec, sort_keys=True) + "\n")

    def authenticate(self, header):
        """(user, how): user "" is anonymous; how is none, basic or bad."""
        if not header:
            return "", "none"
        scheme, _, cred = header.partition(" ")
        if scheme.lower() != "basic":
            return None, "bad"
        try:
            user, _, password = base64.b64decode(cred.strip(), validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return None, "bad"
        want = self.cfg["users"].get(user)
        if want is None or not hmac.compare_digest(want.encode(), password.encode()):
            return None, "bad"
        return user, "basic"

    def grant(self, user, typ, name, actions):
        for rtyp, glob, allowed in self.cfg["policy"].get(user, []):
            if rtyp == typ and fnmatch.fnmatchcase(name, glob):
                if "*" in allowed:
                    return list(actions)
                return [a for a in actions if a in allowed]
        return []

    def token(self, user, access):
        now = int(time.time())
        claims = {"iss": self.cfg["issuer"], "sub": user, "aud": self.cfg["service"],
                  "exp": now + int(self.cfg["expires_in"]), "nbf": now - 1, "iat": now,
                  "jti": secrets.token_hex(16), "access": access}
        return jwt.encode(claims, self.key, algorithm=self.cfg["alg"],
                          headers={"kid": self.kid, "typ": "JWT"})


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "kiln-test-tokenserver"

    def log_message(self, fmt, *args):  # the JSON log is the record; keep stderr quiet
        pass

    def reply(self, status, obj, extra=()):
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(n)
        self.server.ts.log({"method": "POST", "path": self.path, "status": 404})
        self.reply(404, {"error": "use GET (the Docker token protocol)"})

    def do_GET(self):
        ts = self.server.ts
        url = urllib.parse.urlsplit(self.path)
        q = urllib.parse.parse_qs(url.query, keep_blank_values=True)
        rec = {"method": "GET", "path": url.path, "service": q.get("service", [None])[0],
               "scopes": q.get("scope", []), "account": q.get("account", [None])[0]}
        if url.path != "/token":
            rec["status"] = 404
            ts.log(rec)
            return self.reply(404, {"error": "not found"})
        user, how = ts.authenticate(self.headers.get("Authorization"))
        rec.update(user=user, auth=how)
        if user is None:
            rec["status"] = 401
            ts.log(rec)
            return self.reply(401, {"details": "incorrect username or password"},
                              [("WWW-Authenticate", 'Basic realm="kiln-test-token"')])
        if rec["service"] != ts.cfg["service"]:
            rec["status"] = 400
            ts.log(rec)
            return self.reply(400, {"details": "unknown or missing service %r" % rec["service"]})
        try:
            scopes = parse_scopes(rec["scopes"])
        except ValueError as e:
            rec["status"] = 400
            ts.log(rec)
            return self.reply(400, {"details": str(e)})
        access = []
        for typ, name, actions in scopes:
            granted = ts.grant(user, typ, name, actions)
            if granted:
                access.append({"type": typ, "name": name, "actions": granted})
        tok = ts.token(user, access)
        rec.update(status=200, granted=access)
        ts.log(rec)
        issued = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        self.reply(200, {"token": tok, "access_token": tok,
                         "expires_in": int(ts.cfg["expires_in"]), "issued_at": issued})


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--ready", required=True, help="file the port is written to once listening")
    ap.add_argument("--log", required=True, help="JSON lines, one per request")
    a = ap.parse_args()
    cfg = json.load(open(a.config))
    srv = loopback(Handler)
    srv.ts = Server(cfg, a.log)
    if cfg.get("tls_cert"):
        srv.tls(cfg["tls_cert"], cfg["tls_key"])
    write_ready(a.ready, srv.server_address[1])
    print("tokenserver: listening on 127.0.0.1:%d, kid %s" % (srv.server_address[1], srv.ts.kid),
          file=sys.stderr, flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
