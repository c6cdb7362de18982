#!/usr/bin/env bash
# A store that survives (issue 4): concurrent builds on one root, builds killed with SIGKILL at
# random moments (the kiln process or its worker inside the user namespace), `kiln prune`
# (--keep-storage) and `kiln doctor --verify`. Every part uses its own root under $T.
. "$(dirname "$0")/lib.sh"
require_userns

base=$FIX/busybox-amd64.oci.tar
blob_count() { find "$1/blobs/sha256" -type f | wc -l; }
# child_of PID: its first child process (kiln's worker inside the user namespace), from /proc
child_of() {
	local c p
	read -r c _ <"/proc/$1/task/$1/children" 2>/dev/null && { echo "$c"; return; }
	for p in /proc/[0-9]*; do
		[ "$(cut -d' ' -f4 "$p/stat" 2>/dev/null)" = "$1" ] && { echo "${p#/proc/}"; return; }
	done
}
# running: PID exists and is not a zombie (a killed worker waits for init to reap it)
running() {
	local st
	st=$(sed -n 's/^State:[[:space:]]*\([A-Z]\).*/\1/p' "/proc/$1/status" 2>/dev/null)
	[ -n "$st" ] && [ "$st" != Z ] && [ "$st" != X ]
}

# A context with a few hundred files and a Dockerfile of several RUN and COPY steps (~1-2 s).
make_ctx() { # DIR TAG
	local d=$1 tag=$2 i
	mkdir -p "$d/files1" "$d/files2/sub" "$d/files3"
	for i in $(seq 1 150); do echo "$tag one $i" >"$d/files1/f$i"; done
	for i in $(seq 1 150); do echo "$tag two $i" >"$d/files2/sub/g$i"; done
	for i in $(seq 1 100); do echo "$tag three $i" >"$d/files3/h$i"; done
	cat >"$d/Dockerfile" <<DF
FROM busybox
COPY files1 /f1
RUN for i in \$(seq 1 300); do echo "\$i $tag" > /tmp/r\$i; done && cp -r /f1 /f1copy
COPY files2 /f2
RUN tar -cf /t.tar /f1 /f2 && sha256sum /t.tar > /sum
RUN for i in \$(seq 1 200); do mkdir -p /d/\$i && echo \$i > /d/\$i/f; done
COPY files3 /f3
RUN sleep 0.2 && ls -R /f1 /f2 /f3 /d > /ls.txt
DF
}

ctxa=$(newdir ctx-a)
ctxb=$(newdir ctx-b)
make_ctx "$ctxa" a
make_ctx "$ctxb" b

part_start=$SECONDS
# --- (a) two builds of different Dockerfiles at once on one root, and a prune beside them ------
ra=$T/root-conc
check "concurrent: load busybox" kiln load --root "$ra" "$base"
"$KILN" build --root "$ra" -t conc-a:1 --progress plain "$ctxa" >"$T/conc-a.log" 2>&1 &
pa=$!
"$KILN" build --root "$ra" -t conc-b:1 --progress plain "$ctxb" >"$T/conc-b.log" 2>&1 &
pb=$!
"$KILN" prune --root "$ra" >"$T/conc-prune.log" 2>&1 &
pp=$!
wait $pa
sa=$?
wait $pb
sb=$?
wait $pp
sp=$?
cp "$T/conc-a.log" "$OUT"
check_eq "concurrent: build a succeeds" "$sa" 0
cp "$T/conc-b.log" "$OUT"
check_eq "concurrent: build b succeeds" "$sb" 0
cp "$T/conc-prune.log" "$OUT"
check_eq "concurrent: prune beside them succeeds" "$sp" 0
check "concurrent: both images inspectable" sh -c "'$KILN' inspect --root '$ra' conc-a:1 && '$KILN' inspect --root '$ra' conc-b:1"
check "concurrent: doctor --verify is clean" kiln doctor --verify --root "$ra"
check_grep "concurrent: verify says clean" "store is clean"

echo "# part (a) took $((SECONDS - part_start))s"; part_start=$SECONDS
# --- (b) SIGKILL at random moments, then verify; finally a build succeeds ------------------------
rk=$T/root-kill
check "kill loop: load busybox" kiln load --root "$rk" "$base"
iterations=${KILN_KILL_ITERATIONS:-20}
verify_failed=0
orphans=0
killed_worker=0
for i in $(seq 1 "$iterations"); do
	"$KILN" build --root "$rk" --no-cache --progress quiet -t killed:1 "$ctxa" >"$T/kill.log" 2>&1 &
	pid=$!
	delay=$((RANDOM % 1500))
	sleep "$(printf '%d.%03d' $((delay / 1000)) $((delay % 1000)))"
	worker=$(child_of "$pid")
	if [ $((i % 3)) -eq 0 ] && [ -n "$worker" ]; then
		# the worker inside the user namespace; the parent then exits with 128+9
		kill -9 "$worker" 2>/dev/null && killed_worker=$((killed_worker + 1))
	else
		kill -9 "$pid" 2>/dev/null
	fi
	wait "$pid" 2>/dev/null
	# the worker must not outlive its parent (PR_SET_PDEATHSIG)
	if [ -n "$worker" ]; then
		for _ in $(seq 1 50); do
			running "$worker" || break
			sleep 0.1
		done
		if running "$worker"; then
			orphans=$((orphans + 1))
			kill -9 "$worker" 2>/dev/null
		fi
	fi
	if ! kiln doctor --verify --root "$rk" >"$T/verify.log" 2>&1; then
		verify_failed=$((verify_failed + 1))
		{
			echo "# after kill $i (delay ${delay} ms):"
			cat "$T/verify.log"
		} >>"$T/verify-failures.log"
	fi
