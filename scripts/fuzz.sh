#!/usr/bin/env bash
# Runs every libFuzzer target for a while (default 60 s each) on the parsers of untrusted input:
# Dockerfile, .dockerignore, the word expander, layer tars, OCI manifests/indexes/configs. Not
# part of test.sh (it takes minutes); a crash it finds is saved under build-fuzz/crashes/ and
# becomes a unit test.
#
# Usage: scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(fuzz-dockerfile fuzz-dockerignore fuzz-expand fuzz-layer fuzz-oci)
build=build-fuzz

scripts/install-deps.sh
command -v clang >/dev/null || { apt-get install -y -q clang >/dev/null; }
dpkg -s libclang-rt-14-dev >/dev/null 2>&1 || apt-get install -y -q libclang-rt-14-dev >/dev/null
if [ ! -f "$build/build.ninja" ]; then
	CC=clang meson setup "$build" -Dfuzz=true -Dbuildtype=debugoptimized >/dev/null
fi
ninja -C "$build" "${targets[@]/#/tests/}" >/dev/null

# Seeds: the repo's own Dockerfiles and ignore files, plus small generated layers and manifests.
seeds=$build/seeds
mkdir -p "$seeds"/{fuzz-dockerfile,fuzz-dockerignore,fuzz-expand,fuzz-layer,fuzz-oci} "$build/crashes"
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
