#!/usr/bin/env bash
# A build step is never host root (issue 8, items 1 and 2), checked from outside the build:
#   - a RUN step is uid 0 inside, while /proc/PID/status of its process shows a non-root host
#     uid: kiln's range for root builds (root's /etc/subuid entry, else the "kiln" one it
#     reserves), the caller's own uid for rootless ones;
#   - chmod, chown and touch of the sandbox's /dev nodes fail and leave the host's nodes as they
#     were (mode, owner, times);
#   - in an emulated step, /proc/PID/exe of another emulated process leads to kiln's sealed copy
#     of QEMU, and chmod/chown/writes through it leave the host's QEMU binaries unchanged;
#   - files kiln writes for the caller (outputs, reports) belong to the caller.
if [ -z "${FIX:-}" ]; then
	FIX=$("$(cd "$(dirname "$0")" && pwd)/../fixtures/cached.sh" amd64 arm64) ||
		{ echo "Bail out! no fixtures" >&2; exit 1; }
fi
. "$(dirname "$0")/lib.sh"
require_userns
load_busybox

me=$(id -u)
mygid=$(id -g)
build() { kiln build --progress plain "$@"; }

# --- the step's host uid ---------------------------------------------------------------------
c=$(newdir uid)
nap=7.$$$RANDOM
cat >"$c/Dockerfile" <<DF
FROM busybox
RUN echo "inside=\$(id -u):\$(id -g)"; sleep $nap
DF
build --no-cache --platform linux/amd64 "$c" >"$T/uid.log" 2>&1 &
bpid=$!
pid=
for _ in $(seq 1 100); do
	pid=$(pgrep -f -x "sleep $nap" | head -n 1)
	[ -n "$pid" ] && break
	sleep 0.1
done
host_ids=
[ -n "$pid" ] && host_ids=$(awk '/^Uid:/ { u = $2 } /^Gid:/ { g = $2 } END { print u ":" g }' "/proc/$pid/status")
wait "$bpid"
check "build with a RUN step that waits (found its process: '${pid:-none}')" test -n "$pid"
check_grep "the step is root inside" '^#[0-9]+ [0-9.]+ inside=0:0$' "$T/uid.log"
if [ "$me" = 0 ]; then
	range() { # FILE: the start of root's range, else kiln's reserved one
		awk -F: '$1 == "root" || $1 == "0" { print $2; found = 1; exit } END { if (!found) print "" }' "$1" |
			grep . || awk -F: '$1 == "kiln" { print $2; exit }' "$1"
	}
	want="$(range /etc/subuid):$(range /etc/subgid)"
	check_eq "root build: the step's host uid:gid is the range's first id, not 0" "$host_ids" "$want"
	check "root build: the range is not host root" test "${want%%:*}" -gt 0
else
	check_eq "rootless build: the step's host uid:gid is the caller's" "$host_ids" "$me:$mygid"
fi

# --- the host's /dev nodes -------------------------------------------------------------------
devs="null zero full random urandom tty"
devstat() { for d in $devs; do stat -c "$d %a %u:%g %Y %Z" "/dev/$d"; done; }
before=$(devstat)
c=$(newdir dev)
cat >"$c/Dockerfile" <<DF
FROM busybox
RUN for d in $devs; do chmod 000 /dev/\$d; chown 1:1 /dev/\$d; touch /dev/\$d; done 2>&1; \
    echo x > /dev/null && echo devwrite=ok; echo "devzero=\$(head -c 3 /dev/zero | wc -c)"; \
    stat -c 'devmode=%a' /dev/null
DF
check "build a step that tries to chmod, chown and touch /dev nodes" build --no-cache --platform linux/amd64 "$c"
cp "$OUT" "$T/dev.log"
check_grep "chmod of /dev/null is refused" 'chmod: /dev/null: (Read-only file system|Operation not permitted)' "$T/dev.log"
check_grep "chown of /dev/full is refused" 'chown: /dev/full: (Read-only file system|Operation not permitted)' "$T/dev.log"
check_grep "the devices still work" 'devwrite=ok' "$T/dev.log"
check_grep "/dev/zero reads" 'devzero=3' "$T/dev.log"
check_grep "/dev/null keeps its mode inside" 'devmode=666' "$T/dev.log"
check_eq "the host's /dev nodes are unchanged (mode, owner, mtime, ctime)" "$(devstat)" "$before"

# --- QEMU behind /proc/PID/exe ---------------------------------------------------------------
qemus=
for q in /usr/bin/qemu-aarch64-static /usr/libexec/qemu-binfmt/aarch64-binfmt-P; do
	[ -e "$q" ] && qemus="$qemus $(readlink -f "$q")"
done
qstat() { for q in $qemus; do stat -c "%n %a %u:%g %Y" "$q"; sha256sum "$q"; done; }
if [ ! -f "$FIX/busybox-arm64.oci.tar" ] || [ -z "$qemus" ]; then
	skip "emulated step cannot change QEMU" "no arm64 fixture or no qemu-aarch64-static"
else
	qbefore=$(qstat)
	check "load the arm64 base" kiln load "$FIX/busybox-arm64.oci.tar" secroot-arm:1
	c=$(newdir qemu)
	cat >"$c/Dockerfile" <<'DF'
FROM secroot-arm:1
RUN sleep 30 & p=$!; sleep 0.5; echo "exe=$(readlink /proc/$p/exe)"; \
    chmod 4755 /proc/$p/exe 2>&1; chown 0:0 /proc/$p/exe 2>&1; chmod 777 /proc/$p/exe 2>&1; \
    if (echo x >> /proc/$p/exe) 2>/dev/null; then echo exewrite=ok; else echo exewrite=refused; fi; \
    kill $p; echo "arch=$(uname -m)"