done
: >"$OUT"
[ -s "$T/verify-failures.log" ] && cp "$T/verify-failures.log" "$OUT"
check_eq "kill loop: doctor --verify clean after each of $iterations kills" "$verify_failed" 0
check_eq "kill loop: no worker outlived its killed parent" "$orphans" 0
check "kill loop: a build after the kills succeeds" kiln build --root "$rk" --progress plain -t after:1 "$ctxa"
check "kill loop: a --no-cache build after the kills succeeds" kiln build --root "$rk" --no-cache --progress quiet -t after:2 "$ctxa"
check "kill loop: the result is inspectable" kiln inspect --root "$rk" after:1
check_eq "kill loop: dead builds' work dirs swept" "$(find "$rk/work" -mindepth 1 -maxdepth 1 -type d | wc -l)" 0
check_eq "kill loop: dead builds' snapshot temps swept" "$(find "$rk/snapshots" -mindepth 1 -maxdepth 1 -name '.tmp-*' | wc -l)" 0
check "kill loop: doctor --verify clean at the end" kiln doctor --verify --root "$rk"
echo "# kill loop: $iterations kills, $killed_worker of the worker inside the user namespace"

echo "# part (b) took $((SECONDS - part_start))s"; part_start=$SECONDS
# --- (c) prune --------------------------------------------------------------------------------
rp=$rk
check "prune: build a second image" kiln build --root "$rp" --progress quiet -t other:1 "$ctxb"
before=$(blob_count "$rp")
check "prune: rmi other:1 after:2 killed:1" kiln rmi --root "$rp" other:1 after:2
kiln rmi --root "$rp" killed:1 >/dev/null 2>&1
check "prune: kiln prune" kiln prune --root "$rp"
check_grep "prune: says what it removed" "^removed [1-9][0-9]* blobs"
after=$(blob_count "$rp")
check_eq "prune: blob count dropped" "$([ "$after" -lt "$before" ] && echo dropped)" dropped
check_eq "prune: ROOT/tmp emptied" "$(find "$rp/tmp" -mindepth 1 | wc -l)" 0
check "prune: the named image is still inspectable" kiln inspect --root "$rp" after:1
check "prune: and exportable" kiln build --root "$rp" --progress quiet -o "type=oci,dest=$T/after.tar" "$ctxa"
check "prune: skopeo reads the export" skopeo inspect --raw "oci-archive:$T/after.tar"
check "prune: --keep-storage 0" kiln prune --root "$rp" --keep-storage 0
check_grep "prune: --keep-storage 0 evicted cache entries" "^removed [1-9][0-9]* cache entries"
check_eq "prune: no cache entry left" "$(find "$rp/cache" -maxdepth 1 -type f | wc -l)" 0
check "prune: a build after --keep-storage 0 works" kiln build --root "$rp" --progress quiet -t again:1 "$ctxb"
check "prune: --all" kiln prune --root "$rp" --all
check "prune: doctor --verify clean after prunes" kiln doctor --verify --root "$rp"
check_fail "prune: a bad size is a usage error" 2 "invalid size '12XB'" kiln prune --root "$rp" --keep-storage 12XB

echo "# part (c) took $((SECONDS - part_start))s"; part_start=$SECONDS
# --- (d) doctor --verify finds a corrupted blob ------------------------------------------------
rd=$T/root-damage
check "damage: load busybox" kiln load --root "$rd" "$base"
victim=$(find "$rd/blobs/sha256" -type f -size +4k | head -n 1)
hex=$(basename "$victim")
printf 'X' | dd of="$victim" bs=1 seek=100 conv=notrunc status=none
check_fail "damage: doctor --verify exits 1 naming the digest" 1 "damaged: blob sha256:$hex: corrupt" \
	kiln doctor --verify --root "$rd"
check_grep "damage: one problem" "^1 problem found"
rm -f "$victim"
check_fail "damage: a missing blob is named with its image" 1 "image 'busybox:latest': missing blob sha256:$hex" \
	kiln doctor --verify --root "$rd"

echo "# part (d) took $((SECONDS - part_start))s"
finish
