#!/usr/bin/env bash
# The registry cache (issue 9 item 8) against a real registry (tests/registry: Debian's
# docker-registry with TLS from the suite's CA and htpasswd auth; credentials from a docker
# config.json, the CA through --tls-ca), on a two-platform (linux/amd64 + linux/arm64 under QEMU)
# two-stage build from the busybox-multi fixture:
#   - root A exports --cache-to type=registry mode=max and mode=min (two --cache-to at once);
#     `skopeo inspect --raw` shows an OCI artifact: artifactType, the config's own media type;
#   - an EMPTY root B with --cache-from the max cache: every step hits (hit rate 1.0, no RUN),
#     same index digest; its own export of the same entries uploads nothing and gives the same
#     manifest digest;
#   - an empty root C with the min cache: the final stage hits, the build stage's RUN runs;
#   - lazily fetched: a --target build on an empty root GETs only the blobs of the steps it hits;
#     its export to another repository of the registry mounts the blobs;
#   - a cache source that does not exist, a local --cache-from dir that is missing or empty, an
#     empty registry cache, a plain image under the cache ref, a refused login and a registry that
#     does not answer are warnings: the build succeeds;
#   - a layer blob the registry serves damaged: a warning, that step runs, the store stays clean;
#   - a --cache-to that fails fails the build, unless ignore-error=true.
#
# Needs the two-platform base busybox-multi.oci.tar (tests/fixtures/cached.sh amd64 arm64).
# shellcheck disable=SC2034 # read by lib.sh
FIX_PLATFORMS="amd64 arm64"
. "$(dirname "$0")/lib.sh"
require_userns
require_multi_base

R=$(cd "$_here/../registry" && pwd)
reg=$T/reg
trap '"$R/stop.sh" "$reg" >/dev/null 2>&1; _cleanup' EXIT
check "start the registry (tls1)" env REG_INSTANCES=tls1 "$R/start.sh" "$reg" || finish
# shellcheck disable=SC1091
. "$reg/env"

# kiln sees only what the test gives it: credentials in a docker config.json of its own.
export HOME=$T/home KILN_CONFIG=$T/kiln-config.json KILN_CERTS_DIRS=$T/certs.d
unset REGISTRY_AUTH_FILE XDG_RUNTIME_DIR XDG_CONFIG_HOME SSL_CERT_FILE SSL_CERT_DIR
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY ALL_PROXY all_proxy NO_PROXY no_proxy
mkdir -p "$HOME" "$KILN_CERTS_DIRS" "$T/docker" "$T/nocreds"
echo '{}' >"$KILN_CONFIG"
echo '{}' >"$T/nocreds/config.json"
printf '{"auths": {"%s": {"auth": "%s"}}}\n' "$REG_TLS1_HOST" \
	"$(printf '%s:%s' "$REG_USER" "$REG_PASSWORD" | base64 -w0)" >"$T/docker/config.json"
export DOCKER_CONFIG=$T/docker
H=$REG_TLS1_HOST
main=$H/cache/app:main
log=$REG_TLS1_ACCESS_LOG
count() { "$R/accesslog.sh" "$1" "$log" "${2:-0}"; }
lines() { wc -l <"$log"; }

