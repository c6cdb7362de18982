#!/usr/bin/env bash
# Pulls from real registries (tests/registry: Debian's docker-registry with TLS from the suite's
# CA and htpasswd, one with token auth from the suite's token server, the suite's fault proxy in
# front of one), with content pushed by skopeo (an independent client): kiln pull of one
# platform, of all, -o archives skopeo reads, OCI and Docker schema 2 lists, FROM with
# credentials from docker's config.json and from a credential helper, --pull=missing|always|
# never, FROM by digest, docker-image:// contexts, the report's bases, mirrors (also
# mirror-only) for a registry name that does not resolve, and faults: retries where they help,
# a clean failure naming the digest where not, SIGKILL mid-pull; `kiln doctor --verify` stays
# clean throughout and nothing partial gets a blob's name.
if [ -z "${FIX:-}" ]; then
	FIX=$("$(cd "$(dirname "$0")" && pwd)/../fixtures/cached.sh" amd64 arm64) ||
		{ echo "Bail out! no fixtures" >&2; exit 1; }
fi
. "$(dirname "$0")/lib.sh"
require_userns

R=$(cd "$_here/../registry" && pwd)
reg=$T/reg
trap '"$R/stop.sh" "$reg" >/dev/null 2>&1; _cleanup' EXIT
multi=$FIX/busybox-multi.oci.tar
amd=$FIX/busybox-amd64.oci.tar
if [ ! -s "$multi" ]; then
	skip "two-platform base" "no $multi (make it: tests/fixtures/cached.sh amd64 arm64)"
	finish
fi

check "start the registries (tls1, token)" env REG_INSTANCES="tls1 token" "$R/start.sh" "$reg" || finish
check "a fault proxy in front of tls1" "$R/proxy.sh" "$reg" p1 tls1 || finish
# shellcheck disable=SC1091
. "$reg/env"

# kiln sees only what the test gives it: no user config, no host certs.d, no proxies; the
# suite's CA is the only one trusted (SSL_CERT_FILE).
export HOME=$T/home DOCKER_CONFIG=$T/docker KILN_CONFIG=$T/kiln-config.json
export KILN_CERTS_DIRS=$T/certs.d SSL_CERT_FILE=$REG_CA
unset REGISTRY_AUTH_FILE XDG_RUNTIME_DIR XDG_CONFIG_HOME SSL_CERT_DIR
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY ALL_PROXY all_proxy NO_PROXY no_proxy
mkdir -p "$HOME" "$DOCKER_CONFIG" "$KILN_CERTS_DIRS"
echo '{}' >"$KILN_CONFIG"
# credentials: htpasswd for tls1 and its proxy in "auths", the token registry's from the
# suite's credential helper
export PATH=$R:$PATH KILNTEST_CREDS=$T/creds.json KILNTEST_CREDS_LOG=$T/creds.log
printf '{"%s": {"Username": "%s", "Secret": "%s"}}\n' "$REG_TOKEN_HOST" "$REG_USER" "$REG_PASSWORD" >"$KILNTEST_CREDS"
auth=$(printf '%s' "$REG_USER:$REG_PASSWORD" | base64 -w0)
printf '{"auths": {"%s": {"auth": "%s"}, "%s": {"auth": "%s"}}, "credHelpers": {"%s": "kilntest"}}\n' \
	"$REG_TLS1_HOST" "$auth" "$REG_PROXY_P1_HOST" "$auth" "$REG_TOKEN_HOST" >"$DOCKER_CONFIG/config.json"

H=$REG_TLS1_HOST
P=$REG_PROXY_P1_HOST
check "seed: skopeo pushes the fixtures (OCI index, one manifest, Docker schema 2 list, private)" bash -c '
	set -e
	sk() { skopeo copy -q --dest-cert-dir "$REG_CERT_DIR" --dest-creds "$REG_USER:$REG_PASSWORD" "$@"; }
	sk --all "oci-archive:$0" "docker://$REG_TLS1_HOST/kiln/busybox:multi"
	sk "oci-archive:$1" "docker://$REG_TLS1_HOST/kiln/busybox:amd64"
	sk --all --format v2s2 "oci-archive:$0" "docker://$REG_TLS1_HOST/kiln/v2s2:multi"
	sk "oci-archive:$1" "docker://$REG_TLS1_HOST/kiln/moving:1"
	sk "oci-archive:$1" "docker://$REG_TOKEN_HOST/private/busybox:1"' "$multi" "$amd"
