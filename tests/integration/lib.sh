# shellcheck shell=bash
# Harness for kiln's integration tests. Source it at the top of a t-*.sh file, end with `finish`.
#
# Environment (run.sh sets them; defaults let a file run alone from the repo):
#   KILN            the kiln binary (default: REPO/build/builder/kiln)
#   FIX             fixture directory from tests/fixtures/cached.sh (busybox-amd64.oci.tar, ...);
#                   made for the platforms in FIX_PLATFORMS (default amd64) when unset
#   KILN_ROOT       store and cache for this run (default: a fresh dir under the file's temp dir)
#   KILN_MUST_WORK  1: a test that would skip for a missing kernel feature fails instead
#   KILN_TIMEOUT    seconds one kiln command may take (default 600)
#   KEEP=1          keep the per-file temp dir for debugging
#
# Checks (each prints `ok - FILE: NAME` or `not ok - FILE: NAME` plus the output's tail):
#   check NAME cmd...                        cmd exits 0
#   check_fail NAME STATUS ERE cmd...        cmd exits STATUS and its stdout+stderr match ERE
#   check_eq NAME GOT WANT                   two strings are equal
#   check_grep NAME ERE FILE / check_nogrep  FILE (default: the last command's output) matches / not
#   check_jq NAME FILTER FILE                `jq -e FILTER FILE` is true
#   skip NAME REASON                         counts as a failure under KILN_MUST_WORK=1
# The last command's combined output is in $OUT. `kiln` runs $KILN under a timeout.

set -u
_here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TEST_FILE=$(basename "$0" .sh)
: "${KILN:=$(cd "$_here/../.." && pwd)/build/builder/kiln}"
: "${FIX:=}"
if [ -z "$FIX" ]; then
	# shellcheck disable=SC2086 # FIX_PLATFORMS: a file's platforms, "amd64 arm64"
	FIX=$("$_here/../fixtures/cached.sh" ${FIX_PLATFORMS:-amd64}) || { echo "Bail out! no fixtures" >&2; exit 1; }
fi
export KILN FIX
unset SOURCE_DATE_EPOCH # builds default to the epoch 0 unless a test sets it

T=$(mktemp -d "${TMPDIR:-/tmp}/kiln-$TEST_FILE.XXXXXX")
chmod 755 "$T"
OUT=$T/last.out
: "${KILN_ROOT:=$T/root}"
export KILN_ROOT
_passed=0
_failed=0
_skipped=0

# rm_tree DIR: removes DIR, also what a rootless build left owned by the user's subordinate ids
rm_tree() {
	chmod -R u+rwX "$1" 2>/dev/null
	rm -rf "$1" 2>/dev/null && return 0
	unshare --user --map-auto --map-root-user rm -rf "$1" 2>/dev/null && return 0
	rm -rf "$1"
}

_cleanup() {
	if [ "${KEEP:-0}" = 1 ]; then
		echo "# kept $T"
	else
		rm_tree "$T"
	fi
}
trap _cleanup EXIT

kiln() {
	timeout -k 10 "${KILN_TIMEOUT:-600}" "$KILN" "$@"
}

_ok() {
	_passed=$((_passed + 1))
	echo "ok - $TEST_FILE: $1"
}

_notok() { # NAME WHY
	_failed=$((_failed + 1))
	echo "not ok - $TEST_FILE: $1"
	echo "#   $2"
	if [ -s "$OUT" ]; then
		tail -n 25 "$OUT" | sed 's/^/#   | /'
	fi
}

check() {
	local name=$1 st
	shift
	"$@" >"$OUT" 2>&1 </dev/null
	st=$?
	if [ $st -eq 0 ]; then _ok "$name"; else _notok "$name" "exit status $st: $*"; fi
	return $st
}

check_fail() {
	local name=$1 want=$2 pat=$3 st
	shift 3
	"$@" >"$OUT" 2>&1 </dev/null
	st=$?
	if [ $st -ne "$want" ]; then
		_notok "$name" "exit status $st, want $want: $*"
		return 1
	fi
	if ! grep -Eq -- "$pat" "$OUT"; then
		_notok "$name" "output does not match /$pat/: $*"
		return 1
	fi
	_ok "$name"
}

check_eq() {
	if [ "$2" = "$3" ]; then
		_ok "$1"
	else
		: >"$OUT"
		_notok "$1" "got '$2', want '$3'"
		return 1
	fi
}

