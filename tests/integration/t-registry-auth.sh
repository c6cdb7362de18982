#!/usr/bin/env bash
# The registry client's transport and authentication against real registries (tests/registry:
# Debian's docker-registry with TLS from the suite's CA and htpasswd, with token auth from the
# suite's token server, on plain HTTP; the suite's fault proxy in front of them): kiln login and
# logout, docker's config.json, credential helpers, CAs (--tls-ca, certs.d, SSL_CERT_FILE),
# plain HTTP only where allowed, proxies, mirrors, redirects without credentials, retries, and
# no secret anywhere in kiln's output. Requests go through `kiln registry-debug` (hidden: the
# client's requests one at a time).
. "$(dirname "$0")/lib.sh"

R=$(cd "$_here/../registry" && pwd)
reg=$T/reg
trap '"$R/stop.sh" "$reg" >/dev/null 2>&1; _cleanup' EXIT
img=$FIX/busybox-amd64.oci.tar

check "start the registries (tls1 tls2 token plain)" "$R/start.sh" "$reg" || finish
# shellcheck disable=SC1091
. "$reg/env"

# kiln sees only what the test gives it: no user config, no host certs.d, no proxies.
export HOME=$T/home DOCKER_CONFIG= KILN_CONFIG=$T/kiln-config.json KILN_CERTS_DIRS=$T/certs.d
unset DOCKER_CONFIG REGISTRY_AUTH_FILE XDG_RUNTIME_DIR XDG_CONFIG_HOME SSL_CERT_FILE SSL_CERT_DIR
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY ALL_PROXY all_proxy NO_PROXY no_proxy
mkdir -p "$HOME" "$KILN_CERTS_DIRS"
echo '{}' >"$KILN_CONFIG"
cfg=$HOME/.docker/config.json
outs=$T/outputs
mkdir -p "$outs"
# keep: the last command's output joins the ones searched for secrets at the end
keep() { cp "$OUT" "$outs/$(date +%s%N).out"; }
kc() { check "$@"; local st=$?; keep; return $st; }
kf() { check_fail "$@"; local st=$?; keep; return $st; }
login() { printf '%s\n' "$2" | kiln login -u "$1" --password-stdin "${@:3}"; }
dbg() { kiln registry-debug "$@"; }
jqo() { jq -r "$1" "$OUT"; }

# Content: the fixture pushed with skopeo (an independent client).
check "seed: skopeo copy to tls1, tls2, token (private/, public/) and plain" bash -c '
	set -e
	for dest in "$REG_TLS1_HOST/kiln/busybox:1" "$REG_TLS2_HOST/library/busybox:1" \
		"$REG_TOKEN_HOST/private/busybox:1" "$REG_TOKEN_HOST/public/busybox:1"; do
		skopeo copy -q --dest-cert-dir "$REG_CERT_DIR" --dest-creds "$REG_USER:$REG_PASSWORD" \
			"oci-archive:$0" "docker://$dest"
	done
	skopeo copy -q --dest-tls-verify=false "oci-archive:$0" "docker://$REG_PLAIN_HOST/kiln/busybox:1"' "$img"
want=$(skopeo inspect --raw "oci-archive:$img" | sha256sum | cut -d' ' -f1)
layer=$(skopeo inspect --raw "oci-archive:$img" | jq -r '.layers[0].digest')

# --- TLS: the suite's CA is needed ------------------------------------------------------------
kf "login: a registry whose CA is not trusted is refused, saying how to trust it" 1 \
	"certificate.*--tls-ca FILE, certs.d/$REG_TLS1_HOST/ca.crt" login "$REG_USER" "$REG_PASSWORD" "$REG_TLS1_HOST"
check_eq "login: nothing written after a failure" "$(test -e "$cfg" && echo yes || echo no)" no
kf "login: a wrong password is refused" 1 "refused the credentials of '$REG_USER'" \
	login "$REG_USER" wrong-password --tls-ca "$REG_CA" "$REG_TLS1_HOST"
check_eq "login: no config.json after a refused login" "$(test -e "$cfg" && echo yes || echo no)" no

