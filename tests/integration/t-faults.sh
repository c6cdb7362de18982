#!/usr/bin/env bash
# Fault injection: a full disk during a build (a 40 MiB tmpfs as the store, mounted in a private
# mount namespace so it vanishes with the test) and SIGKILL of kiln during a long RUN. Each must
# end with a clear error or leave no process and no mount behind; the store stays valid and the
# next build succeeds.
. "$(dirname "$0")/lib.sh"
require_userns
load_busybox

corpus_maker=$_here/../hostile/make-corpus.py
TOKEN=kilnfault$$x$RANDOM

# --- ENOSPC ------------------------------------------------------------------------------------------
# As root: `unshare -m` and a tmpfs, kiln with its usual full id map and the busybox fixture.
# As an ordinary user: `unshare --map-auto --map-root-user -m` gives a user namespace that may
# mount a tmpfs; kiln inside it is uid 0 of a namespace holding 65536 ids, where the full map it
# asks for as root cannot be written, so it runs with KILN_USERNS=single (one id) and a base image
# whose files are all owned by 0 (base-root-owned from make-corpus.py).
SMALL=$T/small
mkdir -p "$SMALL" "$T/ectx"
chmod 755 "$T/ectx"
if [ "$(id -u)" -eq 0 ]; then
	ns=(unshare -m)
	base=$FIX/busybox-amd64.oci.tar
	base_name=busybox
	single=
else
	ns=(unshare --map-auto --map-root-user -m)
	check "make the root-owned base image" python3 "$corpus_maker" "$FIX/busybox-amd64.oci.tar" \
		"$T/corpus" "$T/outside" "$TOKEN"
	base=$T/corpus/base-root-owned.oci.tar
	base_name=base-root-owned
	single=single
fi

# Runs inside the namespace; every result goes to a file in $T, the tmpfs dies with the shell.
cat >"$T/enospc.sh" <<'EOS'
set -u
mount -t tmpfs -o size=40m tmpfs "$SMALL" || { echo "mount tmpfs failed" >"$T/e.mount"; exit 0; }
[ -n "$SINGLE" ] && export KILN_USERNS=$SINGLE
R=$SMALL/root
used() { df -k --output=used "$SMALL" | tail -n 1 | tr -d ' '; }
step() { # NAME cmd...: output to $T/e.NAME, status to $T/e.NAME.rc
	local n=$1
	shift
	timeout -k 10 300 "$@" >"$T/e.$n" 2>&1
	echo $? >"$T/e.$n.rc"
}
step load "$KILN" load --root "$R" "$BASE"
printf 'FROM %s\nRUN true\n' "$BASE_NAME" >"$CTX/Dockerfile"
step warm "$KILN" build --root "$R" --progress plain "$CTX"
used >"$T/e.used0"
printf 'FROM %s\nRUN head -c 25000000 /dev/urandom > /big\n' "$BASE_NAME" >"$CTX/Dockerfile"
step big "$KILN" build --root "$R" --progress plain "$CTX"
used >"$T/e.used1"
# fill the disk but ~6 MiB: a 4 MB step runs, then its layer blob finds no space, free the space, the same step succeeds
avail=$(df -k --output=avail "$SMALL" | tail -n 1 | tr -d ' ')
head -c $(((avail - 6144) * 1024)) /dev/zero >"$SMALL/filler" 2>/dev/null
printf 'FROM %s\nRUN head -c 4000000 /dev/urandom > /mid\n' "$BASE_NAME" >"$CTX/Dockerfile"
step full "$KILN" build --root "$R" --progress plain "$CTX"
rm -f "$SMALL/filler"
step freed "$KILN" build --root "$R" --progress plain -o "type=local,dest=$SMALL/out" "$CTX"
[ -f "$SMALL/out/mid" ] && stat -c %s "$SMALL/out/mid" >"$T/e.midsize"
step verify "$KILN" doctor --verify --root "$R"
ls -A "$R/work" >"$T/e.work" 2>&1
ls -A "$R/tmp" >"$T/e.tmp" 2>&1
EOS
check "ENOSPC scenario ran in its namespace" env T="$T" SMALL="$SMALL" CTX="$T/ectx" KILN="$KILN" \
	BASE="$base" BASE_NAME="$base_name" SINGLE="$single" "${ns[@]}" bash "$T/enospc.sh"
if [ -e "$T/e.mount" ]; then
	: >"$OUT"
	_notok "ENOSPC: tmpfs" "could not mount a tmpfs in ${ns[*]}"