# raw REF: the digest of the registry's answer for REF (skopeo)
raw() {
	echo "sha256:$(skopeo inspect --raw --cert-dir "$REG_CERT_DIR" --creds "$REG_USER:$REG_PASSWORD" \
		"docker://$1" | sha256sum | cut -d' ' -f1)"
}
IDX=$(raw "$H/kiln/busybox:multi")
V2S2=$(raw "$H/kiln/v2s2:multi")
AMD=$(raw "$H/kiln/busybox:amd64")
idx_json=$(skopeo inspect --raw "oci-archive:$multi")
MAMD=$(jq -r '.manifests[] | select(.platform.architecture == "amd64") | .digest' <<<"$idx_json")
MARM=$(jq -r '.manifests[] | select(.platform.architecture == "arm64") | .digest' <<<"$idx_json")
LARM=$(tar -xOf "$multi" "blobs/sha256/${MARM#sha256:}" | jq -r '.layers | max_by(.size) | .digest')
LAMD=$(skopeo inspect --raw "oci-archive:$amd" | jq -r '.layers | max_by(.size) | .digest')
check_eq "seed: the registry keeps the archive's index" "$IDX" \
	"sha256:$(skopeo inspect --raw "oci-archive:$multi" | sha256sum | cut -d' ' -f1)"
check_eq "seed: the amd64 image is the index's amd64 manifest" "$AMD" "$MAMD"

# since MARK FILE: the lines of FILE after line MARK
since() { tail -n +"$(($1 + 1))" "$2"; }
lines() { wc -l <"$1"; }
verify() { check "$1: kiln doctor --verify is clean" kiln doctor --verify --root "$2"; }
# pull ROOT ARGS...: kiln pull into ROOT, its digest (stdout) in $T/digest
pull() {
	local root=$1
	shift
	kiln pull --root "$root" "$@" >"$T/digest"
}
dig() { cat "$T/digest"; }

# --- kiln pull ---------------------------------------------------------------------------------
r1=$T/r1
mark=$(lines "$REG_TLS1_ACCESS_LOG")
check "pull: the host's platform of a two-platform index" pull "$r1" "$H/kiln/busybox:multi"
check_eq "pull: prints the registry's digest" "$(dig)" "$IDX"
check_grep "pull: says what it fetched" "5 blobs pulled .*0 already present"
since "$mark" "$REG_TLS1_ACCESS_LOG" >"$T/log1"
check_nogrep "pull: the arm64 manifest and layer were never asked for" "$MARM|$LARM" "$T/log1"
check_grep "pull: the amd64 layer came by GET" "GET /v2/kiln/busybox/blobs/$LAMD" "$T/log1"
check "pull: kiln inspect" kiln inspect --root "$r1" "$H/kiln/busybox:multi"
check_grep "inspect: the platform not pulled is named" "^Not pulled: linux/arm64$"
check_grep "inspect: the amd64 manifest" "Manifest: $MAMD"
check "doctor --verify: clean with a partial image" kiln doctor --verify --root "$r1"
check_grep "doctor --verify: the arm64 blobs count as not pulled" "^not pulled: 1 blobs"
check_jq "store: the name lists the amd64 manifest as pulled" \
	".manifests[0].digest == \"$IDX\" and .manifests[0].annotations[\"kiln.pull.manifests\"] == \"$MAMD\"" "$r1/index.json"
check "pull --platform linux/arm64: the other platform" pull "$r1" --platform linux/arm64 "$H/kiln/busybox:multi"
check_jq "store: the image is complete, no annotation left" \
	".manifests[0].digest == \"$IDX\" and (.manifests[0].annotations | has(\"kiln.pull.manifests\") | not)" "$r1/index.json"
verify "complete" "$r1"
mark=$(lines "$REG_TLS1_ACCESS_LOG")
check "pull again: nothing to fetch" pull "$r1" --platform linux/amd64,linux/arm64 "$H/kiln/busybox:multi"
check_grep "pull again: 0 blobs pulled" "0 blobs pulled"
check_eq "pull again: one HEAD, no GET" "$(since "$mark" "$REG_TLS1_ACCESS_LOG" | grep -c '"GET /v2/kiln')" 0

