#!/usr/bin/env bash
# kiln doctor: reports what this host allows and exits 0.
. "$(dirname "$0")/lib.sh"

if check "kiln doctor exits 0" kiln doctor; then
	cp "$OUT" "$T/doctor.txt"
	check_grep "mentions user namespaces" '[Uu]ser ?[Nn]amespace|userns' "$T/doctor.txt"
	check_grep "mentions subordinate ids" '[Ss]ubordinate|subuid' "$T/doctor.txt"
	check_grep "mentions overlay" '[Oo]verlay' "$T/doctor.txt"
fi

finish