DF
	check "build an emulated step that attacks /proc/PID/exe" build --no-cache --platform linux/arm64 "$c"
	cp "$OUT" "$T/qemu.log"
	check_grep "the step is emulated" 'arch=aarch64' "$T/qemu.log"
	check_grep "/proc/PID/exe is kiln's sealed copy, not a host file" 'exe=/?memfd:kiln-qemu' "$T/qemu.log"
	check_grep "writing the interpreter is refused" 'exewrite=refused' "$T/qemu.log"
	check_eq "the host's QEMU binaries are unchanged (mode, owner, mtime, sha256)" "$(qstat)" "$qbefore"
	check "no setuid bit on any host QEMU" test -z "$(find $qemus -perm -4000 2>/dev/null)"
fi

# --- the host's own registration (root only: it takes host root to register one) ---------------
# A native build whose step runs a foreign binary goes through the host's binfmt_misc entry (as
# Debian's qemu-user-static with binfmt-support registers it, flag F): /proc/PID/exe of that
# process is the host's QEMU file itself. The step's root must not be able to change it.
if [ "$me" = 0 ] && [ -f "$FIX/busybox-arm64.oci.tar" ] && [ -x /usr/bin/qemu-aarch64-static ]; then
	bm=/proc/sys/fs/binfmt_misc
	entry=kiln-test-host-aarch64-$$
	mounted=
	if [ ! -e "$bm/register" ]; then
		mount -t binfmt_misc binfmt_misc "$bm" && mounted=1
	fi
	qbefore=$(qstat)
	c=$(newdir hostreg)
	cat >"$c/Dockerfile" <<'DF'
FROM --platform=linux/arm64 secroot-arm:1 AS arm
FROM busybox
COPY --from=arm /bin/busybox /arm/busybox
RUN echo "arch=$(/arm/busybox uname -m)"; /arm/busybox sleep 30 & p=$!; sleep 0.5; \
    echo "exe=$(readlink /proc/$p/exe)"; chmod 4755 /proc/$p/exe 2>&1; chown 0:0 /proc/$p/exe 2>&1; \
    if (echo x >> /proc/$p/exe) 2>/dev/null; then echo exewrite=ok; else echo exewrite=refused; fi; \
    kill $p
DF
	magic='\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00'
	mask='\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff'
	if check "register a host binfmt_misc entry for aarch64 (flag F)" \
		sh -c "echo ':$entry:M::$magic:$mask:/usr/bin/qemu-aarch64-static:F' >$bm/register"; then
		check "native build: a step runs an arm64 binary through the host's entry" \
			build --no-cache --platform linux/amd64 "$c"
		cp "$OUT" "$T/hostreg.log"
		echo -1 >"$bm/$entry"
		check_grep "the arm64 binary ran" 'arch=aarch64' "$T/hostreg.log"
		check_grep "/proc/PID/exe is the host's QEMU" 'exe=/usr/bin/qemu-aarch64-static' "$T/hostreg.log"
		check_grep "chmod of the host's QEMU is refused" 'chmod: /proc/[0-9]+/exe: Operation not permitted' "$T/hostreg.log"
		check_grep "writing the host's QEMU is refused" 'exewrite=refused' "$T/hostreg.log"
		check_eq "the host's QEMU is unchanged (mode, owner, mtime, sha256)" "$(qstat)" "$qbefore"
	fi
	[ -e "$bm/$entry" ] && echo -1 >"$bm/$entry"
	[ -n "$mounted" ] && umount "$bm"
fi

# --- a store whose snapshots were made under another id map ----------------------------------
# Snapshot files carry the ids of the map they were unpacked under; ROOT/idmap records it and a
# build under another map unpacks them again. As root, a store of an older kiln had them owned
# by host ids (host root for root-owned files): simulated by chowning them.
c=$(newdir remap)
printf 'FROM busybox\nRUN touch /bin/remapped && echo remap=ok\n' >"$c/Dockerfile"
check "build once (snapshots made)" build --platform linux/amd64 "$c"
check "the store records its id map" test -s "$KILN_ROOT/idmap"
echo "another map" >"$KILN_ROOT/idmap"
if [ "$me" = 0 ]; then
	chown -R 0:0 "$KILN_ROOT"/snapshots/[0-9a-f]*
fi
check "a build under a changed map unpacks the snapshots again" build --no-cache --platform linux/amd64 "$c"
check_grep "its RUN step owns the image's files" 'remap=ok'
check "the store records the map again" test "$(cat "$KILN_ROOT/idmap")" != "another map"

# --- files kiln writes for the caller belong to the caller ------------------------------------
c=$(newdir out)
printf 'FROM busybox\nRUN echo hi > /hi\n' >"$c/Dockerfile"
o=$(newdir outputs)
if check "build with outputs" build --platform linux/amd64 -o "type=oci,dest=$o/img.tar" \
	-o "type=oci,dest=$o/layout,tar=false" -o "type=local,dest=$o/rootfs" \
	-o "type=docker,dest=$o/docker.tar" --metadata-file "$o/meta.json" --report "$o/report.json" \
	--cache-to "type=local,dest=$o/cache,mode=max" "$c"; then
	strays=$(find "$o" ! -user "$me" -printf '%p %u\n' | head -n 5)
	check_eq "every output file and dir belongs to the caller (uid $me)" "$strays" ""
	strays=$(find "$o" ! -group "$mygid" -printf '%p %g\n' | head -n 5)
	check_eq "every output file and dir has the caller's group" "$strays" ""
fi

finish
