#!/usr/bin/env bash
# The registry test infrastructure (tests/registry) checked with real clients (skopeo, curl), so
# kiln's registry tests can trust it: start.sh's four registries, the token server's bearer flow
# and policy, the credential helper, every fault of faultproxy.py, the access-log counts, and
# that stop.sh (and the watchdog, when the caller dies) leave no process behind.
. "$(dirname "$0")/lib.sh"

R=$(cd "$_here/../registry" && pwd)
reg=$T/reg
trap '"$R/stop.sh" "$reg" >/dev/null 2>&1; _cleanup' EXIT
img=$FIX/busybox-amd64.oci.tar

check "start.sh: tls1 tls2 token plain answer /v2/" "$R/start.sh" "$reg" || finish
# shellcheck disable=SC1091
. "$reg/env"
C=$REG_USER:$REG_PASSWORD
tls=(--cert-dir "$REG_CERT_DIR")
want=$(skopeo inspect --raw "oci-archive:$img" | sha256sum | cut -d' ' -f1)
nblobs=$(skopeo inspect --raw "oci-archive:$img" | jq '.layers | length + 1')
layer=$(skopeo inspect --raw "oci-archive:$img" | jq -r '.layers[0].digest')

# raw_digest REF ARGS...: sha256 of `skopeo inspect --raw` of docker://REF
raw_digest() {
	local ref=$1
	shift
	skopeo inspect --raw "$@" "docker://$ref" 2>"$T/inspect.err" | sha256sum | cut -d' ' -f1
}
# alive_pids: the pids in $reg/pids that still run (zombies count as gone)
alive_pids() {
	local pid name st
	while read -r pid name; do
		st=$(sed -n 's/^State:[[:space:]]*\([A-Z]\).*/\1/p' "/proc/$pid/status" 2>/dev/null)
		[ -n "$st" ] && [ "$st" != Z ] && echo "$pid $name"
	done <"${1:-$reg}/pids"
}

# --- tls1/tls2: TLS from the suite's CA, htpasswd ---------------------------------------------
check "tls1: skopeo copy with htpasswd creds" skopeo copy -q --dest-cert-dir "$REG_CERT_DIR" \
	--dest-creds "$C" "oci-archive:$img" "docker://$REG_TLS1_HOST/kiln/busybox:1"
check_eq "tls1: inspect --raw gives the fixture's manifest digest" \
	"$(raw_digest "$REG_TLS1_HOST/kiln/busybox:1" "${tls[@]}" --creds "$C")" "$want"
check_eq "tls1 access log: $nblobs blob uploads, 1 manifest" \
	"$(bash "$R/accesslog.sh" uploads "$REG_TLS1_ACCESS_LOG") $(bash "$R/accesslog.sh" manifests "$REG_TLS1_ACCESS_LOG")" "$nblobs 1"
mark=$(wc -l <"$REG_TLS1_ACCESS_LOG")
check "tls1: the same copy again" skopeo copy -q --dest-cert-dir "$REG_CERT_DIR" \
	--dest-creds "$C" "oci-archive:$img" "docker://$REG_TLS1_HOST/kiln/busybox:1"
check_eq "tls1 access log: the re-push uploaded 0 blobs" "$(bash "$R/accesslog.sh" uploads "$REG_TLS1_ACCESS_LOG" "$mark")" 0
check_fail "tls1: no credentials is refused" 1 'unauthorized|authentication required' \
	skopeo inspect --raw "${tls[@]}" --no-creds "docker://$REG_TLS1_HOST/kiln/busybox:1"
check_fail "tls1: a wrong password is refused" 1 'unauthorized|authentication required' \
	skopeo inspect --raw "${tls[@]}" --creds "$REG_USER:wrong" "docker://$REG_TLS1_HOST/kiln/busybox:1"
check_fail "tls1: without the suite's CA the certificate is not trusted" 1 'x509|certificate' \
	skopeo inspect --raw --creds "$C" "docker://$REG_TLS1_HOST/kiln/busybox:1"
check "tls1: the certificate names 127.0.0.1, localhost and $REG_TLS_NAME" \
	curl -sf -o /dev/null --cacert "$REG_CA" -u "$C" --resolve "$REG_TLS_NAME:$REG_TLS1_PORT:127.0.0.1" \
	"https://$REG_TLS_NAME:$REG_TLS1_PORT/v2/" "https://localhost:$REG_TLS1_PORT/v2/" "$REG_TLS1_URL/v2/"
