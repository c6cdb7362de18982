#!/usr/bin/env bash
# The network of RUN steps (issue 8, item 14). By default a step gets a private network
# namespace that pasta connects to the outside: outbound connections and DNS work, but a service
# listening only on the host's loopback and an abstract unix socket of the host are out of
# reach, by 127.0.0.1, by the gateway address or by pasta's DNS address. `--network host` (and
# `RUN --network=host`) reaches both, which proves the probes can fail; `--network none` reaches
# nothing. No pasta outlives a build, not even one whose kiln was killed with SIGKILL. When
# pasta cannot start, the build says why in one warning line and uses the host network.
. "$(dirname "$0")/lib.sh"
require_userns

if ! pasta_bin=$(command -v pasta); then
	skip "private network" "pasta is not installed (Debian package passt)"
	finish
fi
if ! kiln doctor >"$T/doctor.txt" 2>&1 || ! grep -q '^ok   network:' "$T/doctor.txt"; then
	cp "$T/doctor.txt" "$OUT"
	skip "private network" "kiln doctor: $(grep -A1 ' network:' "$T/doctor.txt" | tr '\n' ' ')"
	finish
fi
load_busybox

token=kiln-net-$$-$RANDOM
# This file's pasta processes are the ones started by this path (kiln passes it as argv[0]).
mkdir "$T/bin"
ln -s "$pasta_bin" "$T/bin/pasta"
export KILN_PASTA=$T/bin/pasta
ours() { pgrep -f -- "^$T/bin/pasta " || true; }
# An output line of a step (not its header, which quotes the Dockerfile).
says() { printf '^#[0-9]+ [0-9.]+ %s$' "$1"; }

# --- the host's loopback-only services ------------------------------------------------------
python3 - "$T/ports" "$token" >"$T/server.log" 2>&1 <<'PY' &
import http.server, os, socket, sys, threading
token = sys.argv[2].encode()
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", str(len(token)))
        self.end_headers()
        self.wfile.write(token)
    def log_message(self, *a):
        pass
web = http.server.HTTPServer(("127.0.0.1", 0), H)
unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
unix.bind(b"\0" + token)
unix.listen(8)
def answer():
    while True:
        c, _ = unix.accept()
        c.sendall(token)
        c.close()
threading.Thread(target=answer, daemon=True).start()
with open(sys.argv[1] + ".tmp", "w") as f:
    f.write("%d\n" % web.server_address[1])
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
web.serve_forever()
PY
server=$!
trap 'kill $server 2>/dev/null; _cleanup' EXIT
for _ in $(seq 50); do [ -s "$T/ports" ] && break; sleep 0.1; done
port=$(cat "$T/ports" 2>/dev/null)
check "the host's loopback web server answers on the host" \
	sh -c "python3 -c 'import urllib.request,sys; sys.exit(0 if urllib.request.urlopen(\"http://127.0.0.1:$port/\", timeout=5).read() == b\"$token\" else 1)'"

# A static client for abstract unix sockets (busybox has none).
c=$(newdir ctx)
cat >"$T/ac.c" <<'C'
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
int main(int argc, char **argv)
{
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	size_t n = strlen(argv[1]);
	char buf[128];
	int s = socket(AF_UNIX, SOCK_STREAM, 0);
	ssize_t k;

	memcpy(a.sun_path + 1, argv[1], n);
	if (connect(s, (struct sockaddr *)&a, sizeof(sa_family_t) + 1 + n) < 0)
		return 1;
	k = read(s, buf, sizeof(buf) - 1);
	if (k > 0)
		printf("%.*s\n", (int)k, buf);
	return 0;
}
C
check "build a static abstract-socket client" gcc -static -O2 -o "$c/abstract-connect" "$T/ac.c"
check "the host's abstract socket answers on the host" sh -c "'$c/abstract-connect' '$token' | grep -qx '$token'"

# One probe step: what it reaches, one word each.
cat >"$c/Dockerfile" <<'DF'
FROM busybox
COPY abstract-connect /usr/local/bin/
ARG PORT
ARG TOKEN
RUN gw=$(ip route | awk '/^default/ { print $3; exit }'); \
    self=$(ip -4 -o addr show scope global | awk '{ split($4, a, "/"); print a[1]; exit }'); \
    for a in 127.0.0.1 $gw $self 169.254.1.1; do \
      if timeout 2 wget -q -O - "http://$a:$PORT/" 2>/dev/null | grep -q "$TOKEN"; then r=reached; else r=blocked; fi; \
      echo "probe-loopback-$r-via-$a"; \
    done; \
    if abstract-connect "$TOKEN" 2>/dev/null | grep -q "$TOKEN"; then r=reached; else r=blocked; fi; \
    echo "probe-abstract-$r"; \
    echo "probe-gateway-$gw"; \
    echo "probe-resolv-$(awk '/^nameserver/ { print $2; exit }' /etc/resolv.conf)"
DF
probe() { # LOG [kiln build options...]
	local log=$1
	shift
	check "build: $*" kiln build --no-cache --progress plain --build-arg PORT="$port" \
		--build-arg TOKEN="$token" "$@" "$c" && cp "$OUT" "$log"
}