# docker's config keeps its other keys
mkdir -p "$HOME/.docker"
echo '{"psFormat": "table {{.ID}}", "auths": {"other.example": {"auth": "b3RoZXI6b3RoZXI="}}}' >"$cfg"
kc "login --password-stdin --tls-ca: Login Succeeded" login "$REG_USER" "$REG_PASSWORD" --tls-ca "$REG_CA" "$REG_TLS1_HOST"
check_grep "login: prints Login Succeeded" '^Login Succeeded$'
check_eq "login: config.json is mode 0600" "$(stat -c %a "$cfg")" 600
check_eq "login: auths.HOST.auth is base64 of user:password" \
	"$(jq -r --arg h "$REG_TLS1_HOST" '.auths[$h].auth' "$cfg" | base64 -d)" "$REG_USER:$REG_PASSWORD"
check_jq "login: the file's other keys are kept" '.psFormat == "table {{.ID}}" and .auths["other.example"].auth == "b3RoZXI6b3RoZXI="' "$cfg"

# --- requests with the stored credentials -------------------------------------------------------
kc "manifest: GET by tag with the stored credentials" dbg manifest --tls-ca "$REG_CA" "$REG_TLS1_HOST" kiln/busybox 1 -o "$T/m1"
check_eq "manifest: digest computed from the bytes = skopeo's" "$(jqo .digest)" "sha256:$want"
check_eq "manifest: the bytes are the registry's" "$(sha256sum <"$T/m1" | cut -d' ' -f1)" "$want"
check_eq "manifest: media type" "$(jqo .mediaType)" application/vnd.oci.image.manifest.v1+json
kc "manifest: HEAD resolves the tag to the digest" dbg head --tls-ca "$REG_CA" "$REG_TLS1_HOST" kiln/busybox 1
check_eq "manifest: HEAD digest" "$(jqo .digest)" "sha256:$want"
kc "manifest: GET by digest" dbg manifest --tls-ca "$REG_CA" "$REG_TLS1_HOST" kiln/busybox "sha256:$want"
kf "manifest: an unknown tag is ENOENT-like, naming it" 1 "kiln/busybox: manifest 'nope' not found" \
	dbg manifest --tls-ca "$REG_CA" "$REG_TLS1_HOST" kiln/busybox nope
kc "blob: GET streams and verifies the layer" dbg blob --tls-ca "$REG_CA" "$REG_TLS1_HOST" kiln/busybox "$layer" -o "$T/layer"
check_eq "blob: the file has the layer's digest" "sha256:$(sha256sum <"$T/layer" | cut -d' ' -f1)" "$layer"
check_grep "tls1 speaks HTTP/2 with kiln (access log)" '"GET /v2/kiln/busybox/manifests/1 HTTP/2.0"' "$REG_TLS1_ACCESS_LOG"

# --- CAs from certs.d and SSL_CERT_FILE ----------------------------------------------------------
kf "certs.d: without it the CA is not trusted" 1 certificate dbg head "$REG_TLS1_HOST" kiln/busybox 1
mkdir -p "$KILN_CERTS_DIRS/$REG_TLS1_HOST"
cp "$REG_CA" "$KILN_CERTS_DIRS/$REG_TLS1_HOST/ca.crt"
kc "certs.d/HOST/ca.crt is trusted for HOST" dbg head "$REG_TLS1_HOST" kiln/busybox 1
kf "certs.d of one host does not cover another" 1 certificate dbg head "$REG_TLS2_HOST" library/busybox 1
kc "SSL_CERT_FILE replaces the system bundle" env SSL_CERT_FILE="$REG_CA" \
	bash -c 'printf "%s\n" "$REG_PASSWORD" | "$KILN" login -u "$REG_USER" --password-stdin "$REG_TLS2_HOST"'
# The system's CA dir is read by subject hash (the bundle is not parsed when the dir has hash
# links): a CA linked there under its hash is trusted, as curl and OpenSSL would trust it.
mkdir -p "$T/cadir"
cp "$REG_CA" "$T/cadir/ca.pem"
ln -s ca.pem "$T/cadir/$(openssl x509 -hash -noout -in "$REG_CA").0"
kc "SSL_CERT_DIR: a CA found by its hash link is trusted" env SSL_CERT_DIR="$T/cadir" \
	"$KILN" registry-debug head "$REG_TLS2_HOST" library/busybox 1