r2=$T/r2
check "pull --all-platforms -o type=oci,dest=FILE (an archive to carry)" \
	pull "$r2" --all-platforms -o "type=oci,dest=$T/all.tar" "$H/kiln/busybox:multi"
check_eq "archive: skopeo reads the registry's index, byte for byte" \
	"sha256:$(skopeo inspect --raw "oci-archive:$T/all.tar" | sha256sum | cut -d' ' -f1)" "$IDX"
check "archive: skopeo copies every platform out of it" skopeo copy -q --all "oci-archive:$T/all.tar" "oci:$T/all-layout:x"
check "archive: kiln load reads it in another root" kiln load --root "$T/r2b" "$T/all.tar"
check_grep "archive: ... under the pulled name" "Loaded image: $H/kiln/busybox:multi"
check "pull --platform linux/arm64 -o: one platform's archive" \
	pull "$r2" --platform linux/arm64 -o "type=oci,dest=$T/arm.tar" "$H/kiln/busybox:multi"
check_eq "archive of one platform: its manifest, as skopeo copies one platform" \
	"sha256:$(skopeo inspect --raw "oci-archive:$T/arm.tar" | sha256sum | cut -d' ' -f1)" "$MARM"
check "pull -o type=docker: a docker-archive" pull "$r2" -o "type=docker,dest=$T/amd.docker.tar" "$H/kiln/busybox:multi"
check "docker-archive: skopeo reads it" skopeo inspect "docker-archive:$T/amd.docker.tar"
check "pull: Docker schema 2 manifest list, all platforms" pull "$r2" --all-platforms "$H/kiln/v2s2:multi"
check_eq "schema 2: the registry's digest" "$(dig)" "$V2S2"
check "schema 2: kiln inspect --json" kiln inspect --json --root "$r2" "$H/kiln/v2s2:multi"
check_jq "schema 2: stored as the Docker list it is" \
	'.mediaType == "application/vnd.docker.distribution.manifest.list.v2+json" and (.platforms | length) == 2' "$OUT"
check "pull: an image that is one manifest" pull "$r2" "$H/kiln/busybox:amd64"
check_eq "one manifest: its digest" "$(dig)" "$AMD"
verify "after the pulls" "$r2"
check_fail "pull: an unknown tag is an error naming it" 1 "kiln/busybox: manifest 'nope' not found" \
	kiln pull --root "$r2" "$H/kiln/busybox:nope"
check_fail "pull: a platform the image lacks lists those it has" 1 \
	"no manifest for linux/s390x \(available: linux/amd64, linux/arm64" kiln pull --root "$r2" --platform linux/s390x "$H/kiln/busybox:multi"
check_fail "pull: --platform and --all-platforms exclude each other" 2 "exclude each other" \
	kiln pull --root "$r2" --all-platforms --platform linux/amd64 "$H/kiln/busybox:multi"

# --- FROM: store, then registry; --pull -----------------------------------------------------------
ctx=$(newdir ctx)
df() { printf '%s\n' "$@" >"$ctx/Dockerfile"; }
build() { kiln build --progress plain "$@" "$ctx"; }
rb=$T/rb
df "FROM $H/kiln/busybox:multi" "RUN test -x /bin/busybox"
mark=$(lines "$REG_TLS1_ACCESS_LOG")
check "FROM: pulled from tls1 with htpasswd credentials from docker's config.json" \
	build --root "$rb" --report "$T/rep1.json"
check_jq "report: the base's registry digest, platform and manifest" \
	".bases == [{\"stage\": \"stage-0\", \"ref\": \"$H/kiln/busybox:multi\", \"platform\": \"linux/amd64\",
	  \"digest\": \"$IDX\", \"manifest\": \"$MAMD\", \"source\": \"registry\"}]" "$T/rep1.json"
