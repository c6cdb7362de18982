#!/usr/bin/env bash
# Starts the registries the registry tests and bench/push.sh use, all on 127.0.0.1, and writes
# DIR/env for the tests to source. Real servers only: Debian's docker-registry (the CNCF
# distribution server, 2.8) and the suite's own token server (tokenserver.py).
#
# Usage: tests/registry/start.sh DIR        (run it; do not source it)
#        . DIR/env                           (then use the variables below)
#        tests/registry/stop.sh DIR          (stops every process started for DIR)
#
# Instances (REG_INSTANCES, default "tls1 tls2 token plain"; any subset, in any order):
#   tls1, tls2  HTTPS with a server certificate signed by the CA this script makes, htpasswd
#               (bcrypt) auth for $REG_USER / $REG_PASSWORD
#   token       HTTPS + `auth: token`: bearer tokens from tokenserver.py (realm $REG_TOKEN_REALM),
#               JWTs signed with a key whose certificate is the registry's rootcertbundle.
#               Policy: anonymous may pull public/*; $REG_USER may pull and push everything
#               (incl. private/*) and read the catalog; $REG_READER may pull everything but
#               private/*; a wrong password is 401
#   plain       plain HTTP, no auth
# Nothing listens on a fixed port: each server binds port 0 and reports the port it got. Startup
# waits until every server answers /v2/ (200 or 401) and fails naming the server's log if one
# does not within REG_START_TIMEOUT seconds (default 30).
#
# DIR/env sets (NAME is TLS1, TLS2, TOKEN or PLAIN; only started instances appear):
#   REG_DIR, REG_TOOLS (this directory: faultproxy.py, proxy.sh, accesslog.sh, the credential
#   helper docker-credential-kilntest), REG_INSTANCES
#   REG_CA               the CA certificate (PEM) every TLS server here chains to
#   REG_CERT_DIR         a directory holding only ca.crt (skopeo --cert-dir, a certs.d/HOST/ dir)
#   REG_SERVER_CERT, REG_SERVER_KEY  the servers' certificate and key; SANs IP:127.0.0.1, IP:::1,
#                        DNS:localhost, DNS:$REG_TLS_NAME (registry.test, resolvable only through
#                        curl --resolve or a test's own mapping)
#   REG_USER, REG_PASSWORD          htpasswd user of tls1/tls2, push user of token
#   REG_READER, REG_READER_PASSWORD  token: pull-only user, no access to private/*
#   REG_NAME_HOST        127.0.0.1:PORT        REG_NAME_PORT, REG_NAME_URL (https:// or http://)
#   REG_NAME_ACCESS_LOG  the registry's access log (combined format, one request a line;
#                        accesslog.sh counts blob uploads, mounts and manifest PUTs in it)
#   REG_NAME_LOG         the registry's own log     REG_NAME_PID, REG_NAME_DATA (storage root),
#   REG_NAME_CONFIG      its config.yml
#   REG_TOKEN_REALM (https://127.0.0.1:PORT/token: the token server has its own port, with the
#   same certificate), REG_TOKEN_SERVICE, REG_TOKEN_ISSUER, REG_TOKEN_SERVER_HOST,
#   REG_TOKEN_SERVER_PID, REG_TOKEN_SERVER_LOG, REG_TOKEN_REQUESTS (JSON lines, one per token
#   request: user, auth none|basic|bad, status, requested scopes, granted access; never a
#   password or a token: count token fetches with it)
# The TLS registries offer HTTP/2 (Go's server); proxy.sh's fault proxies speak HTTP/1.1.
#
# Environment: REG_INSTANCES; REG_TOKEN_ALG (ES256, the default, or RS256); REG_TOKEN_EXPIRES
# (token lifetime in seconds, default 300); REG_START_TIMEOUT; REG_WATCH_PID (default: the
# calling process): a watchdog stops everything when that process is gone, so a test killed
# mid-run leaves no server behind; 0 turns it off.
# Files are written under DIR only; no privileged port, no network beyond loopback: it runs as
# root and as an unprivileged user alike.
set -euo pipefail

