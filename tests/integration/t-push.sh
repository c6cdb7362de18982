#!/usr/bin/env bash
# kiln push, kiln build --push / -o type=registry and kiln merge with registries, against real
# registries (tests/registry: Debian's docker-registry with TLS from the suite's CA and htpasswd,
# one with token auth from the suite's token server, the suite's fault proxy): one two-platform
# artifact built once goes to two registries with two tags each, byte for byte (skopeo reads
# every ref back with the artifact's index digest); a re-push uploads nothing; a second tag is
# one manifest PUT; blobs are mounted across repositories; one bad destination does not stop the
# others; per-platform builds pushed by digest merge into the one-command build's index in the
# registry; uploads survive 503s, a 429 and cut connections, and fail cleanly when they cannot.
if [ -z "${FIX:-}" ]; then
	FIX=$("$(cd "$(dirname "$0")" && pwd)/../fixtures/cached.sh" amd64 arm64) ||
		{ echo "Bail out! no fixtures" >&2; exit 1; }
fi
. "$(dirname "$0")/lib.sh"
require_userns
if [ ! -s "$FIX/busybox-multi.oci.tar" ]; then
	skip "two-platform base" "no $FIX/busybox-multi.oci.tar (make it: tests/fixtures/cached.sh amd64 arm64)"
	finish
fi

R=$(cd "$_here/../registry" && pwd)
reg=$T/reg
trap '"$R/stop.sh" "$reg" >/dev/null 2>&1; _cleanup' EXIT
check "start the registries (tls1 tls2 token)" env REG_INSTANCES="tls1 tls2 token" "$R/start.sh" "$reg" || finish
# shellcheck disable=SC1091
. "$reg/env"
H1=$REG_TLS1_HOST H2=$REG_TLS2_HOST
C=$REG_USER:$REG_PASSWORD
tls=(--cert-dir "$REG_CERT_DIR" --creds "$C")

# kiln sees only what the test gives it: credentials in $DOCKER_CONFIG, the CA with --tls-ca.
export HOME=$T/home DOCKER_CONFIG=$T/docker KILN_CONFIG=$T/kiln-config.json KILN_CERTS_DIRS=$T/certs.d
unset REGISTRY_AUTH_FILE XDG_RUNTIME_DIR XDG_CONFIG_HOME SSL_CERT_FILE SSL_CERT_DIR
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY ALL_PROXY all_proxy NO_PROXY no_proxy
mkdir -p "$HOME" "$DOCKER_CONFIG" "$KILN_CERTS_DIRS"
echo '{}' >"$KILN_CONFIG"
# write_auths HOST...: config.json with the right credentials for each HOST, and a wrong
# password for localhost:TLS2_PORT (the same registry under another name)
write_auths() {
	local h good bad
	good=$(printf %s "$C" | base64 -w0)
	bad=$(printf %s "$REG_USER:wrong-password" | base64 -w0)
	{
		printf '{"auths": {"localhost:%s": {"auth": "%s"}' "$REG_TLS2_PORT" "$bad"
		for h in "$@"; do printf ', "%s": {"auth": "%s"}' "$h" "$good"; done
		printf '}}\n'
	} >"$DOCKER_CONFIG/config.json"
}
write_auths "$H1" "$H2" "$REG_TOKEN_HOST"
push() { kiln push --tls-ca "$REG_CA" "$@"; }
raw_digest() { skopeo inspect --raw "${tls[@]}" "docker://$1" 2>/dev/null | sha256sum | sed 's/^/sha256:/; s/ .*//'; }
mark() { wc -l <"$1"; }
# settle LOG...: until no line was added for 0.2 s (a registry logs a request after answering it)
settle() {
	local before after end=$((SECONDS + 3))
	while [ $SECONDS -lt $end ]; do
		before=$(cat "$@" | wc -l)
		sleep 0.2
		after=$(cat "$@" | wc -l)
		[ "$before" = "$after" ] && return 0
	done
}
count() { bash "$R/accesslog.sh" "$@"; }