printf '{"registries": {"%s": {"ca": "%s"}}}' "$REG_TLS2_HOST" "$REG_CA" >"$T/ca-config.json"
kc "the config's \"ca\" is trusted for its registry" env KILN_CONFIG="$T/ca-config.json" \
	"$KILN" registry-debug head "$REG_TLS2_HOST" library/busybox 1

# --- logout -----------------------------------------------------------------------------------
kc "logout removes the credentials" kiln logout "$REG_TLS1_HOST"
check_grep "logout: says so" "Removing login credentials for $REG_TLS1_HOST"
check_jq "logout: the entry is gone, the rest kept" \
	"(.auths | has(\"$REG_TLS1_HOST\") | not) and .auths[\"other.example\"] != null and .psFormat != null" "$cfg"
kc "logout again: not logged in, exit 0" kiln logout "$REG_TLS1_HOST"
check_grep "logout again: says so" "Not logged in to $REG_TLS1_HOST"
kf "without credentials a request says how to log in" 1 "authentication required.*kiln login $REG_TLS1_HOST" \
	dbg head "$REG_TLS1_HOST" kiln/busybox 1

# -p works and warns like docker
kc "login -p: works" kiln login -u "$REG_USER" -p "$REG_PASSWORD" "$REG_TLS1_HOST"
check_grep "login -p: warns that it is insecure" 'WARNING! Using -p/--password on the command line is insecure'
kf "login: no password and no terminal is a usage error" 2 "password-stdin" kiln login -u "$REG_USER" "$REG_TLS1_HOST"

# tty_login HOST: kiln login on a pseudo-terminal (script(1)), answering each prompt once it
# shows; the whole conversation in $OUT, kiln's exit status returned
tty_login() {
	local w pid st
	rm -f "$T/tty.in"
	mkfifo "$T/tty.in"
	script -qec "$(printf '%q ' "$KILN" login "$1")" /dev/null <"$T/tty.in" >"$OUT" 2>&1 &
	pid=$!
	exec {w}>"$T/tty.in"
	wait_for 'Username:' && printf '%s\n' "$REG_USER" >&$w &&
		wait_for 'Password:' && printf '%s\n' "$REG_PASSWORD" >&$w
	wait_for 'Login Succeeded|refused|error'
	exec {w}>&-
	wait "$pid"
	st=$?
	return $st
}
# wait_for ERE: until $OUT matches (at most 30 s)
wait_for() {
	local i
	for i in $(seq 300); do
		grep -Eq -- "$1" "$OUT" && return 0
		sleep 0.1
	done
	return 1
}
tty_login "$REG_TLS1_HOST" </dev/null
st=$?
keep
check_eq "login on a terminal: asks for the user name, then the password" \
	"$(tr -d '\r' <"$OUT" | grep -o 'Username: [a-z]*\|Password:' | tr '\n' ' ')" "Username: $REG_USER Password: "
check_grep "login on a terminal: Login Succeeded" 'Login Succeeded'
check_eq "login on a terminal: exit 0, the password not echoed" "$st $(grep -c -- "$REG_PASSWORD" "$OUT")" "0 0"

# --- credential helpers -------------------------------------------------------------------------
bin=$T/bin
mkdir -p "$bin"
# a helper that records its argv and stdin, then answers like docker-credential-kilntest
cat >"$bin/docker-credential-argv" <<EOF
#!/bin/sh
printf '%s\n' "\$*" >>"$T/helper-argv"
tee -a "$T/helper-stdin" | KILNTEST_CREDS=$T/helper-creds.json "$R/docker-credential-kilntest" "\$@"
EOF
chmod +x "$bin/docker-credential-argv"
printf '{"%s": {"Username": "%s", "Secret": "%s"}}' "$REG_TOKEN_HOST" "$REG_USER" "$REG_PASSWORD" >"$T/helper-creds.json"
printf '{"credHelpers": {"%s": "argv"}}' "$REG_TOKEN_HOST" >"$cfg"
export PATH=$bin:$PATH
: >"$T/token-mark"
tok_before=$(wc -l <"$REG_TOKEN_REQUESTS")
kc "token: private/ with credentials from a credential helper" dbg manifest --tls-ca "$REG_CA" "$REG_TOKEN_HOST" private/busybox 1
check_eq "token: the manifest's digest" "$(jqo .digest)" "sha256:$want"
check_eq "helper: called as 'get' only (no secret in argv)" "$(sort -u "$T/helper-argv")" get
check_eq "helper: given the server on stdin" "$(cat "$T/helper-stdin")" "$REG_TOKEN_HOST"
tail -n +$((tok_before + 1)) "$REG_TOKEN_REQUESTS" >"$T/tokreq"
check_jq "token: one token request, as $REG_USER, basic auth, scope repository:private/busybox:pull" \
	". as \$first | [inputs] | length == 0 and (\$first | .user == \"$REG_USER\" and .auth == \"basic\" and .scopes == [\"repository:private/busybox:pull\"])" "$T/tokreq"