tools=$(cd "$(dirname "$0")" && pwd)
if [ $# -ne 1 ]; then
	echo "usage: $0 DIR" >&2
	exit 2
fi
mkdir -p "$1"
dir=$(cd "$1" && pwd)
instances=${REG_INSTANCES:-tls1 tls2 token plain}
alg=${REG_TOKEN_ALG:-ES256}
timeout_s=${REG_START_TIMEOUT:-30}
watch_pid=${REG_WATCH_PID:-$PPID}
py=/usr/bin/python3 # Debian's: python3-jwt and python3-cryptography live there
umask 077

claimed=0 # DIR is ours to clean up after a failure
finished=0
die() {
	echo "start.sh: $*" >&2
	exit 1
}
# any failure (die, or a command failing under set -e) stops what was started
on_exit() {
	if [ $claimed = 1 ] && [ $finished = 0 ]; then
		"$tools/stop.sh" "$dir" >/dev/null 2>&1 || true
	fi
}
trap on_exit EXIT

for bin in docker-registry openssl htpasswd curl "$py"; do
	command -v "$bin" >/dev/null || die "$bin is not installed"
done
if [ -e "$dir/pids" ] && [ ! -e "$dir/stopped" ]; then
	die "$dir is in use (stop it first: $tools/stop.sh $dir)"
fi
rm -f "$dir/env" "$dir/pids" "$dir/stopped"
: >"$dir/pids"
claimed=1
env_lines=()
setenv() { env_lines+=("$1=$(printf '%q' "$2")"); }

# register PID NAME: stop.sh stops PID (checking that its command line still names DIR)
register() { echo "$1 $2" >>"$dir/pids"; }

# --- keys and certificates ------------------------------------------------------------------------
make_pki() {
	local d=$dir/pki
	mkdir -p "$d" "$dir/certdir"
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3 \
		-keyout "$d/ca.key" -out "$d/ca.crt" -subj "/CN=kiln test CA $(basename "$dir")" \
		-addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
		2>"$d/openssl.log" || die "openssl: CA (see $d/openssl.log)"
	# the servers' certificate
	openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$d/server.key" \
		-out "$d/server.csr" -subj /CN=localhost 2>>"$d/openssl.log" || die "openssl: server key"
	printf '%s\n' 'basicConstraints=CA:FALSE' 'keyUsage=critical,digitalSignature,keyEncipherment' \
		'extendedKeyUsage=serverAuth' 'subjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost,DNS:registry.test' \
		>"$d/server.ext"
	openssl x509 -req -in "$d/server.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial \
		-days 3 -extfile "$d/server.ext" -out "$d/server.crt" 2>>"$d/openssl.log" || die "openssl: server cert"
	# the token signing key and its certificate (the token registry's rootcertbundle)
	case $alg in
	ES256) openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$d/token.key" 2>>"$d/openssl.log" ;;
	RS256) openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$d/token.key" 2>>"$d/openssl.log" ;;
	*) die "REG_TOKEN_ALG must be ES256 or RS256, not $alg" ;;
	esac
	openssl req -new -key "$d/token.key" -subj "/CN=kiln test token signer" -out "$d/token.csr" 2>>"$d/openssl.log" &&
		openssl x509 -req -in "$d/token.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial \
			-days 3 -out "$d/token.crt" 2>>"$d/openssl.log" || die "openssl: token signing cert"
	cp "$d/ca.crt" "$dir/certdir/ca.crt"
	chmod 644 "$d/ca.crt" "$d/server.crt" "$dir/certdir/ca.crt"
	chmod 755 "$dir/certdir" "$d"
	setenv REG_CA "$d/ca.crt"
	setenv REG_CERT_DIR "$dir/certdir"
	setenv REG_SERVER_CERT "$d/server.crt"
	setenv REG_SERVER_KEY "$d/server.key"
	setenv REG_TLS_NAME registry.test
}