# --- the artifact: both platforms built once ------------------------------------------------------
ctx=$(newdir ctx)
echo "pushed by kiln" >"$ctx/msg.txt"
cat >"$ctx/Dockerfile" <<'DF'
FROM busybox AS build
ARG TARGETARCH
RUN echo "built for $TARGETARCH on $(uname -m)" > /built.txt
FROM busybox
COPY msg.txt /msg.txt
COPY --from=build /built.txt /built.txt
DF
check "load the two-platform base" kiln load "$FIX/busybox-multi.oci.tar"
art=$T/art.tar
check "build linux/amd64 + linux/arm64 once" kiln build --progress plain --platform linux/amd64,linux/arm64 \
	-o "type=oci,dest=$art" "$ctx" || finish
want=sha256:$(skopeo inspect --raw "oci-archive:$art" | sha256sum | cut -d' ' -f1)
# configs and layers: every blob of the archive but the index and the two manifests
nblobs=$(($(tar -tf "$art" | grep -c '^blobs/sha256/.') - 3))
refs=("$H1/kiln/app:1" "$H1/kiln/app:2" "$H2/kiln/app:1" "$H2/kiln/app:2")

# --- push: two registries, two tags each ---------------------------------------------------------
m1=$(mark "$REG_TLS1_ACCESS_LOG") m2=$(mark "$REG_TLS2_ACCESS_LOG")
check "kiln push ARTIFACT to 2 registries x 2 tags" push --metadata-file "$T/push1.json" "oci-archive:$art" "${refs[@]}"
settle "$REG_TLS1_ACCESS_LOG" "$REG_TLS2_ACCESS_LOG"
cp "$REG_TLS1_ACCESS_LOG" "$T/tls1-push1.log" # before skopeo reads it back
check_grep "stdout: the index digest" "^$want\$"
check_grep "summary: $H1/kiln/app:1 uploaded $nblobs blobs" \
	"kiln push: pushed $H1/kiln/app:1 $want: uploaded $nblobs, mounted 0, skipped 0 blobs .*3 manifests"
check_grep "summary: $H1/kiln/app:2 is the tag only" \
	"kiln push: pushed $H1/kiln/app:2 $want, tag only: uploaded 0, mounted 0, skipped $nblobs blobs .*1 manifest,"
check_grep "summary: $H2/kiln/app:1 uploaded $nblobs blobs" "kiln push: pushed $H2/kiln/app:1 $want: uploaded $nblobs,"
for r in "${refs[@]}"; do
	check_eq "skopeo inspect --raw $r: the artifact's index digest" "$(raw_digest "$r")" "$want"
done
for arch in amd64 arm64; do
	pm=$(skopeo inspect --raw "oci-archive:$art" | jq -r ".manifests[] | select(.platform.architecture == \"$arch\") | .digest")
	check "skopeo copy linux/$arch from $H2/kiln/app:2 reads back" skopeo copy -q --src-cert-dir "$REG_CERT_DIR" \
		--src-creds "$C" --override-os linux --override-arch "$arch" "docker://$H2/kiln/app:2" "oci:$T/back-$arch:x"
	check_eq "... its manifest is the artifact's linux/$arch manifest" \
		"sha256:$(jq -r '.manifests[0].digest' "$T/back-$arch/index.json" | cut -d: -f2)" "$pm"
done
check_eq "tls1 access log: $nblobs blob uploads, 4 manifest PUTs (2 platforms, the index, the 2nd tag)" \
	"$(count uploads "$REG_TLS1_ACCESS_LOG" "$m1") $(count manifests "$REG_TLS1_ACCESS_LOG" "$m1")" "$nblobs 4"
check_eq "tls2 access log: the same" \
	"$(count uploads "$REG_TLS2_ACCESS_LOG" "$m2") $(count manifests "$REG_TLS2_ACCESS_LOG" "$m2")" "$nblobs 4"