kc "token: anonymous pull of public/" env -u HOME HOME=$T/nohome "$KILN" registry-debug head --tls-ca "$REG_CA" "$REG_TOKEN_HOST" public/busybox 1
kf "token: anonymous private/ is refused, saying how to log in" 1 "authentication required.*kiln login $REG_TOKEN_HOST" \
	env HOME=$T/nohome "$KILN" registry-debug head --tls-ca "$REG_CA" "$REG_TOKEN_HOST" private/busybox 1

# push with a pull,push token; a cross-repository mount asks for both repositories in one token
head -c 300000 /dev/urandom >"$T/blob"
tok_before=$(wc -l <"$REG_TOKEN_REQUESTS")
kc "token: push a blob in chunks (PATCH) to private/new" dbg push-blob --push --chunk-size 65536 --tls-ca "$REG_CA" "$REG_TOKEN_HOST" private/new "$T/blob"
check_eq "push: uploaded" "$(jqo .how)" uploaded
check_eq "push: HEAD, POST, 5 PATCHes and the PUT on one cached token" "$(tail -n +$((tok_before + 1)) "$REG_TOKEN_REQUESTS" | wc -l)" 1
bd=$(jqo .digest)
check_grep "push: the upload went in PATCH chunks" "PATCH /v2/private/new/blobs/uploads/" "$REG_TOKEN_ACCESS_LOG"
kc "push again: HEAD finds it" dbg push-blob --push --tls-ca "$REG_CA" "$REG_TOKEN_HOST" private/new "$T/blob"
check_eq "push again: exists" "$(jqo .how)" exists
tok_before=$(wc -l <"$REG_TOKEN_REQUESTS")
kc "mount: from private/new into private/copy" dbg push-blob --push --mount-from private/new --tls-ca "$REG_CA" "$REG_TOKEN_HOST" private/copy "$T/blob"
check_eq "mount: mounted, not uploaded" "$(jqo .how)" mounted
tail -n +$((tok_before + 1)) "$REG_TOKEN_REQUESTS" >"$T/tokreq"
check_jq "mount: a token for both scopes" \
	'[., inputs] | any(.scopes | (index("repository:private/copy:pull,push") != null) and (index("repository:private/new:pull") != null))' "$T/tokreq"
kc "blob: read back the mounted blob" dbg blob --tls-ca "$REG_CA" "$REG_TOKEN_HOST" private/copy "$bd" -o "$T/blob.back"
check "blob: same bytes" cmp "$T/blob" "$T/blob.back"
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":300000},"layers":[]}' "$bd" >"$T/man.json"
kc "manifest: PUT by tag" dbg put-manifest --push --tls-ca "$REG_CA" "$REG_TOKEN_HOST" private/copy v1 "$T/man.json" application/vnd.oci.image.manifest.v1+json
check_eq "manifest PUT: digest of the bytes" "$(jqo .digest)" "sha256:$(sha256sum <"$T/man.json" | cut -d' ' -f1)"
check_eq "manifest PUT: skopeo reads the same bytes" \
	"$(skopeo inspect --raw --cert-dir "$REG_CERT_DIR" --creds "$REG_USER:$REG_PASSWORD" "docker://$REG_TOKEN_HOST/private/copy:v1" | sha256sum | cut -d' ' -f1)" \
	"$(sha256sum <"$T/man.json" | cut -d' ' -f1)"