make_users() {
	user=kiln
	password=$(openssl rand -hex 12)
	reader=reader
	reader_password=$(openssl rand -hex 12)
	mkdir -p "$dir/auth"
	htpasswd -Bbc "$dir/auth/htpasswd" "$user" "$password" 2>/dev/null || die "htpasswd -B failed"
	setenv REG_USER "$user"
	setenv REG_PASSWORD "$password"
	setenv REG_READER "$reader"
	setenv REG_READER_PASSWORD "$reader_password"
}

# --- servers -----------------------------------------------------------------------------------
# wait_v2 URL LOG PID: until URL/v2/ answers 200 or 401 (TLS verified with the CA)
wait_v2() {
	local url=$1 log=$2 pid=$3 code end=$((SECONDS + timeout_s))
	while [ $SECONDS -lt $end ]; do
		kill -0 "$pid" 2>/dev/null || die "the server for $url exited; its log: $log: $(tail -n 3 "$log")"
		code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 --cacert "$dir/pki/ca.crt" "$url/v2/" || true)
		case $code in 200 | 401) return 0 ;; esac
		sleep 0.1
	done
	die "$url/v2/ did not answer 200 or 401 within ${timeout_s}s (last: $code); log: $log"
}

start_token_server() {
	local d=$dir/tokenserver pid port end=$((SECONDS + timeout_s))
	mkdir -p "$d"
	T_ALG=$alg T_EXPIRES=${REG_TOKEN_EXPIRES:-300} T_PKI=$dir/pki T_USER=$user T_PASSWORD=$password \
		T_READER=$reader T_READER_PASSWORD=$reader_password "$py" - "$d/config.json" <<'PY'
import json, os, sys
e = os.environ
json.dump({
    "service": "kiln-test-registry", "issuer": "kiln-test-token-issuer",
    "alg": e["T_ALG"], "expires_in": int(e["T_EXPIRES"]),
    "key": e["T_PKI"] + "/token.key", "cert": e["T_PKI"] + "/token.crt",
    "tls_cert": e["T_PKI"] + "/server.crt", "tls_key": e["T_PKI"] + "/server.key",
    "users": {e["T_USER"]: e["T_PASSWORD"], e["T_READER"]: e["T_READER_PASSWORD"]},
    # per user (anonymous: ""), the first [type, name glob, actions] that matches a scope decides
    "policy": {
        "": [["repository", "public/*", ["pull"]]],
        e["T_USER"]: [["repository", "*", ["pull", "push", "delete"]], ["registry", "catalog", ["*"]]],
        e["T_READER"]: [["repository", "private/*", []], ["repository", "*", ["pull"]]],
    },
}, open(sys.argv[1], "w"), indent=1)
PY
	"$py" "$tools/tokenserver.py" --config "$d/config.json" --ready "$d/ready" --log "$d/requests.log" \
		</dev/null >"$d/server.log" 2>&1 &
	pid=$!
	register "$pid" tokenserver
	while [ ! -s "$d/ready" ]; do
		kill -0 "$pid" 2>/dev/null || die "tokenserver.py exited: $(tail -n 5 "$d/server.log")"
		[ $SECONDS -lt $end ] || die "tokenserver.py did not start within ${timeout_s}s"
		sleep 0.05
	done
	port=$(cat "$d/ready")
	token_realm=https://127.0.0.1:$port/token
	setenv REG_TOKEN_REALM "$token_realm"
	setenv REG_TOKEN_SERVICE kiln-test-registry
	setenv REG_TOKEN_ISSUER kiln-test-token-issuer
	setenv REG_TOKEN_SERVER_HOST "127.0.0.1:$port"
	setenv REG_TOKEN_SERVER_PID "$pid"
	setenv REG_TOKEN_REQUESTS "$d/requests.log"
	setenv REG_TOKEN_SERVER_LOG "$d/server.log"
}

