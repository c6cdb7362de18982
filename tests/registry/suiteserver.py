"""Small pieces tokenserver.py and faultproxy.py share: a threaded HTTP(S) server on 127.0.0.1
and the ready file a starter waits for."""
import http.server
import os
import ssl
import sys


class ThreadingServer(http.server.ThreadingHTTPServer):
    """A thread per connection; with tls(CERT, KEY) the TLS handshake happens in the handler's
    thread on first read, so one stuck client never blocks accept()."""
    daemon_threads = True
    ssl_ctx = None

    def tls(self, cert, key):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        self.ssl_ctx = ctx

    def get_request(self):
        sock, addr = super().get_request()
        if self.ssl_ctx:
            sock = self.ssl_ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, addr

    def handle_error(self, request, client_address):
        e = sys.exc_info()[1]
        print("%s: connection from %s: %s: %s" % (type(self).__name__, client_address,
                                                 type(e).__name__, e), file=sys.stderr, flush=True)


def loopback(handler):
    """A ThreadingServer for HANDLER on 127.0.0.1, a port the kernel picks."""
    return ThreadingServer(("127.0.0.1", 0), handler)


def write_ready(path, *values):
    """Writes VALUES (one line, space separated) to PATH atomically."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(" ".join(str(v) for v in values) + "\n")
    os.rename(tmp, path)
