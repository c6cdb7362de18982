#!/usr/bin/env bash
# Runs every integration test file (t-*.sh beside this script, or the ones named) and ends with
# `integration: N passed, N failed`; exits non-zero when any check failed.
#
# Usage: [KILN=bin] [FIX=dir] [KILN_ROOT=dir] run.sh [t-name...]
# One KILN_ROOT is shared by the files of a run (fixtures loaded once); it defaults to a fresh
# temp dir, removed at the end.
set -u
here=$(cd "$(dirname "$0")" && pwd)
: "${KILN:=$(cd "$here/../.." && pwd)/build/builder/kiln}"
: "${FIX:=$("$here/../fixtures/cached.sh" amd64)}"
export KILN FIX
own_root=
if [ -z "${KILN_ROOT:-}" ]; then
	own_root=$(mktemp -d "${TMPDIR:-/tmp}/kiln-root.XXXXXX")
	export KILN_ROOT=$own_root/root
fi
cleanup() {
	[ -n "$own_root" ] || return 0
	chmod -R u+rwX "$own_root" 2>/dev/null
	rm -rf "$own_root" 2>/dev/null ||
		unshare --user --map-auto --map-root-user rm -rf "$own_root" 2>/dev/null ||
		rm -rf "$own_root"
}
trap cleanup EXIT

if [ $# -gt 0 ]; then
	files=()
	for t in "$@"; do files+=("$here/${t%.sh}.sh"); done
else
	files=("$here"/t-*.sh)
fi

echo "# integration as $(id -un) (uid $(id -u)), kiln=$KILN, KILN_ROOT=$KILN_ROOT"
passed=0
failed=0
for f in "${files[@]}"; do
	name=$(basename "$f" .sh)
	start=$SECONDS
	log=$(mktemp)
	bash "$f" 2>&1 | tee "$log"
	res=$(grep -E "^RESULT $name [0-9]+ [0-9]+$" "$log" | tail -n 1)
	if [ -n "$res" ]; then
		set -- $res
		passed=$((passed + $3))
		failed=$((failed + $4))
	else
		echo "not ok - $name: the test file ended without a result"
		failed=$((failed + 1))
	fi
	rm -f "$log"
	echo "# $name took $((SECONDS - start))s"
done
echo "integration: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