check "tls2: skopeo copy registry to registry (tls1 -> tls2)" skopeo copy -q "--src-cert-dir=$REG_CERT_DIR" \
	"--dest-cert-dir=$REG_CERT_DIR" --src-creds "$C" --dest-creds "$C" \
	"docker://$REG_TLS1_HOST/kiln/busybox:1" "docker://$REG_TLS2_HOST/other/busybox:2"
check_eq "tls2: inspect --raw gives the same digest" \
	"$(raw_digest "$REG_TLS2_HOST/other/busybox:2" "${tls[@]}" --creds "$C")" "$want"

# --- plain HTTP ------------------------------------------------------------------------------
check "plain: skopeo copy over http, no auth" skopeo copy -q --dest-tls-verify=false \
	"oci-archive:$img" "docker://$REG_PLAIN_HOST/kiln/busybox:1"
check_eq "plain: inspect --raw" "$(raw_digest "$REG_PLAIN_HOST/kiln/busybox:1" --tls-verify=false)" "$want"
check_eq "plain: $REG_PLAIN_URL is http" "${REG_PLAIN_URL%%://*}" http

# --- token: the bearer flow through the suite's token server -------------------------------------
check "token: push to private/ as $REG_USER (bearer flow)" skopeo copy -q --dest-cert-dir "$REG_CERT_DIR" \
	--dest-creds "$C" "oci-archive:$img" "docker://$REG_TOKEN_HOST/private/busybox:1"
check "token: push to public/ as $REG_USER" skopeo copy -q --dest-cert-dir "$REG_CERT_DIR" \
	--dest-creds "$C" "oci-archive:$img" "docker://$REG_TOKEN_HOST/public/busybox:1"
check_eq "token: $REG_USER reads private/" "$(raw_digest "$REG_TOKEN_HOST/private/busybox:1" "${tls[@]}" --creds "$C")" "$want"
check_eq "token: anonymous reads public/" "$(raw_digest "$REG_TOKEN_HOST/public/busybox:1" "${tls[@]}" --no-creds)" "$want"
check_fail "token: anonymous cannot read private/" 1 'denied|unauthorized' \
	skopeo inspect --raw "${tls[@]}" --no-creds "docker://$REG_TOKEN_HOST/private/busybox:1"
check_fail "token: $REG_READER cannot read private/" 1 'denied|unauthorized' \
	skopeo inspect --raw "${tls[@]}" --creds "$REG_READER:$REG_READER_PASSWORD" "docker://$REG_TOKEN_HOST/private/busybox:1"
check_eq "token: $REG_READER reads public/" \
	"$(raw_digest "$REG_TOKEN_HOST/public/busybox:1" "${tls[@]}" --creds "$REG_READER:$REG_READER_PASSWORD")" "$want"
check_fail "token: anonymous push is refused" 1 'denied|unauthorized' skopeo copy -q \
	--dest-cert-dir "$REG_CERT_DIR" --dest-no-creds "oci-archive:$img" "docker://$REG_TOKEN_HOST/public/anon:1"
check_fail "token: a wrong password is refused" 1 'incorrect username or password|unauthorized' skopeo copy -q \
	--dest-cert-dir "$REG_CERT_DIR" --dest-creds "$REG_USER:wrong" "oci-archive:$img" "docker://$REG_TOKEN_HOST/public/x:1"
check_jq "token server log: the wrong password got 401, no password logged" \
	"[.[] | select(.auth == \"bad\" and .status == 401)] | length >= 1" <(jq -s . "$REG_TOKEN_REQUESTS")
check_nogrep "token server log: no secret in it" "$REG_PASSWORD|wrong" "$REG_TOKEN_REQUESTS"
check_eq "token registry: /v2/ challenges with the realm and service" \
	"$(curl -s -D- -o /dev/null --cacert "$REG_CA" "$REG_TOKEN_URL/v2/" | tr -d '\r' | sed -n 's/^[Ww]ww-[Aa]uthenticate: //p')" \
	"Bearer realm=\"$REG_TOKEN_REALM\",service=\"$REG_TOKEN_SERVICE\""
# token_claims ARGS...: the claims of a token from the realm (curl ARGS) as JSON, into $T/claims.json
token_claims() {
	curl -s --cacert "$REG_CA" "$@" >"$T/token.json" || return 1
	jq -r .token "$T/token.json" | cut -d. -f2 | tr '_-' '/+' | base64 -d 2>/dev/null >"$T/claims.json"
	[ -s "$T/claims.json" ] || echo '{}' >"$T/claims.json"
}
token_claims "$REG_TOKEN_REALM?service=$REG_TOKEN_SERVICE&scope=repository:public/a:pull,push&scope=repository:private/a:pull"
check_jq "token server: anonymous gets pull on public/ only (push and private/ dropped)" \
	'.access == [{"type": "repository", "name": "public/a", "actions": ["pull"]}] and .sub == ""' "$T/claims.json"