# --- the workload (t-cache.sh's): build stage lines 2-4, final stage lines 7-12 -----------------
ctx=$(newdir ctx)
mkdir -p "$ctx/src" "$ctx/lib"
echo "alpha" >"$ctx/src/a.txt"
echo "x" >"$ctx/lib/x.txt"
cat >"$ctx/Dockerfile" <<'DF'
FROM busybox AS build
ARG TARGETARCH
COPY lib /lib-src
RUN uname -m > /built.txt && echo "$TARGETARCH" >> /built.txt && cat /lib-src/*.txt >> /built.txt

FROM busybox
ARG VERSION=1
COPY --from=build /built.txt /app/built.txt
COPY src /app/src
RUN cat /app/src/a.txt /app/built.txt > /app/summary.txt && echo "v$VERSION" >> /app/summary.txt
ENV APP_MODE=release
CMD ["cat", "/app/summary.txt"]
DF
n_steps=18 # 9 per platform (FROM is not a step)

o=$(newdir out)
# build ROOT NAME [options]: builds ctx into $o/NAME.tar with report $o/NAME.json
build() {
	local root=$1 name=$2
	shift 2
	rm -f "$o/$name.tar" "$o/$name.json"
	kiln build --root "$root" --platform linux/amd64,linux/arm64 --tls-ca "$REG_CA" \
		--build-context "busybox=oci-archive:$base" --report "$o/$name.json" "$@" \
		-o "type=oci,dest=$o/$name.tar" "$ctx"
}
index_digest() { skopeo inspect --raw "oci-archive:$1" 2>/dev/null | sha256sum | cut -d' ' -f1; }
skopeo_raw() {
	skopeo inspect --raw --cert-dir "$REG_CERT_DIR" --creds "$REG_USER:$REG_PASSWORD" "docker://$1"
}
full_hit() {
	check_jq "$1: every step hit (hit rate 1.0, runs_executed 0, $n_steps steps)" \
		".totals.cache_hit_rate == 1 and .totals.cache_hits == $n_steps and .totals.steps == $n_steps
		and .totals.runs_executed == 0 and ([.steps[] | select(.cached | not)] | length == 0)" "$o/$1.json"
}

# --- root A: export max and min ---------------------------------------------------------------
RA=$T/ra
if check "root A: cold build exporting mode=max and mode=min to the registry" build "$RA" cold \
	--cache-to "type=registry,ref=$main,mode=max" --cache-to "type=registry,ref=$H/cache/app:min,mode=min"; then
	check_grep "root A: says what it exported (max)" "exporting cache to $main: [0-9]+ entries \(mode=max\), blobs: [1-9][0-9]* uploaded"
	check_grep "root A: says what it exported (min)" "exporting cache to $H/cache/app:min: [0-9]+ entries \(mode=min\)"
fi
cold=$(index_digest "$o/cold.tar")
check "skopeo inspect --raw of the cache ref" skopeo_raw "$main"
cp "$OUT" "$T/main.json"
check_jq "the cache is an OCI artifact: image manifest, kiln's artifactType and config media type" \
	'.schemaVersion == 2 and .mediaType == "application/vnd.oci.image.manifest.v1+json"
	and .artifactType == "application/vnd.kiln.build-cache.v1"
	and .config.mediaType == "application/vnd.kiln.build-cache.config.v1+json"
	and (.layers | length >= 6) and all(.layers[]; .mediaType | startswith("application/vnd.oci.image.layer.v1.tar"))' \
	"$T/main.json"
main_digest=sha256:$(skopeo_raw "$main" | sha256sum | cut -d' ' -f1)
cfg=$(jq -r .config.digest "$T/main.json")
check "the config blob reads back" bash -c 'curl -sf --cacert "$REG_CA" -u "$REG_USER:$REG_PASSWORD" \
	"$REG_TLS1_URL/v2/cache/app/blobs/$0" >"$1"' "$cfg" "$T/config.json"
check_jq "the config lists step keys and layer descriptors, and nothing else" \
	'.version == 1 and (.entries | length > 0) and ([.entries[] | keys[]] | unique == ["layer"])
	and all(.entries[].layer | select(. != null); keys == ["diff_id", "digest", "mediaType", "size"])' "$T/config.json"
check_eq "the config names only layers of the manifest" \
	"$(jq -r '[.entries[].layer | select(. != null) | .digest] | unique | .[]' "$T/config.json")" \
	"$(jq -r '[.layers[].digest] | unique | .[]' "$T/main.json")"

# --- root B: empty, every step hits from the registry ------------------------------------------
RB=$T/rb
if check "root B (empty): --cache-from the max cache, re-exported" build "$RB" fromreg \
	--cache-from "type=registry,ref=$main" --cache-to "type=registry,ref=$main,mode=max"; then
	full_hit fromreg
	check_eq "root B: same index digest as root A" "$(index_digest "$o/fromreg.tar")" "$cold"
	check_grep "root B: the import says how many entries" "importing cache from $main: [0-9]+ entries"
	check_grep "root B: re-export of the same entries uploads no blob" "exporting cache to $main: .* 0 uploaded, 0 mounted, [0-9]+ already there; manifest $main_digest"
fi

# --- root C: empty, the min cache: the build stage's RUN runs ------------------------------------
if check "root C (empty): --cache-from the min cache" build "$T/rc" frommin --cache-from "$H/cache/app:min"; then
	check_jq "min: every final-stage step hit" '[.steps[] | select(.line >= 7)] | length == 12 and all(.cached)' "$o/frommin.json"
	check_jq "min: the build stage's RUN missed on both platforms (min leaves it out)" \
		'[.steps[] | select(.stage == "build" and (.instruction | startswith("RUN")))] | length == 2 and all(.cached | not)' \
		"$o/frommin.json"
	check_eq "min: same index digest" "$(index_digest "$o/frommin.tar")" "$cold"
fi

# --- lazily fetched; an export to another repository mounts ------------------------------------
skip_lines=$(lines)
if check "root D (empty): --target build from the max cache, exported to cache/other" build "$T/rd" target \
	--target build --cache-from "type=registry,ref=$main" --cache-to "type=registry,ref=$H/cache/other:t,mode=max"; then
	cp "$OUT" "$T/target.out"
	# the COPY layer is the same on both platforms: fetched once
	hit=$(jq '[.steps[] | select(.cached and .layer != null) | .layer.digest] | unique | length' "$o/target.json")
	check_eq "lazy: blob GETs = the config + each distinct layer of the steps hit, once" \
		"$(count blob-gets "$skip_lines")" "$((hit + 1))"
	check "lazy: fewer layers than the cache holds" test "$hit" -lt "$(jq '.layers | length' "$T/main.json")"
	check_grep "mount: the export to cache/other mounted its layers from cache/app (its config is new)" \
		"exporting cache to $H/cache/other:t: [0-9]+ entries \(mode=max\), blobs: 1 uploaded, $hit mounted, 0 already there" "$T/target.out"
	check_eq "mount: the registry's log shows the mounts" "$(count mounts "$skip_lines")" "$hit"
fi

# --- sources that are missing or unreadable are warnings -----------------------------------------
check "a cache ref that does not exist: the build goes on" build "$RA" nope --cache-from "type=registry,ref=$H/cache/app:nope"
check_grep "... with a warning naming it" "warning: cache import from '$H/cache/app:nope' failed, building without it: .*not found"
check "a local --cache-from dir that does not exist: the build goes on" build "$RA" nodir --cache-from "type=local,src=$T/no-such-dir"
check_grep "... with a warning naming it" "warning: cache import from '$T/no-such-dir' failed, building without it: .*No such file"
mkdir -p "$T/empty-dir"
check "an empty local --cache-from dir: the build goes on" build "$RA" emptydir --cache-from "type=local,src=$T/empty-dir"
check_grep "... with a warning: not a kiln cache" "warning: cache import from '$T/empty-dir' failed, building without it: .*kiln-cache.json' is missing: not a kiln cache"
ectx=$(newdir ectx)
echo "FROM busybox" >"$ectx/Dockerfile"
check "a build without steps exports an empty cache (the empty descriptor as its layer)" kiln build --root "$RA" \
	--tls-ca "$REG_CA" --build-context "busybox=oci-archive:$FIX/busybox-amd64.oci.tar" \
	--cache-to "type=registry,ref=$H/cache/empty:t" "$ectx"
check "skopeo reads the empty cache" skopeo_raw "$H/cache/empty:t"
check_jq "... its one layer is the empty descriptor" '.layers == [{"mediaType": "application/vnd.oci.empty.v1+json",
	"digest": "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a", "size": 2}]' "$OUT"
check "an empty cache: the build goes on" build "$RA" emptyreg --cache-from "type=registry,ref=$H/cache/empty:t"
check_grep "... with a warning" "warning: cache '$H/cache/empty:t' holds no entries"
check "seed: a plain image under a cache ref (skopeo)" skopeo copy -q --dest-cert-dir "$REG_CERT_DIR" \
	--dest-creds "$REG_USER:$REG_PASSWORD" "oci-archive:$FIX/busybox-amd64.oci.tar" "docker://$H/cache/app:plain"
check "a plain image as the cache: the build goes on" build "$RA" plain --cache-from "type=registry,ref=$H/cache/app:plain"
check_grep "... with a warning: not a kiln build cache" "warning: cache import from '$H/cache/app:plain' failed, building without it: not a kiln build cache"
check "no credentials for the cache: the build goes on" env DOCKER_CONFIG="$T/nocreds" "$KILN" build --root "$RA" \
	--tls-ca "$REG_CA" --build-context "busybox=oci-archive:$base" --platform linux/amd64,linux/arm64 \
	--cache-from "type=registry,ref=$main" "$ctx"
check_grep "... with a warning: authentication required" "warning: cache import from '$main' failed, building without it: .*authentication required"
check "a registry that does not answer: the build goes on" build "$RA" down --cache-from "127.0.0.1:1/cache/app:main"
check_grep "... with a warning" "warning: cache import from '127.0.0.1:1/cache/app:main' failed, building without it: .*connect"

# --- a failing export ---------------------------------------------------------------------
check_fail "--cache-to refused: the build fails" 1 "cache export to '$H/cache/app:denied': .*authentication required" \
	env DOCKER_CONFIG="$T/nocreds" "$KILN" build --root "$RA" --tls-ca "$REG_CA" \
	--build-context "busybox=oci-archive:$base" --platform linux/amd64,linux/arm64 \
	--cache-to "type=registry,ref=$H/cache/app:denied" "$ctx"
check "--cache-to refused with ignore-error=true: the build succeeds" \
	env DOCKER_CONFIG="$T/nocreds" "$KILN" build --root "$RA" --tls-ca "$REG_CA" \
	--build-context "busybox=oci-archive:$base" --platform linux/amd64,linux/arm64 \
	--cache-to "type=registry,ref=$H/cache/app:denied,ignore-error=true" "$ctx"
check_grep "... with a warning" "warning: cache export to '$H/cache/app:denied' failed \(ignore-error=true\): .*authentication required"

# --- a layer blob the registry serves damaged: never stored, the step runs ------------------------
lost=$(jq -r '.steps[] | select(.line == 4 and .platform == "linux/amd64") | .layer.digest' "$o/cold.json")
hex=${lost#sha256:}
check "seed: flip a byte of a cached layer in the registry's storage" python3 -c '
import sys
with open(sys.argv[1], "r+b") as f:
    f.seek(20); b = f.read(1); f.seek(20); f.write(bytes([b[0] ^ 1]))' \
	"$REG_TLS1_DATA/docker/registry/v2/blobs/sha256/${hex:0:2}/$hex/data"
if check "root E (empty): a damaged cache blob: the build goes on" build "$T/re" damaged --cache-from "type=registry,ref=$main"; then
	check_grep "... with a warning naming the source and the blob" "warning: cache '$main' \(not asked again\): fetch $lost"
	check_jq "damaged: that step ran" '[.steps[] | select(.line == 4 and .platform == "linux/amd64")] | length == 1 and all(.cached | not)' "$o/damaged.json"
	check_eq "damaged: same index digest" "$(index_digest "$o/damaged.tar")" "$cold"
	check "damaged: nothing bad entered the store (doctor --verify)" kiln doctor --verify --root "$T/re"
fi

check_fail "--cache-to with a digest is a usage error" 2 "names a digest: it needs a tag" \
	kiln build --root "$RA" --cache-to "type=registry,ref=$H/cache/app@$main_digest" "$ctx"
finish