# kiln login against the token registry: checked through the token server
rm -f "$cfg"
kf "login token: a wrong password is refused by the token server" 1 "token server refused the credentials" \
	login "$REG_USER" wrong --tls-ca "$REG_CA" "$REG_TOKEN_HOST"
kc "login token: good credentials" login "$REG_READER" "$REG_READER_PASSWORD" --tls-ca "$REG_CA" "$REG_TOKEN_HOST"
check_jq "login token: the token request named the account" "[., inputs] | last | .account == \"$REG_READER\" and .status == 200" "$REG_TOKEN_REQUESTS"
kf "token: $REG_READER may not read private/" 1 "(credentials of '$REG_READER'|denied)" \
	dbg head --tls-ca "$REG_CA" "$REG_TOKEN_HOST" private/busybox 1

# credsStore, the login through a helper, logout through it
printf '{"credsStore": "argv"}' >"$cfg"
echo '{}' >"$T/helper-creds.json"
kc "login with credsStore: stored by the helper" login "$REG_USER" "$REG_PASSWORD" --tls-ca "$REG_CA" "$REG_TLS2_HOST"
check_grep "login: says where" "credential helper 'docker-credential-argv'"
check_jq "login: the helper has them" ".[\"$REG_TLS2_HOST\"].Username == \"$REG_USER\"" "$T/helper-creds.json"
check_nogrep "login: not in config.json" "$REG_TLS2_HOST" "$cfg"
kc "credsStore: used for requests" dbg head --tls-ca "$REG_CA" "$REG_TLS2_HOST" library/busybox 1
kc "logout: erased from the helper" kiln logout "$REG_TLS2_HOST"
check_jq "logout: the helper no longer has them" "has(\"$REG_TLS2_HOST\") | not" "$T/helper-creds.json"
rm -f "$cfg"

# --- plain HTTP: loopback, or marked insecure ---------------------------------------------------
kc "plain: localhost over HTTP" dbg head "localhost:$REG_PLAIN_PORT" kiln/busybox 1
check_eq "plain: digest" "$(jqo .digest)" "sha256:$want"
kc "plain: 127.0.0.1 over HTTP" dbg head "$REG_PLAIN_HOST" kiln/busybox 1
kc "plain: login to a registry without auth keeps them unchecked" login u p "localhost:$REG_PLAIN_PORT"
check_grep "plain: and says so" "asks for no authentication"
# kiln.localhost reaches 127.0.0.1 (curl resolves *.localhost itself), but only the literal
# loopback names may use plain HTTP.
kf "plain: refused for a name that is not literally loopback" 1 \
	"wrong version number.*plain HTTP only for localhost" dbg head "kiln.localhost:$REG_PLAIN_PORT" kiln/busybox 1
printf '{"registries": {"kiln.localhost:%s": {"insecure": true}}}' "$REG_PLAIN_PORT" >"$KILN_CONFIG"
kc "plain: allowed for a registry marked insecure" dbg head "kiln.localhost:$REG_PLAIN_PORT" kiln/busybox 1

# proxies: curl's environment, NO_PROXY honoured; loopback never proxied
kf "proxy: https_proxy/http_proxy are used" 1 "(Failed to connect|Could not connect|proxy)" \
	env http_proxy=http://127.0.0.1:9 https_proxy=http://127.0.0.1:9 "$KILN" registry-debug head "kiln.localhost:$REG_PLAIN_PORT" kiln/busybox 1
kc "proxy: NO_PROXY names the registry: direct" \
	env http_proxy=http://127.0.0.1:9 https_proxy=http://127.0.0.1:9 NO_PROXY=kiln.localhost "$KILN" registry-debug head "kiln.localhost:$REG_PLAIN_PORT" kiln/busybox 1
kc "proxy: loopback hosts are never proxied" \
	env http_proxy=http://127.0.0.1:9 https_proxy=http://127.0.0.1:9 "$KILN" registry-debug head "$REG_PLAIN_HOST" kiln/busybox 1
echo '{}' >"$KILN_CONFIG"

# --- mirrors ---------------------------------------------------------------------------------
login "$REG_USER" "$REG_PASSWORD" --tls-ca "$REG_CA" "$REG_TLS2_HOST" >/dev/null 2>&1
printf '{"registries": {"upstream.invalid": {"mirrors": ["%s"]}}}' "$REG_TLS2_HOST" >"$KILN_CONFIG"
kc "mirror: a registry that does not resolve is served by its mirror" \
	dbg manifest --tls-ca "$REG_CA" upstream.invalid library/busybox 1