token_claims -u "$C" "$REG_TOKEN_REALM?service=$REG_TOKEN_SERVICE&scope=repository:private/a:pull,push%20repository:public/b:pull"
check_jq "token server: $REG_USER gets pull,push on private/ (two scopes in one parameter)" \
	".access == [{\"type\": \"repository\", \"name\": \"private/a\", \"actions\": [\"pull\", \"push\"]},
	 {\"type\": \"repository\", \"name\": \"public/b\", \"actions\": [\"pull\"]}] and .sub == \"$REG_USER\"
	 and .aud == \"$REG_TOKEN_SERVICE\" and .iss == \"$REG_TOKEN_ISSUER\" and .exp > .iat" "$T/claims.json"
check_jq "token server: the answer has token, access_token, expires_in" \
	'.token == .access_token and .expires_in > 0 and (.issued_at | length > 0)' "$T/token.json"
check_eq "token server: a wrong password is 401" \
	"$(curl -s -o /dev/null -w '%{http_code}' --cacert "$REG_CA" -u "$REG_USER:wrong" "$REG_TOKEN_REALM?service=$REG_TOKEN_SERVICE&scope=repository:public/a:pull")" 401
check_eq "token server: a wrong service is 400" \
	"$(curl -s -o /dev/null -w '%{http_code}' --cacert "$REG_CA" "$REG_TOKEN_REALM?service=other&scope=repository:public/a:pull")" 400

# --- the credential helper, through a real client ---------------------------------------------------
export KILNTEST_CREDS=$T/creds.json KILNTEST_CREDS_LOG=$T/creds.log
printf '{"%s": {"Username": "%s", "Secret": "%s"}}\n' "$REG_TOKEN_HOST" "$REG_USER" "$REG_PASSWORD" >"$KILNTEST_CREDS"
printf '{"credHelpers": {"%s": "kilntest", "%s": "kilntest"}}\n' "$REG_TOKEN_HOST" "$REG_TLS2_HOST" >"$T/auth.json"
check_eq "credential helper: skopeo reads private/ with creds from docker-credential-kilntest" \
	"$(PATH=$R:$PATH REGISTRY_AUTH_FILE=$T/auth.json raw_digest "$REG_TOKEN_HOST/private/busybox:1" "${tls[@]}")" "$want"
check_grep "credential helper: it was asked for $REG_TOKEN_HOST" "^get $REG_TOKEN_HOST\$" "$KILNTEST_CREDS_LOG"
check_fail "credential helper: an unknown host is 'credentials not found', exit 1" 1 \
	'^credentials not found in native keychain$' sh -c "echo '$REG_TLS2_HOST' | '$R/docker-credential-kilntest' get"
check "credential helper: store, list, erase" sh -c "echo '{\"ServerURL\": \"h:1\", \"Username\": \"u\", \"Secret\": \"s\"}' |
	'$R/docker-credential-kilntest' store && '$R/docker-credential-kilntest' list </dev/null | grep -q '\"h:1\": \"u\"' &&
	echo h:1 | '$R/docker-credential-kilntest' erase && ! '$R/docker-credential-kilntest' list </dev/null | grep -q h:1"

# --- a second token registry signing RS256 (the default is ES256) --------------------------------
check "token (RS256): start.sh with REG_TOKEN_ALG=RS256" env REG_INSTANCES=token REG_TOKEN_ALG=RS256 "$R/start.sh" "$T/reg-rs"
check "token (RS256): push and read back through the bearer flow" sh -c ". '$T/reg-rs/env' &&
	skopeo copy -q --dest-cert-dir \"\$REG_CERT_DIR\" --dest-creds \"\$REG_USER:\$REG_PASSWORD\" 'oci-archive:$img' \"docker://\$REG_TOKEN_HOST/private/rs:1\" &&
	skopeo inspect --raw --cert-dir \"\$REG_CERT_DIR\" --creds \"\$REG_USER:\$REG_PASSWORD\" \"docker://\$REG_TOKEN_HOST/private/rs:1\" | sha256sum | grep -q '^$want '"
check "token (RS256): stop.sh" "$R/stop.sh" "$T/reg-rs"

# --- the fault proxy, in front of tls1 ------------------------------------------------------------
check "proxy.sh: a fault proxy in front of tls1" "$R/proxy.sh" "$reg" p1 tls1 || finish
# shellcheck disable=SC1091
. "$reg/env"
P=$REG_PROXY_P1_URL
blob=/v2/kiln/busybox/blobs/$layer
rules() { printf '%s\n' "$1" >"$REG_PROXY_P1_RULES.tmp" && mv "$REG_PROXY_P1_RULES.tmp" "$REG_PROXY_P1_RULES"; }
# plog FILTER: jq -s FILTER over the proxy's log
plog() { jq -s -c "$1" "$REG_PROXY_P1_LOG"; }
codes() { # N URL: the statuses of N GETs of URL
	local _
	for _ in $(seq 1 "$1"); do curl -s -o /dev/null -w '%{http_code} ' --cacert "$REG_CA" "$2"; done
}

check "proxy: skopeo pushes through it (chunked PATCH, Location back to the proxy)" skopeo copy -q \
	--dest-cert-dir "$REG_CERT_DIR" --dest-creds "$C" "oci-archive:$img" "docker://$REG_PROXY_P1_HOST/kiln/via-proxy:1"
check_eq "proxy: skopeo reads it back through it" \
	"$(raw_digest "$REG_PROXY_P1_HOST/kiln/via-proxy:1" "${tls[@]}" --creds "$C")" "$want"
check_jq "proxy log: method, target, status, auth, bytes of every request" \
	'map(select(.method == "PATCH")) | length >= 1 and all(.status == 202 and .auth and .req_bytes > 0)' <(jq -s . "$REG_PROXY_P1_LOG")

rules '[{"fault": "status", "status": 503, "path": "^/v2/$", "times": 2}]'
check_eq "proxy fault: 2 x 503, then the registry answers" "$(codes 3 "$P/v2/")" "503 503 401 "
rules '[{"fault": "status", "status": 503, "path": "^/v2/$", "skip": 1, "times": 1}]'
check_eq "proxy fault: skip 1 then 1 x 503" "$(codes 3 "$P/v2/")" "401 503 401 "
rules '[{"fault": "delay", "seconds": 1.5, "path": "^/v2/$", "times": 1}]'
check "proxy fault: delay 1.5 s" sh -c "curl -s -o /dev/null -w '%{time_total}\n' --cacert '$REG_CA' '$P/v2/' |
	awk '{ print; exit !(\$1 >= 1.5) }'"
rules '{"rules": [{"fault": "status", "status": 429, "retry_after": 1, "path": "^/v2/$", "times": 1}]}'
curl -s -D "$T/h429" -o /dev/null --cacert "$REG_CA" "$P/v2/"
check_grep "proxy fault: 429 with Retry-After: 1" '^Retry-After: 1' <(tr -d '\r' <"$T/h429")
check_grep "proxy fault: ... as HTTP/1.1 429" '^HTTP/1.1 429' "$T/h429"

rules '[{"fault": "cut_response", "after": 1000, "path": "/blobs/sha256:", "method": "GET", "times": 1}]'
check_fail "proxy fault: a blob response cut after 1000 bytes (curl: partial file)" 18 '^got 1000$' \
	curl -s -u "$C" -o "$T/cut.bin" -w 'got %{size_download}\n' --cacert "$REG_CA" "$P$blob"
check_eq "proxy fault: ... 1000 bytes arrived" "$(stat -c %s "$T/cut.bin")" 1000
check "proxy fault: ... the next GET is whole (times: 1)" sh -c \
	"curl -sf -u '$C' --cacert '$REG_CA' '$P$blob' | sha256sum | grep -q '^${layer#sha256:} '"

rules '[{"fault": "flip", "path": "/blobs/sha256:", "method": "GET", "times": 1}]'
curl -s -u "$C" -o "$T/flip.bin" --cacert "$REG_CA" "$P$blob"
check "proxy fault: a flipped byte: same size, another digest" sh -c \
	"[ \$(stat -c %s '$T/flip.bin') = $(skopeo inspect --raw "oci-archive:$img" | jq '.layers[0].size') ] &&
	 ! sha256sum '$T/flip.bin' | grep -q '^${layer#sha256:} '"
rules '[{"fault": "flip", "path": "/blobs/sha256:", "method": "GET", "times": 1}]'
check_fail "proxy fault: skopeo refuses the flipped blob" 1 'Digest did not match|digest' skopeo copy -q \
	--src-cert-dir "$REG_CERT_DIR" --src-creds "$C" "docker://$REG_PROXY_P1_HOST/kiln/busybox:1" "oci:$T/flip-layout:x"

rules '[{"fault": "cut_request", "after": 100, "method": "PATCH"}]'
head -c 200000 /dev/urandom >"$T/upload.bin"
loc=$(curl -s -u "$C" -X POST -D- -o /dev/null --cacert "$REG_CA" "$P/v2/kiln/up/blobs/uploads/" | tr -d '\r' | sed -n 's/^[Ll]ocation: //p')
# curl: 52 empty reply, or 55/56 when the cut comes while it still sends
check "proxy fault: a request body cut after 100 bytes (curl: empty reply or send error)" sh -c \
	"curl -s -u '$C' -X PATCH --data-binary '@$T/upload.bin' -H 'Content-Type: application/octet-stream' \
	 --cacert '$REG_CA' '$loc'; st=\$?; echo curl exit \$st; case \$st in 52 | 55 | 56) exit 0 ;; esac; exit 1"
check_jq "proxy log: ... no answer, >= 100 request bytes read, fault cut_request" \
	'map(select(.method == "PATCH")) | last | .status == null and .req_bytes >= 100 and .fault == "cut_request"' <(jq -s . "$REG_PROXY_P1_LOG")

rules '[{"fault": "redirect", "path": "/blobs/sha256:", "method": "GET"}]'
check "proxy fault: 307 to the blob store; curl -L follows without Authorization" sh -c \
	"curl -sfL -u '$C' --cacert '$REG_CA' '$P$blob' | sha256sum | grep -q '^${layer#sha256:} '"
check_eq "proxy log: ... 307 on the front, the store request had no Authorization" \
	"$(plog '[.[-2:][] | [.listener, .status, .auth]]')" '[["front",307,true],["store",200,false]]'
check_eq "proxy fault: a redirected request that forwards Authorization gets 400" \
	"$(curl -s -L --location-trusted -u "$C" -o /dev/null -w '%{http_code}' --cacert "$REG_CA" "$P$blob")" 400
check_eq "proxy log: ... recorded as auth: true at the store" "$(plog '[last | .listener, .status, .auth]')" '["store",400,true]'
check "proxy fault: skopeo pulls through the redirects" skopeo copy -q --src-cert-dir "$REG_CERT_DIR" \
	--src-creds "$C" "docker://$REG_PROXY_P1_HOST/kiln/busybox:1" "oci:$T/redirect-layout:x"
check_jq "proxy log: ... every blob came from the store without Authorization" \
	'map(select(.listener == "store")) | length >= 3 and (.[-2:] | all(.auth == false and .status == 200))' <(jq -s . "$REG_PROXY_P1_LOG")

check "proxy.sh: proxies in front of token (https) and plain (http)" sh -c \
	"'$R/proxy.sh' '$reg' p2 token && '$R/proxy.sh' '$reg' p3 plain"
# shellcheck disable=SC1091
. "$reg/env"
check_eq "proxy: the bearer flow works through it (token registry)" \
	"$(raw_digest "$REG_PROXY_P2_HOST/private/busybox:1" "${tls[@]}" --creds "$C")" "$want"
check_eq "proxy: plain HTTP in front of the plain registry" "${REG_PROXY_P3_URL%%://*}" http
check "proxy: skopeo pushes over plain HTTP through it" skopeo copy -q --dest-tls-verify=false \
	"oci-archive:$img" "docker://$REG_PROXY_P3_HOST/kiln/via-proxy:1"
check_eq "proxy: ... and reads it back" "$(raw_digest "$REG_PROXY_P3_HOST/kiln/via-proxy:1" --tls-verify=false)" "$want"

rules '[{"fault": "bogus"}]'
check_eq "proxy: a malformed rules file fails every request with 500" "$(codes 1 "$P/v2/")" "500 "
rules '[]'
check_eq "proxy: no rules, the registry answers again" "$(codes 1 "$P/v2/")" "401 "

# --- stop.sh and the watchdog ---------------------------------------------------------------------
check "stop.sh stops the registries, the token server, the proxy and the watchdog" "$R/stop.sh" "$reg"
check_eq "stop.sh: no process left" "$(alive_pids)" ""
check "start.sh from a subshell that then exits" sh -c "REG_INSTANCES=plain '$R/start.sh' '$T/reg-w' 2>/dev/null"
end=$((SECONDS + 10))
while [ -n "$(alive_pids "$T/reg-w")" ] && [ $SECONDS -lt $end ]; do sleep 0.2; done
check_eq "watchdog: the caller gone, nothing of it runs" "$(alive_pids "$T/reg-w")" ""
finish