check_grep() {
	local f=${3:-$OUT}
	if grep -Eq -- "$2" "$f" 2>/dev/null; then _ok "$1"; else _notok "$1" "no /$2/ in $f"; return 1; fi
}

check_nogrep() {
	local f=${3:-$OUT}
	if [ -e "$f" ] && ! grep -Eq -- "$2" "$f"; then _ok "$1"; else _notok "$1" "/$2/ found in $f (or no file)"; return 1; fi
}

check_jq() {
	cp "$3" "$T/jq.in" 2>/dev/null || : >"$T/jq.in"
	if jq -e "$2" "$T/jq.in" >/dev/null 2>"$T/jq.err"; then
		_ok "$1"
	else
		{
			cat "$T/jq.err"
			head -c 3000 "$T/jq.in"
		} >"$OUT"
		_notok "$1" "jq -e '$2' is false for $3"
		return 1
	fi
}

skip() {
	if [ "${KILN_MUST_WORK:-0}" = 1 ]; then
		: >"$OUT"
		_notok "$1" "skipped under KILN_MUST_WORK=1: $2"
	else
		_skipped=$((_skipped + 1))
		echo "ok - $TEST_FILE: $1 # SKIP $2"
	fi
}

# Stops the file here when the host cannot run sandboxed steps (RUN): no user namespaces.
require_userns() {
	local probe=(unshare --user --map-root-user --mount --pid --fork true)
	if ! "${probe[@]}" >/dev/null 2>&1; then
		skip "user namespaces" "this kernel or user cannot create user namespaces (${probe[*]} failed)"
		finish
	fi
}

# Sets base to the two-platform busybox fixture (set FIX_PLATFORMS="amd64 arm64" before sourcing
# this file), or stops the file with a skip when it is missing.
require_multi_base() {
	base=$FIX/busybox-multi.oci.tar
	if [ ! -s "$base" ]; then
		skip "two-platform base" "no $base (make it: tests/fixtures/cached.sh amd64 arm64)"
		finish
	fi
}

# A fresh directory under the file's temp dir.
newdir() {
	local d=$T/$1
	rm -rf "$d"
	mkdir -p "$d"
	echo "$d"
}

# Loads busybox:latest into $KILN_ROOT once per run (counted as a check the first time).
load_busybox() {
	local mark=$KILN_ROOT.busybox-loaded
	[ -e "$mark" ] && return 0
	check "kiln load busybox for this run" kiln load "$FIX/busybox-amd64.oci.tar" && touch "$mark"
}

# Layer blob paths of the single-platform image in OCI layout DIR (plain `index.json -> manifest`
# or `index.json -> index -> manifest`), one a line, in order.
oci_layers() {
	python3 - "$1" <<'PY'
import json, os, sys
d = sys.argv[1]
def blob(dg):
    return os.path.join(d, "blobs", *dg.split(":", 1))
def manifest(desc):
    m = json.load(open(blob(desc["digest"])))
    if "manifests" in m:
        amd = [x for x in m["manifests"] if x.get("platform", {}).get("architecture") == "amd64"]
        return manifest((amd or m["manifests"])[0])
    return m
m = manifest(json.load(open(os.path.join(d, "index.json")))["manifests"][0])
for l in m["layers"]:
    print(blob(l["digest"]))
PY
}

# `tar -tv --numeric-owner` of every layer of OCI layout DIR into FILE.
oci_list_layers() {
	local l
	: >"$2"
	for l in $(oci_layers "$1"); do
		tar --numeric-owner -tvf "$l" >>"$2" || return 1
	done
}

# Unpacks oci-archive TAR's amd64 image into rootfs DIR/bundle/rootfs through skopeo and umoci,
# leaving the single-image layout in DIR/layout.
unpack_archive() {
	local tar=$1 dir=$2
	rm -rf "$dir/layout" "$dir/bundle"
	mkdir -p "$dir"
	skopeo copy -q --override-arch amd64 --override-os linux "oci-archive:$tar" "oci:$dir/layout:img" &&
		umoci unpack --rootless --image "$dir/layout:img" "$dir/bundle" >/dev/null
}

finish() {
	echo "# $TEST_FILE: $_passed passed, $_failed failed, $_skipped skipped"
	echo "RESULT $TEST_FILE $_passed $_failed"
	exit $((_failed > 0))
}