# registry_config NAME: the config.yml of instance NAME on stdout
registry_config() {
	cat <<EOF
version: 0.1
log:
  level: info
  formatter: text
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: $dir/$1/data
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:0
  secret: $(openssl rand -hex 16)
EOF
	case $1 in plain) return 0 ;; esac
	cat <<EOF
  tls:
    certificate: $dir/pki/server.crt
    key: $dir/pki/server.key
EOF
	case $1 in
	token)
		cat <<EOF
auth:
  token:
    realm: $token_realm
    service: kiln-test-registry
    issuer: kiln-test-token-issuer
    rootcertbundle: $dir/pki/token.crt
EOF
		;;
	*)
		cat <<EOF
auth:
  htpasswd:
    realm: kiln-test-$1
    path: $dir/auth/htpasswd
EOF
		;;
	esac
}

# start_registry NAME: docker-registry on 127.0.0.1:0; its stdout is the access log
start_registry() {
	local name=$1 d=$dir/$1 pid port scheme=https up end=$((SECONDS + timeout_s))
	up=$(echo "$name" | tr '[:lower:]' '[:upper:]')
	[ "$name" = plain ] && scheme=http
	mkdir -p "$d/data"
	registry_config "$name" >"$d/config.yml"
	: >"$d/access.log"
	: >"$d/registry.log"
	docker-registry serve "$d/config.yml" </dev/null >"$d/access.log" 2>"$d/registry.log" &
	pid=$!
	register "$pid" "registry-$name"
	# "listening on 127.0.0.1:PORT[, tls]" in the registry's own log
	while :; do
		port=$(sed -n 's/.*msg="listening on 127\.0\.0\.1:\([0-9][0-9]*\).*/\1/p' "$d/registry.log" | head -n 1) || port=
		[ -n "$port" ] && break
		kill -0 "$pid" 2>/dev/null || die "docker-registry ($name) exited: $(tail -n 3 "$d/registry.log")"
		[ $SECONDS -lt $end ] || die "docker-registry ($name) did not listen within ${timeout_s}s; log: $d/registry.log"
		sleep 0.05
	done
	wait_v2 "$scheme://127.0.0.1:$port" "$d/registry.log" "$pid"
	setenv "REG_${up}_HOST" "127.0.0.1:$port"
	setenv "REG_${up}_PORT" "$port"
	setenv "REG_${up}_URL" "$scheme://127.0.0.1:$port"
	setenv "REG_${up}_ACCESS_LOG" "$d/access.log"
	setenv "REG_${up}_LOG" "$d/registry.log"
	setenv "REG_${up}_PID" "$pid"
	setenv "REG_${up}_DATA" "$d/data"
	setenv "REG_${up}_CONFIG" "$d/config.yml"
}

for i in $instances; do
	case $i in tls1 | tls2 | token | plain) ;; *) die "unknown instance '$i' (tls1 tls2 token plain)" ;; esac
done
setenv REG_DIR "$dir"
setenv REG_TOOLS "$tools"
setenv REG_INSTANCES "$instances"
make_pki
make_users
case " $instances " in *" token "*) start_token_server ;; esac
for i in $instances; do
	start_registry "$i"
done
if [ "$watch_pid" != 0 ]; then
	setsid "$tools/stop.sh" --watch "$watch_pid" "$dir" </dev/null >"$dir/watchdog.log" 2>&1 &
	register $! watchdog
fi
printf '%s\n' "# written by tests/registry/start.sh; . this file" "${env_lines[@]/#/export }" >"$dir/env.tmp"
mv "$dir/env.tmp" "$dir/env"
chmod 644 "$dir/env"
finished=1
echo "start.sh: $instances up; . $dir/env" >&2