check_eq "mirror: served by the mirror" "$(jqo .endpoint)" "$REG_TLS2_HOST"
check_eq "mirror: the digest" "$(jqo .digest)" "sha256:$want"
kf "mirror: pushes go to the registry itself" 1 "upstream.invalid.*(resolve|Resolve)" \
	dbg head --push --tls-ca "$REG_CA" upstream.invalid library/busybox 1
echo '{}' >"$KILN_CONFIG"
kc "--registry-mirror: the same from the command line" \
	dbg manifest --tls-ca "$REG_CA" --registry-mirror "upstream.invalid=$REG_TLS2_HOST" upstream.invalid library/busybox 1
check_eq "--registry-mirror: served by the mirror" "$(jqo .endpoint)" "$REG_TLS2_HOST"
login "$REG_USER" "$REG_PASSWORD" --tls-ca "$REG_CA" "$REG_TLS1_HOST" >/dev/null 2>&1
kc "mirror with a path prefix: busybox as kiln/busybox" \
	dbg manifest --tls-ca "$REG_CA" --registry-mirror "upstream.invalid=$REG_TLS1_HOST/kiln" upstream.invalid busybox 1
check_eq "mirror with a path prefix: served by it" "$(jqo .endpoint)" "$REG_TLS1_HOST"
kc "mirror: one that is down is passed over for the registry" \
	dbg manifest --tls-ca "$REG_CA" --registry-mirror "$REG_TLS1_HOST=127.0.0.1:9" "$REG_TLS1_HOST" kiln/busybox 1
check_eq "mirror down: served by the registry" "$(jqo .endpoint)" "$REG_TLS1_HOST"
printf '{"registries": {"upstream.invalid": {"mirrors": ["127.0.0.1:9"], "mirror-only": true}}}' >"$KILN_CONFIG"
kf "mirror-only: no fallback, the mirror's error" 1 "127.0.0.1:9.*(refused|connect)" \
	dbg head --tls-ca "$REG_CA" upstream.invalid library/busybox 1
printf '{"registries": {"upstream.invalid": {"mirrors": ["http://m"]}}}' >"$KILN_CONFIG"
kf "config: a bad mirror is an error naming the file and key" 1 "kiln-config.json': registries.\"upstream.invalid\".mirrors\[0\]" \
	dbg head upstream.invalid library/busybox 1
echo '{}' >"$KILN_CONFIG"

# --- redirects and faults through the suite's proxy ----------------------------------------------
check "proxy: start a fault proxy in front of tls1" "$R/proxy.sh" "$reg" f tls1
. "$reg/env"
mkdir -p "$KILN_CERTS_DIRS/$REG_PROXY_F_HOST"
cp "$REG_CA" "$KILN_CERTS_DIRS/$REG_PROXY_F_HOST/ca.crt"
login "$REG_USER" "$REG_PASSWORD" "$REG_PROXY_F_HOST" >/dev/null 2>&1
rules() { printf '%s' "$1" >"$T/rules.tmp" && mv "$T/rules.tmp" "$REG_PROXY_F_RULES"; }
plog() { tail -n +$(($1 + 1)) "$REG_PROXY_F_LOG"; }

rules '[{"fault": "redirect", "path": "/blobs/sha256:", "method": "GET"}]'
n=$(wc -l <"$REG_PROXY_F_LOG")
kc "redirect: a blob GET redirected to another host is fetched" dbg blob "$REG_PROXY_F_HOST" kiln/busybox "$layer" -o "$T/redir"
check_eq "redirect: the right bytes" "sha256:$(sha256sum <"$T/redir" | cut -d' ' -f1)" "$layer"
plog "$n" >"$T/pl"
check_jq "redirect: Authorization went to the registry, never to the blob store" \
	'[., inputs] | (map(select(.listener == "store")) | length == 1 and all(.auth == false)) and (map(select(.listener == "front" and .status == 307)) | all(.auth == true))' "$T/pl"