tag1=$(grep -n '"PUT /v2/kiln/app/manifests/1 ' "$T/tls1-push1.log" | tail -n 1 | cut -d: -f1)
check_eq "tls1 access log: after tag 1, tag 2 was one request, a manifest PUT" \
	"$(count requests "$T/tls1-push1.log" "$tag1") $(count manifests "$T/tls1-push1.log" "$tag1")" "1 1"
check_grep "... PUT /v2/kiln/app/manifests/2" '"PUT /v2/kiln/app/manifests/2 ' <(tail -n 1 "$T/tls1-push1.log")
check_jq "metadata: containerimage.digest, image.name, kiln.push per destination" \
	".\"containerimage.digest\" == \"$want\" and (.\"image.name\" | split(\",\") | length) == 4 and
	 (.\"kiln.push\" | length) == 4 and all(.\"kiln.push\"[]; .digest == \"$want\" and (.error | not)) and
	 .\"kiln.push\"[0].uploaded == $nblobs and .\"kiln.push\"[0].bytes > 0 and .\"kiln.push\"[1].tag_only and
	 .\"kiln.push\"[1].uploaded == 0 and .\"kiln.push\"[1].manifests == 1 and .\"kiln.push\"[0].seconds >= 0" "$T/push1.json"

# --- re-push: nothing is uploaded --------------------------------------------------------------------
m1=$(mark "$REG_TLS1_ACCESS_LOG") m2=$(mark "$REG_TLS2_ACCESS_LOG")
check "push the same artifact again" push "oci-archive:$art" "${refs[@]}"
check_eq "summary: every destination uploaded 0 blobs" "$(grep -c 'uploaded 0, mounted 0, skipped' "$OUT")" 4
settle "$REG_TLS1_ACCESS_LOG" "$REG_TLS2_ACCESS_LOG"
check_eq "access logs: 0 blob uploads, 0 mounts" \
	"$(count uploads "$REG_TLS1_ACCESS_LOG" "$m1") $(count uploads "$REG_TLS2_ACCESS_LOG" "$m2") $(count mounts "$REG_TLS1_ACCESS_LOG" "$m1")" "0 0 0"

# --- cross-repository mounts --------------------------------------------------------------------------
m1=$(mark "$REG_TLS1_ACCESS_LOG")
check "push to a tag of kiln/app and to team/app of the same registry" push "oci-archive:$art" "$H1/kiln/app:3" "$H1/team/app:1"
check_grep "summary: team/app mounted every blob from kiln/app" "pushed $H1/team/app:1 $want: uploaded 0, mounted $nblobs, skipped 0"
settle "$REG_TLS1_ACCESS_LOG" "$REG_TLS2_ACCESS_LOG"
check_eq "access log: $nblobs mounts, 0 uploads" "$(count mounts "$REG_TLS1_ACCESS_LOG" "$m1") $(count uploads "$REG_TLS1_ACCESS_LOG" "$m1")" "$nblobs 0"
check "--mount-from kiln/app in a new process" push --mount-from kiln/app "oci-archive:$art" "$H1/team2/app:1"
check_grep "summary: mounted $nblobs" "pushed $H1/team2/app:1 $want: uploaded 0, mounted $nblobs,"
check_eq "team2/app: the artifact's digest" "$(raw_digest "$H1/team2/app:1")" "$want"
check_fail "--mount-from must be a repository" 2 "mount-from" push --mount-from 'Bad Repo' "oci-archive:$art" "$H1/x/y:1"

# --- the token registry: bearer flow with push scope -------------------------------------------
check "push to the token registry (private/app)" push "oci-archive:$art" "$REG_TOKEN_HOST/private/app:1"
check_eq "token registry: the artifact's digest" "$(raw_digest "$REG_TOKEN_HOST/private/app:1")" "$want"
check_jq "token server: kiln asked for pull,push on private/app as $REG_USER and got push" \
	"map(select(.user == \"$REG_USER\" and .status == 200 and (.scopes | index(\"repository:private/app:pull,push\"))
	 and any(.granted[]; .name == \"private/app\" and (.actions | index(\"push\"))))) | length >= 1" \
	<(jq -s . "$REG_TOKEN_REQUESTS")

# --- kiln build --push -t -------------------------------------------------------------------------
check "kiln build --push -t two tags (cached: no step runs)" kiln build --progress plain --platform linux/amd64,linux/arm64 \
	--tls-ca "$REG_CA" --push -t "$H2/kiln/built:1" -t "$H2/kiln/built:2" --metadata-file "$T/build.json" "$ctx"
check_grep "build: a push step and a summary line per tag" "pushed $H2/kiln/built:2 $want, tag only"
check_eq "build --push: $H2/kiln/built:1 has the artifact's digest" "$(raw_digest "$H2/kiln/built:1")" "$want"
check_jq "build metadata: containerimage.digest and image.name as buildx writes them" \
	".\"containerimage.digest\" == \"$want\" and .\"image.name\" == \"$H2/kiln/built:1,$H2/kiln/built:2\" and
	 (.\"kiln.push\" | length) == 2" "$T/build.json"
check_fail "-o type=registry without a name or -t is a usage error" 2 "needs -t NAME or name=REF" \
	kiln build -o type=registry "$ctx"
check "-o type=registry,name=A,name=B (buildx's name=A,B too)" kiln build --progress plain --platform linux/amd64,linux/arm64 \
	--tls-ca "$REG_CA" -o "type=registry,name=$H1/kiln/named:1,name=$H1/kiln/named:2,$H1/kiln/named:3,push=true" "$ctx"
check_eq "... all three names pushed" "$(grep -c "pushed $H1/kiln/named:[123] $want" "$OUT")" 3
check "kiln push oci:DIR (a layout dir of the same build)" sh -c "'$KILN' build --progress quiet \
	--platform linux/amd64,linux/arm64 -o type=oci,dest='$T/layout',tar=false '$ctx' >/dev/null &&
	'$KILN' push --tls-ca '$REG_CA' 'oci:$T/layout' '$H1/kiln/fromdir:1'"
check_eq "... the artifact's digest" "$(raw_digest "$H1/kiln/fromdir:1")" "$want"
check "kiln push of a docker-archive (a plain path, detected by content)" sh -c "'$KILN' build --progress quiet \
	--platform linux/arm64 -o type=docker,dest='$T/docker.tar' '$ctx' >/dev/null &&
	'$KILN' push --tls-ca '$REG_CA' '$T/docker.tar' '$H1/kiln/fromdocker:1'"
check_eq "... its config and layers are the archive's, byte for byte" \
	"$(skopeo inspect --raw "${tls[@]}" "docker://$H1/kiln/fromdocker:1" | jq -c '[.config.digest, [.layers[].digest]]')" \
	"$(tar -xOf "$T/docker.tar" manifest.json | jq -c '[.[0].Config, [.[0].Layers[]]] | map(if type == "array" then map("sha256:" + (split("/") | last | sub("\\.tar$"; ""))) else "sha256:" + (split("/") | last) end)')"
check "kiln push of a store name (the build's -t)" push "$H2/kiln/built:1" "$H1/kiln/fromstore:1"
check_eq "... the artifact's digest" "$(raw_digest "$H1/kiln/fromstore:1")" "$want"
check "kiln push --platform linux/arm64: a new index of that manifest" \
	push --platform linux/arm64 --metadata-file "$T/arm.json" "oci-archive:$art" "$H2/kiln/arm:1"
arm=$(skopeo inspect --raw "oci-archive:$art" | jq -c '[.manifests[] | select(.platform.architecture == "arm64")]')
check_eq "... the ref's index lists only the arm64 manifest" \
	"$(skopeo inspect --raw "${tls[@]}" "docker://$H2/kiln/arm:1" | jq -c '.manifests')" "$arm"
check_jq "... its digest is the new index's, not the artifact's" \
	".\"containerimage.digest\" != \"$want\" and .\"kiln.push\"[0].digest == .\"containerimage.digest\"" "$T/arm.json"
check_fail "kiln push --platform of a platform not in the image" 1 "linux/s390x is not in the image.*linux/amd64, linux/arm64" \
	push --platform linux/s390x "oci-archive:$art" "$H2/kiln/arm:2"

# --- one bad destination does not stop the others ---------------------------------------------------
check_fail "push to a good, an unreachable and a wrong-password destination: exit 1" 1 \
	"push: 2 of 3 destinations failed" push --metadata-file "$T/bad.json" "oci-archive:$art" \
	"127.0.0.1:1/kiln/app:1" "localhost:$REG_TLS2_PORT/kiln/bad:1" "$H1/kiln/good:1"
check_grep "summary: the unreachable one FAILED" "FAILED 127.0.0.1:1/kiln/app:1: .*(refused|connect)"
check_grep "summary: the wrong password FAILED, naming the credentials" \
	"FAILED localhost:$REG_TLS2_PORT/kiln/bad:1: .*credentials of '$REG_USER'.*not accepted"
check_grep "summary: the good one was pushed" "pushed $H1/kiln/good:1 $want"
check_eq "the good one is in its registry" "$(raw_digest "$H1/kiln/good:1")" "$want"
check_jq "metadata: two errors, one digest; image.name only the pushed one" \
	"([.\"kiln.push\"[] | select(.error)] | length) == 2 and .\"image.name\" == \"$H1/kiln/good:1\"" "$T/bad.json"
check_nogrep "no password in the output" "$REG_PASSWORD|wrong-password"

# --- merge: per-platform builds on two roots, pushed by digest, one tag ------------------------------
for arch in amd64 arm64; do
	KILN_ROOT=$T/root-$arch kiln load "$FIX/busybox-multi.oci.tar" >/dev/null 2>&1
	check "build linux/$arch alone (root $arch), pushed by digest" env KILN_ROOT="$T/root-$arch" "$KILN" build \
		--progress plain --platform "linux/$arch" --tls-ca "$REG_CA" --metadata-file "$T/$arch.json" \
		-o "type=registry,name=$H1/kiln/app-$arch,push-by-digest=true" "$ctx"
	check_jq "... metadata: pushed by digest" \
		".\"kiln.push\"[0].name == \"$H1/kiln/app-$arch@\" + .\"containerimage.digest\"" "$T/$arch.json"
done
da=$(jq -r '."containerimage.digest"' "$T/amd64.json")
db=$(jq -r '."containerimage.digest"' "$T/arm64.json")
m1=$(mark "$REG_TLS1_ACCESS_LOG")
check "kiln merge --push -t: the two digests into one tag" env KILN_ROOT="$T/root-merge" "$KILN" merge --tls-ca "$REG_CA" \
	--push -t "$H1/kiln/multi:1" "$H1/kiln/app-amd64@$da" "docker://$H1/kiln/app-arm64@$db"
check_grep "merge: stdout is the one-command build's index digest" "^$want\$"
check_eq "merge: $H1/kiln/multi:1 has the one-command build's index digest" "$(raw_digest "$H1/kiln/multi:1")" "$want"
settle "$REG_TLS1_ACCESS_LOG" "$REG_TLS2_ACCESS_LOG"
check_eq "merge: only mounts and manifests, no upload, no blob read (access log)" \
	"$(count uploads "$REG_TLS1_ACCESS_LOG" "$m1") $(count mounts "$REG_TLS1_ACCESS_LOG" "$m1") $(count blob-gets "$REG_TLS1_ACCESS_LOG" "$m1")" \
	"0 $nblobs 2"
check "merge -o type=registry to the other registry: blobs copied through" env KILN_ROOT="$T/root-merge2" "$KILN" \
	merge --tls-ca "$REG_CA" -o "type=registry,name=$H2/kiln/multi:1" "$H1/kiln/app-amd64@$da" "$H1/kiln/app-arm64@$db"
check_eq "merge to $H2: the same index digest" "$(raw_digest "$H2/kiln/multi:1")" "$want"
check "merge again in the first merge's root (it holds their manifests, not their layers)" env KILN_ROOT="$T/root-merge" \
	"$KILN" merge --tls-ca "$REG_CA" -o "type=registry,name=$H2/kiln/multi:2" "$H1/kiln/app-amd64@$da" "$H1/kiln/app-arm64@$db"
check_eq "... the same index digest" "$(raw_digest "$H2/kiln/multi:2")" "$want"
check "merge to $H2: skopeo copies linux/arm64 back" skopeo copy -q --src-cert-dir "$REG_CERT_DIR" --src-creds "$C" \
	--override-os linux --override-arch arm64 "docker://$H2/kiln/multi:1" "oci:$T/multi-arm64:x"

# --- faults: the suite's proxy in front of tls1 ---------------------------------------------------
check "a fault proxy in front of tls1" "$R/proxy.sh" "$reg" f tls1 || finish
# shellcheck disable=SC1091
. "$reg/env"
P=$REG_PROXY_F_HOST
write_auths "$H1" "$H2" "$REG_TOKEN_HOST" "$P"
rules() { printf '%s\n' "$1" >"$REG_PROXY_F_RULES.tmp" && mv "$REG_PROXY_F_RULES.tmp" "$REG_PROXY_F_RULES"; }
plog() { tail -n +"$(($1 + 1))" "$REG_PROXY_F_LOG" | jq -s -c "$2"; }

rules '[{"fault": "status", "status": 503, "path": "/blobs/uploads/", "method": "PUT", "times": 2},
	{"fault": "status", "status": 429, "retry_after": 1, "path": "/blobs/uploads/$", "method": "POST", "times": 1}]'
n=$(mark "$REG_PROXY_F_LOG")
check "push through two 503s and a 429 (Retry-After: 1): retried, pushed" push "oci-archive:$art" "$P/kiln/faults:1"
check_eq "proxy log: the faults happened (503 503 429)" "$(plog "$n" '[.[] | select(.fault) | .status] | sort')" '[429,503,503]'
check_eq "faults: the artifact's digest" "$(raw_digest "$H1/kiln/faults:1")" "$want"

rules '[{"fault": "cut_request", "after": 30000, "path": "/blobs/uploads/", "method": "PUT", "times": 1}]'
n=$(mark "$REG_PROXY_F_LOG")
check "push with a connection cut mid-upload: the upload starts again" push "oci-archive:$art" "$P/kiln/cut:1"
check_eq "proxy log: one upload was cut" "$(plog "$n" '[.[] | select(.fault == "cut_request")] | length')" 1
check_eq "cut: the artifact's digest" "$(raw_digest "$H1/kiln/cut:1")" "$want"

rules '[{"fault": "cut_request", "after": 1000, "path": "/blobs/uploads/", "method": "PATCH", "skip": 1, "times": 1}]'
n=$(mark "$REG_PROXY_F_LOG")
check "chunked push (PATCH) with a chunk cut: started again" push --chunk-size 65536 "oci-archive:$art" "$P/kiln/chunks:1"
check_eq "proxy log: PATCH chunks, one cut" \
	"$(plog "$n" '[([.[] | select(.method == "PATCH")] | length > 2), ([.[] | select(.fault == "cut_request")] | length)]')" '[true,1]'
check_eq "chunks: the artifact's digest" "$(raw_digest "$H1/kiln/chunks:1")" "$want"

rules '[{"fault": "status", "status": 503, "path": "/blobs/uploads/", "method": "PUT"}]'
m1=$(mark "$REG_TLS1_ACCESS_LOG")
check_fail "503 on every upload: fails cleanly, exit 1" 1 "FAILED $P/kiln/dead:1: .*after 5 attempts.*HTTP 503" \
	push "oci-archive:$art" "$P/kiln/dead:1"
settle "$REG_TLS1_ACCESS_LOG" "$REG_TLS2_ACCESS_LOG"
check_eq "... no manifest reached the registry" "$(count manifests "$REG_TLS1_ACCESS_LOG" "$m1")" 0
rules '[]'
check "... the next push completes" push "oci-archive:$art" "$P/kiln/dead:1"
check_eq "... with the artifact's digest" "$(raw_digest "$H1/kiln/dead:1")" "$want"
finish