else
	check_eq "ENOSPC: base loaded onto the tmpfs" "$(cat "$T/e.load.rc")" 0
	check_eq "ENOSPC: a first build unpacks it" "$(cat "$T/e.warm.rc")" 0
	check_eq "ENOSPC: the 25 MB step fails with exit 1" "$(cat "$T/e.big.rc")" 1
	check_grep "ENOSPC: the error names the step and the lack of space" \
		'kiln build: Dockerfile:2: RUN: .*No space left on device' "$T/e.big"
	u0=$(cat "$T/e.used0") u1=$(cat "$T/e.used1")
	check "ENOSPC: the failed build left no temporaries (used ${u0}K before, ${u1}K after)" \
		test "$u1" -le $((u0 + 256))
	check_eq "ENOSPC: the step on a full disk fails with exit 1" "$(cat "$T/e.full.rc")" 1
	check_grep "ENOSPC: ... saying so" 'kiln build: Dockerfile:2: RUN: .*No space left on device' "$T/e.full"
	check_eq "ENOSPC: after freeing space the same build succeeds" "$(cat "$T/e.freed.rc")" 0
	check_eq "ENOSPC: its file is complete" "$(cat "$T/e.midsize" 2>/dev/null)" 4000000
	check_eq "ENOSPC: kiln doctor --verify is clean" "$(cat "$T/e.verify.rc")" 0
	check_grep "ENOSPC: ... store is clean" '^store is clean' "$T/e.verify"
	check_eq "ENOSPC: no work dirs left" "$(cat "$T/e.work")" ""
	check_eq "ENOSPC: no blob temporaries left" "$(cat "$T/e.tmp")" ""
fi

# --- SIGKILL during a long RUN ----------------------------------------------------------------------
c=$(newdir kill)/ctx
mkdir -p "$c"
printf 'FROM busybox\nRUN sleep 30; echo %s\n' "$TOKEN" >"$c/Dockerfile"
"$KILN" build --platform linux/amd64 --no-cache --progress plain "$c" >"$T/kill.out" 2>&1 &
kpid=$!
# the sandboxed shell carries the token in its args; its child is `sleep 30`
shpid=
for _ in $(seq 1 600); do
	shpid=$(ps -eo pid=,args= | awk -v t="$TOKEN" 'index($0, t) && /sleep 30/ && !/awk/ { print $1; exit }')
	[ -n "$shpid" ] && ps -eo ppid=,args= | awk -v p="$shpid" '$1 == p && /sleep 30/' | grep -q . && break
	shpid=
	sleep 0.1
done
if [ -z "$shpid" ]; then
	kill -9 "$kpid" 2>/dev/null
	wait "$kpid" 2>/dev/null
	cp "$T/kill.out" "$OUT"
	_notok "SIGKILL: the RUN step started" "no 'sleep 30' under a shell with the token within 60 s"
else
	_ok "SIGKILL: the RUN step started (shell pid $shpid)"
	sleeppids=$(ps -eo pid=,ppid=,args= | awk -v p="$shpid" '$2 == p && /sleep 30/ { print $1 }')
	mounts=$(grep -l -F "$KILN_ROOT/work" /proc/[0-9]*/mountinfo 2>/dev/null | tr '\n' ' ')
	check "SIGKILL: while the step runs, its mounts show in /proc/*/mountinfo (so the check below can see them)" \
		test -n "$mounts"
	kill -9 "$kpid"
	wait "$kpid" 2>/dev/null
	left=
	for _ in $(seq 1 50); do
		left=
		for p in $shpid $sleeppids; do
			[ -d "/proc/$p" ] && left="$left $p"
		done
		[ -z "$left" ] && break
		sleep 0.1
	done
	ps -eo pid,args | grep 'sleep 30' | grep -v grep >"$OUT" || true
	check_eq "SIGKILL: no process of the build survives (shell and sleep gone)" "$left" ""
	check_eq "SIGKILL: no process still carries the token" \
		"$(ps -eo pid=,args= | awk -v t="$TOKEN" 'index($0, t) && !/awk/')" ""
	mounts=$(grep -l -F "$KILN_ROOT/work" /proc/[0-9]*/mountinfo 2>/dev/null | tr '\n' ' ')
	check_eq "SIGKILL: no mount under ROOT/work survives in any namespace" "$mounts" ""
	c2=$(newdir after)
	printf 'FROM busybox\nRUN echo after-kill > /after\n' >"$c2/Dockerfile"
	check "SIGKILL: the next build succeeds" kiln build --platform linux/amd64 --progress plain "$c2"
	check "SIGKILL: kiln doctor --verify is clean" kiln doctor --verify
	check_eq "SIGKILL: the killed build's work dir was removed by the next build" \
		"$(find "$KILN_ROOT/work" -mindepth 1 -maxdepth 1 -type d 2>&1)" ""
fi

finish