probe "$T/default.log"
check_nogrep "default: no fallback warning" "host network" "$T/default.log"
check_grep "default: host loopback blocked via 127.0.0.1" "$(says probe-loopback-blocked-via-127.0.0.1)" "$T/default.log"
check_nogrep "default: host loopback blocked via every address" "probe-loopback-reached" "$T/default.log"
check_grep "default: the gateway address was probed" "$(says "probe-gateway-[0-9a-f.:]+")" "$T/default.log"
check_grep "default: abstract unix socket blocked" "$(says probe-abstract-blocked)" "$T/default.log"
check_grep "default: resolv.conf points at pasta's DNS" "$(says probe-resolv-169.254.1.1)" "$T/default.log"

probe "$T/host.log" --network host
check_grep "--network host: host loopback reached (the probe can fail)" "$(says probe-loopback-reached-via-127.0.0.1)" "$T/host.log"
check_grep "--network host: abstract unix socket reached" "$(says probe-abstract-reached)" "$T/host.log"

probe "$T/none.log" --network none
check_nogrep "--network none: nothing reached" "probe-[a-z-]*reached" "$T/none.log"
check_grep "--network none: probes ran" "$(says probe-abstract-blocked)" "$T/none.log"

probe "$T/default2.log" --network default
check_grep "--network default: private" "$(says probe-abstract-blocked)" "$T/default2.log"

# RUN --network= per step over the build's default.
sed -i 's/^RUN gw=/RUN --network=host gw=/' "$c/Dockerfile"
probe "$T/run-host.log"
check_grep "RUN --network=host: host loopback reached" "$(says probe-loopback-reached-via-127.0.0.1)" "$T/run-host.log"
sed -i 's/^RUN --network=host gw=/RUN --network=default gw=/' "$c/Dockerfile"
probe "$T/run-default.log" --network none
check_nogrep "RUN --network=default in a --network none build: none" "probe-[a-z-]*reached" "$T/run-default.log"
check_grep "RUN --network=default in a --network none build: ran" "$(says probe-abstract-blocked)" "$T/run-default.log"
sed -i 's/^RUN --network=default gw=/RUN --network=bogus gw=/' "$c/Dockerfile"
check_fail "RUN --network=bogus is a Dockerfile error" 1 "Dockerfile:5: RUN --network=bogus" \
	kiln build --progress plain "$c"
check_fail "--network bogus is a usage error" 2 "--network takes default, host or none" \
	kiln build --network bogus "$c"
check_eq "no pasta left after the builds" "$(ours)" ""

# --- outbound: the Debian mirror, by name -----------------------------------------------------
o=$(newdir out)
cat >"$o/Dockerfile" <<'DF'
FROM busybox
RUN timeout 60 wget -q -O /dev/null http://deb.debian.org/debian/dists/bookworm/Release && echo outbound-ok
RUN nslookup deb.debian.org 2>&1 | grep -q '^Address' && echo dns-ok
DF
if python3 -c 'import urllib.request; urllib.request.urlopen("http://deb.debian.org/debian/dists/bookworm/Release", timeout=20).read()' >/dev/null 2>&1; then
	if check "default network: fetch from deb.debian.org" kiln build --no-cache --progress plain "$o"; then
		check_grep "default network: outbound HTTP by name works" "$(says outbound-ok)" "$OUT"
		check_grep "default network: DNS answers through pasta" "$(says dns-ok)" "$OUT"
	fi
	check_fail "--network none: no outbound" 1 "exit code" \
		kiln build --no-cache --progress plain --network none "$o"
	check_nogrep "--network none: the fetch did not succeed" "$(says outbound-ok)"
else
	skip "default network: fetch from deb.debian.org" "this host cannot reach http://deb.debian.org itself"
fi

# --- SIGKILL of kiln mid-step: pasta and the step go with it ---------------------------------
k=$(newdir kill)
cat >"$k/Dockerfile" <<DF
FROM busybox
RUN echo started-$token; sleep 120
DF
"$KILN" build --no-cache --progress plain "$k" >"$T/kill.log" 2>&1 &
kpid=$!
for _ in $(seq 300); do grep -Eq "$(says "started-$token")" "$T/kill.log" && break; sleep 0.1; done
check_grep "the step to be killed is running" "$(says "started-$token")" "$T/kill.log"
check "its pasta runs while the step does" test -n "$(ours)"
{
	kill -KILL "$kpid"
	wait "$kpid"
} 2>/dev/null
for _ in $(seq 100); do [ -z "$(ours)" ] && ! pgrep -f "started-$token" >/dev/null && break; sleep 0.1; done
check_eq "SIGKILL of kiln: no pasta left" "$(ours)" ""
check_eq "SIGKILL of kiln: the step's processes are gone" "$(pgrep -f "started-$token")" ""

# --- pasta cannot start: one warning line, then the host network ------------------------------
sed -i 's/^RUN --network=bogus gw=/RUN gw=/' "$c/Dockerfile"
KILN_PASTA=/bin/false
probe "$T/fallback.log"
KILN_PASTA=$T/bin/pasta
check_eq "fallback: one warning line" \
	"$(grep -c '^warning: RUN steps use the host network (private network unavailable: pasta: ' "$T/fallback.log")" 1
check_grep "fallback: the host network is used" "$(says probe-loopback-reached-via-127.0.0.1)" "$T/fallback.log"

finish