rules '[{"fault": "status", "status": 503, "path": "/manifests/", "times": 2}]'
n=$(wc -l <"$REG_PROXY_F_LOG")
kc "503 twice: retried, then served" dbg manifest "$REG_PROXY_F_HOST" kiln/busybox 1
check_eq "503 twice: three attempts" "$(plog "$n" | grep -c '/manifests/1')" 3
rules '[{"fault": "status", "status": 429, "retry_after": "2", "path": "/manifests/", "times": 1}]'
start=$SECONDS
kc "429 Retry-After: 2: waited, then served" dbg manifest "$REG_PROXY_F_HOST" kiln/busybox 1
check "429: waited about 2 s" test $((SECONDS - start)) -ge 2
rules '[{"fault": "status", "status": 404, "path": "/manifests/"}]'
n=$(wc -l <"$REG_PROXY_F_LOG")
kf "404: not retried" 1 "not found" dbg manifest "$REG_PROXY_F_HOST" kiln/busybox 1
check_eq "404: one attempt" "$(plog "$n" | grep -c '/manifests/1')" 1
rules '[{"fault": "status", "status": 503, "path": "/manifests/"}]'
kf "503 always: fails after 5 attempts" 1 "HTTP 503.*after 5 attempts" dbg manifest "$REG_PROXY_F_HOST" kiln/busybox 1
rules '[{"fault": "cut_response", "path": "/blobs/sha256:", "method": "GET", "times": 1}]'
n=$(wc -l <"$REG_PROXY_F_LOG")
kc "a blob cut mid-body: resumed" dbg blob "$REG_PROXY_F_HOST" kiln/busybox "$layer" -o "$T/cut"
check_eq "cut: the right bytes" "sha256:$(sha256sum <"$T/cut" | cut -d' ' -f1)" "$layer"
rules '[{"fault": "flip", "path": "/blobs/sha256:", "method": "GET"}]'
kf "a blob with a flipped byte: refused, naming the digest" 1 "blob $layer: the bytes received have digest" \
	dbg blob "$REG_PROXY_F_HOST" kiln/busybox "$layer" -o "$T/flip"
check_eq "flip: nothing written under the name, no partial file" "$(ls "$T" | grep -c '^flip')" 0
rules '[{"fault": "flip", "path": "/blobs/sha256:", "method": "GET", "times": 1}]'
n=$(wc -l <"$REG_PROXY_F_LOG")
kc "a byte flipped once: downloaded again, verified" dbg blob "$REG_PROXY_F_HOST" kiln/busybox "$layer" -o "$T/flip1"
check_eq "flip once: the right bytes" "sha256:$(sha256sum <"$T/flip1" | cut -d' ' -f1)" "$layer"
check_eq "flip once: two downloads" "$(plog "$n" | jq -c 'select(.method == "GET" and (.target | contains("/blobs/")))' | wc -l)" 2
head -c 200000 /dev/urandom >"$T/blob2"
rules '[{"fault": "cut_request", "path": "/blobs/uploads/", "method": "PUT", "times": 1}, {"fault": "status", "status": 503, "path": "/blobs/uploads/$", "method": "POST", "times": 1}]'
n=$(wc -l <"$REG_PROXY_F_LOG")
kc "upload: a 503 on start and a connection cut mid-PUT: started again, uploaded" \
	dbg push-blob --push "$REG_PROXY_F_HOST" kiln/faults "$T/blob2"
check_eq "upload: uploaded" "$(jqo .how)" uploaded
check_eq "upload: three sessions asked for" "$(plog "$n" | grep -c '"POST"')" 3
rules '[]'
kc "upload: the blob is there" dbg blob-head "$REG_PROXY_F_HOST" kiln/faults "$(sha256sum <"$T/blob2" | sed 's/^/sha256:/; s/ .*//')"
check_eq "upload: exists" "$(jqo .exists)" true

# --- no secret in anything kiln printed or kept ---------------------------------------------------
for secret in "$REG_PASSWORD" "$REG_READER_PASSWORD"; do
	check_eq "no password in kiln's outputs" "$(grep -rlF -- "$secret" "$outs" | wc -l)" 0
	check_eq "no password under KILN_ROOT" "$(grep -rlF -- "$secret" "$KILN_ROOT" 2>/dev/null | wc -l)" 0
done
finish
