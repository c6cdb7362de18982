#!/usr/bin/env bash
# Runs every libFuzzer target for a while (default 60 s each) on the parsers of untrusted input:
# Dockerfile, .dockerignore, the word expander, layer tars, OCI manifests/indexes/configs, image
# archives (oci-archive and docker-archive, walked as kiln load walks them). Not part of test.sh
# (it takes minutes); a crash it finds is saved under build-fuzz/crashes/ and becomes a unit test.
#
# Usage: [KILN_SKIP_DEPS=1] scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(fuzz-dockerfile fuzz-dockerignore fuzz-expand fuzz-layer fuzz-oci fuzz-import fuzz-registry)
build=build-fuzz

if [ "${KILN_SKIP_DEPS:-}" != 1 ]; then
	scripts/install-deps.sh
	command -v clang >/dev/null || { apt-get install -y -q clang >/dev/null; }
	dpkg -s libclang-rt-14-dev >/dev/null 2>&1 || apt-get install -y -q libclang-rt-14-dev >/dev/null
fi
if [ ! -f "$build/build.ninja" ]; then
	CC=clang meson setup "$build" -Dfuzz=true -Dbuildtype=debugoptimized >/dev/null
fi
ninja -C "$build" "${targets[@]/#/tests/}" >/dev/null

# Seeds: the repo's own Dockerfiles and ignore files, plus small generated layers and manifests.
seeds=$build/seeds
mkdir -p "$seeds"/{fuzz-dockerfile,fuzz-dockerignore,fuzz-expand,fuzz-layer,fuzz-oci,fuzz-import,fuzz-registry} "$build/crashes"
# fuzz-registry: a kind byte (0 challenges, 1 config, 2 names, 3 base64), then the text
printf '\000Bearer realm="https://a/t?x=\\"y\\"",service="s", Basic realm=r\nNegotiate abc==' >"$seeds/fuzz-registry/challenge"
printf '\001{"registries": {"docker.io": {"mirrors": ["m.io:5000/p"], "mirror-only": true, "insecure": false, "ca": "/c"}}}' >"$seeds/fuzz-registry/config"
printf '\002https://index.docker.io/v1/=m.io:5000/prefix' >"$seeds/fuzz-registry/names"
printf '\003dXNlcjpwYXNz' >"$seeds/fuzz-registry/base64"
find examples tests -name 'Dockerfile*' -type f -exec cp {} "$seeds/fuzz-dockerfile/" \; 2>/dev/null || true
printf '*.log\n!keep.log\n**/tmp\n/abs\n[a-c]?\n' >"$seeds/fuzz-dockerignore/basic"
# expander seeds: escape-choice byte, the word, NUL, the value of V
printf '\\${V//*b/c} "${A:-x}" ${P##*/}\0aaab' >"$seeds/fuzz-expand/modifiers"
printf '\\${V:+${V:-${E:?e}}}${V%%%%[!a-c]?}\0abc' >"$seeds/fuzz-expand/nested"
printf '`${V/`*/x} "`$A" $V\0a*b c' >"$seeds/fuzz-expand/backtick"
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}' \
	>"$seeds/fuzz-oci/index"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/t/d" && echo hi >"$tmp/t/d/f" && ln -s f "$tmp/t/d/l"
tar -C "$tmp/t" -cf "$seeds/fuzz-layer/plain.tar" d
tar -C "$tmp/t" -czf "$seeds/fuzz-layer/gzip.tar" d
# fuzz-import: a kind byte (0 oci-archive, 1 docker-archive, 2 detected), then the archive: an
# OCI index listing a nested index twice, and a docker-archive of the same image
python3 - "$seeds/fuzz-import" <<'PY'
import hashlib, io, json, sys, tarfile
out = sys.argv[1]
def tar(files):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as t:
        for name, data in files:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()
def j(o):
    return json.dumps(o, separators=(",", ":")).encode()
def d(mt, data, **kw):
    return dict(mediaType=mt, digest="sha256:" + hashlib.sha256(data).hexdigest(), size=len(data), **kw)
layer = tar([("hello", b"hi\n")])
config = j({"architecture": "amd64", "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [d("x", layer)["digest"]]}})
manifest = j({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
              "config": d("application/vnd.oci.image.config.v1+json", config),
              "layers": [d("application/vnd.oci.image.layer.v1.tar", layer)]})
plat = {"architecture": "amd64", "os": "linux"}
inner = j({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
           "manifests": [d("application/vnd.oci.image.manifest.v1+json", manifest, platform=plat)]})
outer = j({"schemaVersion": 2, "manifests": [d("application/vnd.oci.image.index.v1+json", inner)] * 2})
blobs = [("blobs/sha256/" + hashlib.sha256(b).hexdigest(), b) for b in (layer, config, manifest, inner, outer)]
index = j({"schemaVersion": 2, "manifests": [d("application/vnd.oci.image.index.v1+json", outer,
            annotations={"org.opencontainers.image.ref.name": "1"})]})
oci = tar([("oci-layout", j({"imageLayoutVersion": "1.0.0"})), ("index.json", index)] + blobs)
docker = tar([("manifest.json", j([{"Config": "c.json", "RepoTags": ["a:1"], "Layers": ["l/layer.tar"]}])),
              ("c.json", config), ("l/layer.tar", layer)])
for name, kind, data in (("oci", 0, oci), ("docker", 1, docker), ("auto", 2, oci)):
    open(f"{out}/{name}", "wb").write(bytes([kind]) + data)
PY

status=0
for t in "${targets[@]}"; do
	echo "== $t: ${secs}s"
	mkdir -p "$build/corpus-$t"
	if ! "$build/tests/$t" -max_total_time="$secs" -print_final_stats=1 \
		-artifact_prefix="$build/crashes/$t-" "$build/corpus-$t" "$seeds/$t" \
		>"$build/$t.log" 2>&1; then
		echo "$t: FAILED (see $build/$t.log and $build/crashes/)"
		status=1
	fi
	grep -E '^stat::number_of_executed_units|^#[0-9]+ +DONE' "$build/$t.log" | tail -n 2 || true
done
exit $status