check_nogrep "FROM: only the platform the build needs was fetched" "$MARM|$LARM" <(since "$mark" "$REG_TLS1_ACCESS_LOG")
mark=$(lines "$REG_TLS1_ACCESS_LOG")
check "--pull=missing (default): the store has it" build --root "$rb" --report "$T/rep2.json"
check_jq "report: ... source store" '.bases[0].source == "store" and .bases[0].digest == "'"$IDX"'"' "$T/rep2.json"
check_eq "--pull=missing: no request reached the registry" "$(since "$mark" "$REG_TLS1_ACCESS_LOG" | wc -l)" 0
check "--pull=never: the store is enough" build --root "$rb" --pull=never
check_fail "--pull=never: an image not in the store is an error naming it and how to load it" 1 \
	"FROM: image '$H/kiln/busybox:multi' is not in the local store, and --pull=never .*kiln load FILE" \
	build --root "$T/rempty" --pull=never
check_fail "--pull: a bad policy is a usage error" 2 "--pull takes missing, always or never" build --root "$rb" --pull=sometimes
df "FROM $H/kiln/busybox:multi" "ENV A=1"
check "two platforms: the missing one is fetched" build --root "$rb" --platform linux/amd64,linux/arm64 --report "$T/rep3.json"
check_jq "report: a base per platform" \
	"[.bases[] | [.platform, .manifest, .source]] == [[\"linux/amd64\", \"$MAMD\", \"store\"], [\"linux/arm64\", \"$MARM\", \"registry\"]] or
	 [.bases[] | [.platform, .manifest, .source]] == [[\"linux/arm64\", \"$MARM\", \"registry\"], [\"linux/amd64\", \"$MAMD\", \"store\"]]" "$T/rep3.json"
check_jq "store: the base is complete now" '[.manifests[] | select(.annotations["kiln.pull.manifests"])] | length == 0' "$rb/index.json"
verify "builds" "$rb"

# --pull=always: a moved tag is noticed; blobs already present are not fetched again
df "FROM $H/kiln/moving:1" "ENV B=1"
check "moving tag: first build" build --root "$rb" --report "$T/rep4.json"
check_jq "moving tag: the single manifest" ".bases[0].digest == \"$AMD\"" "$T/rep4.json"
check "moving tag: skopeo pushes the two-platform index to the same tag" skopeo copy -q --all \
	--dest-cert-dir "$REG_CERT_DIR" --dest-creds "$REG_USER:$REG_PASSWORD" "oci-archive:$multi" "docker://$H/kiln/moving:1"
check "moving tag: --pull=missing keeps the store's" build --root "$rb" --report "$T/rep5.json"
check_jq "moving tag: ... the old digest" ".bases[0].digest == \"$AMD\" and .bases[0].source == \"store\"" "$T/rep5.json"
mark=$(lines "$REG_TLS1_ACCESS_LOG")
check "moving tag: --pull=always asks the registry" build --root "$rb" --pull=always --report "$T/rep6.json"
check_jq "moving tag: ... the new digest" ".bases[0].digest == \"$IDX\" and .bases[0].source == \"registry\"" "$T/rep6.json"
since "$mark" "$REG_TLS1_ACCESS_LOG" >"$T/log6"
check_grep "--pull=always: a HEAD of the tag" '"HEAD /v2/kiln/moving/manifests/1 ' "$T/log6"
check_eq "--pull=always: no blob downloaded again (the layers were in the store)" "$(grep -c '"GET /v2/kiln/moving/blobs/' "$T/log6")" 0
check_jq "moving tag: the store name moved" ".manifests[] | select(.annotations[\"org.opencontainers.image.ref.name\"] == \"$H/kiln/moving:1\") | .digest == \"$IDX\"" "$rb/index.json"

# FROM by digest; docker-image:// contexts; COPY --from an image; Docker schema 2
rd=$T/rd
df "FROM $H/kiln/busybox@$IDX" "RUN test -x /bin/busybox"
check "FROM NAME@sha256:INDEX pulls by digest" build --root "$rd" --report "$T/rep7.json"
check_jq "by digest: the report" ".bases[0].digest == \"$IDX\" and .bases[0].ref == \"$H/kiln/busybox@$IDX\"" "$T/rep7.json"
check "by digest: no name in the store" kiln images --root "$rd"
check_nogrep "by digest: ... kiln images lists none" "$H"
df "FROM base" "COPY --from=$H/kiln/v2s2:multi /bin/busybox /copied/busybox" "RUN /copied/busybox true"
check "--build-context base=docker-image://REF and COPY --from a schema 2 list" \
	build --root "$rd" --build-context "base=docker-image://$H/kiln/busybox:amd64" --report "$T/rep8.json"
check_jq "docker-image:// and COPY --from: both bases in the report" \
	"[.bases[] | [.ref, .digest, .source]] == [[\"$H/kiln/busybox:amd64\", \"$AMD\", \"registry\"], [\"$H/kiln/v2s2:multi\", \"$V2S2\", \"registry\"]]" "$T/rep8.json"
verify "by digest and contexts" "$rd"

# the token registry: a private image, credentials from docker-credential-kilntest
df "FROM $REG_TOKEN_HOST/private/busybox:1" "RUN test -x /bin/busybox"
: >"$KILNTEST_CREDS_LOG"
check "FROM a private image on the token registry (credential helper)" build --root "$T/rt"
check_grep "credential helper: asked for the token registry" "^get $REG_TOKEN_HOST\$" "$KILNTEST_CREDS_LOG"
check_fail "FROM the private image without credentials: refused" 1 "not in the local store and pulling it failed: .*(denied|authentication|unauthorized)" \
	env DOCKER_CONFIG="$T/nocreds" "$KILN" build --progress plain --root "$T/rt2" "$ctx"

# --- mirrors: registry.test does not resolve; tls1 holds its images ------------------------------
printf '{"registries": {"%s": {"mirrors": ["%s"]}}}\n' "$REG_TLS_NAME" "$H" >"$T/mirror.json"
df "FROM $REG_TLS_NAME/kiln/busybox:multi" "RUN test -x /bin/busybox"
check "mirror: FROM $REG_TLS_NAME/... through the config's mirror" \
	env KILN_CONFIG="$T/mirror.json" "$KILN" build --progress plain --root "$T/rm" --report "$T/rep9.json" "$ctx"
check_jq "mirror: the report names the image as written, with the mirror's digest" \
	".bases[0].ref == \"$REG_TLS_NAME/kiln/busybox:multi\" and .bases[0].digest == \"$IDX\"" "$T/rep9.json"
check "mirror: the store names it $REG_TLS_NAME/..." kiln images --root "$T/rm"
check_grep "mirror: ... in kiln images" "^$REG_TLS_NAME/kiln/busybox:multi "
printf '{"registries": {"%s": {"mirrors": ["%s"], "mirror-only": true}}}\n' "$REG_TLS_NAME" "$H" >"$T/mirror-only.json"
df "FROM $REG_TLS_NAME/kiln/busybox:amd64" "RUN test -x /bin/busybox"
check "mirror-only: served by the mirror" env KILN_CONFIG="$T/mirror-only.json" "$KILN" build --progress plain --root "$T/rm2" "$ctx"
df "FROM $REG_TLS_NAME/kiln/absent:1"
check_fail "mirror-only: an image the mirror lacks fails on the mirror" 1 "$H/kiln/absent: manifest '1' not found" \
	env KILN_CONFIG="$T/mirror-only.json" "$KILN" build --progress plain --root "$T/rm2" "$ctx"
check_nogrep "mirror-only: the upstream was never tried" "tried before|$REG_TLS_NAME/v2|resolve"
check_fail "without mirror-only the upstream is tried after the mirror" 1 "Could not resolve host: $REG_TLS_NAME" \
	env KILN_CONFIG="$T/mirror.json" "$KILN" build --progress plain --root "$T/rm2" "$ctx"
check "--registry-mirror on kiln pull" pull "$T/rm3" --registry-mirror "$REG_TLS_NAME=$H" "$REG_TLS_NAME/kiln/busybox:multi"
check_eq "--registry-mirror: the digest" "$(dig)" "$IDX"

# --- faults through the proxy ---------------------------------------------------------------------
rules() { printf '%s\n' "$1" >"$REG_PROXY_P1_RULES.tmp" && mv "$REG_PROXY_P1_RULES.tmp" "$REG_PROXY_P1_RULES"; }
plog() { jq -s -c "$1" "$REG_PROXY_P1_LOG"; }
blob_rule() { rules "[{\"fault\": \"$1\", \"path\": \"/blobs/$LAMD\", \"method\": \"GET\"${2:+, $2}}]"; }
rf=$T/rf
blob_rule status '"status": 503, "times": 2'
check "fault 503 x2 on the layer: the pull retries and succeeds" pull "$rf/a" "$P/kiln/busybox:amd64"
check_eq "fault 503: the proxy saw 503, 503, 200" "$(plog "[.[] | select(.target | endswith(\"$LAMD\")) | .status]")" '[503,503,200]'
rules '[{"fault": "status", "status": 429, "retry_after": 1, "path": "/manifests/", "times": 1}]'
start=$(date +%s%N)
check "fault 429 with Retry-After: 1 on the manifest: waits and succeeds" pull "$rf/b" "$P/kiln/busybox:amd64"
check "fault 429: waited at least the second Retry-After asked" test $(($(date +%s%N) - start)) -ge 1000000000
blob_rule cut_response '"times": 1'
check "fault: the connection cut mid-blob: resumed" pull "$rf/c" "$P/kiln/busybox:amd64"
blob_rule flip '"times": 1'
check "fault: a flipped byte once: downloaded again" pull "$rf/d" "$P/kiln/busybox:amd64"
blob_rule flip
check_fail "fault: a flipped byte every time: fails naming the digest" 1 "blob $LAMD.*digest" pull "$rf/e" "$P/kiln/busybox:amd64"
check_eq "fault: no blob under the layer's name" "$(test -e "$rf/e/blobs/sha256/${LAMD#sha256:}" && echo yes || echo no)" no
check_eq "fault: no name set" "$(jq '.manifests | length' "$rf/e/index.json")" 0
verify "after the failed pull" "$rf/e"
rules '[]'
check "fault: the next pull completes" pull "$rf/e" "$P/kiln/busybox:amd64"
verify "after the faults" "$rf/e"

# SIGKILL while a layer downloads (the proxy holds it back): once for a new image, once while a
# second platform of a named, partial image comes in
rk=$T/rk
killed_pull() { # ROOT ARGS...: starts kiln pull, kills it with SIGKILL once its blob writer exists
	local root=$1 pid i seen=0
	shift
	rm -rf "$root/tmp"/blob-* 2>/dev/null
	"$KILN" pull -q --root "$root" "$@" >/dev/null 2>&1 &
	pid=$!
	# The held-back layer's temp file stays; a manifest's or config's is gone a moment later:
	# wait until one has been there for three looks in a row.
	for i in $(seq 1 300); do
		if ls "$root"/tmp/blob-* >/dev/null 2>&1; then
			seen=$((seen + 1))
			[ "$seen" -ge 3 ] && break
		else
			seen=0
		fi
		sleep 0.05
	done
	kill -KILL "$pid"
	wait "$pid" 2>/dev/null
	ls "$root"/tmp/blob-* >/dev/null 2>&1
}
blob_rule delay '"seconds": 30'
check "SIGKILL during a layer's download" killed_pull "$rk" "$P/kiln/busybox:amd64"
verify "after SIGKILL" "$rk"
rules '[]'
check "SIGKILL: the pull runs again to the end" pull "$rk" "$P/kiln/busybox:amd64"
check_eq "SIGKILL: the digest" "$(dig)" "$AMD"
verify "after the rerun" "$rk"
check "partial image: amd64 of the index" pull "$rk" "$P/kiln/busybox:multi"
rules "[{\"fault\": \"delay\", \"seconds\": 30, \"path\": \"/blobs/$LARM\", \"method\": \"GET\"}]"
check "SIGKILL while arm64 comes in" killed_pull "$rk" --platform linux/arm64 "$P/kiln/busybox:multi"
verify "partial image after SIGKILL" "$rk"
check_jq "partial image: still only amd64 listed" \
	".manifests[] | select(.digest == \"$IDX\") | .annotations[\"kiln.pull.manifests\"] == \"$MAMD\"" "$rk/index.json"
rules '[]'
check "partial image: the arm64 pull completes" pull "$rk" --platform linux/arm64 "$P/kiln/busybox:multi"
verify "partial image completed" "$rk"
finish
