#!/usr/bin/env bash
# RUN confinement like Docker's default, seen from inside RUN steps of a real build: seccomp
# filter (mode 2), no_new_privs, Docker's capability set (bounding; effective for root only),
# no namespace creation or mounts, masked /proc/kcore and /proc/keys, read-only /proc/sys, no
# leaked fds, and ordinary work (forks, sleep, signals) unharmed; the same under QEMU for arm64
# when the two-platform base is there.
if [ -z "${FIX:-}" ]; then
	FIX=$("$(cd "$(dirname "$0")" && pwd)/../fixtures/cached.sh" amd64 arm64) ||
		{ echo "Bail out! no fixtures" >&2; exit 1; }
fi
. "$(dirname "$0")/lib.sh"
require_userns
load_busybox

caps=00000000a80425fb
zero=0000000000000000
sp='[[:space:]]+'

c=$(newdir ctx)
cat >"$c/Dockerfile" <<'DF'
FROM busybox
RUN grep -E '^(Seccomp|NoNewPrivs|Cap[A-Za-z]+):' /proc/self/status | sed 's/^/root-/'
USER 1000:1000
RUN grep -E '^(Cap[A-Za-z]+|Groups):' /proc/self/status | sed 's/^/user-/'
USER root
RUN if unshare -m true 2>/dev/null; then echo unshare=allowed; else echo unshare=denied; fi
RUN mkdir -p /tmp/m; if mount -t tmpfs none /tmp/m 2>/dev/null; then echo mount=allowed; else echo mount=denied; fi
RUN echo "kcore=$(cat /proc/kcore 2>/dev/null | wc -c) keys=$(cat /proc/keys 2>/dev/null | wc -c)"
RUN if (echo 1 > /proc/sys/vm/drop_caches) 2>/dev/null; then echo procsys=writable; else echo procsys=readonly; fi
RUN echo "fds=[$(ls /proc/self/fd | tr '\n' ' ')]"
RUN i=0; while [ $i -lt 100 ]; do /bin/true; i=$((i+1)); done; sleep 0.1; kill -0 $$ && echo "forks=$i"
DF

if check "build with confinement probes" kiln build --no-cache --platform linux/amd64 --progress plain "$c"; then
	cp "$OUT" "$T/build.log"
	log=$T/build.log
	check_grep "seccomp filter is on (Seccomp: 2)" "root-Seccomp:${sp}2" "$log"
	check_grep "no_new_privs is set" "root-NoNewPrivs:${sp}1" "$log"
	check_grep "root: bounding set is Docker's" "root-CapBnd:${sp}$caps" "$log"
	check_grep "root: effective set is Docker's" "root-CapEff:${sp}$caps" "$log"
	check_grep "root: permitted set is Docker's" "root-CapPrm:${sp}$caps" "$log"
	check_grep "root: inheritable set is empty" "root-CapInh:${sp}$zero" "$log"
	check_grep "root: ambient set is empty" "root-CapAmb:${sp}$zero" "$log"
	check_grep "USER 1000: bounding set is Docker's" "user-CapBnd:${sp}$caps" "$log"
	check_grep "USER 1000: no effective capabilities" "user-CapEff:${sp}$zero" "$log"
	check_grep "USER 1000: no permitted capabilities" "user-CapPrm:${sp}$zero" "$log"
	check_grep "USER 1000: the primary gid is a supplementary group" "user-Groups:${sp}1000" "$log"
	check_grep "unshare -m is denied" "unshare=denied" "$log"
	check_grep "mount is denied" "mount=denied" "$log"
	check_grep "/proc/kcore and /proc/keys are masked" "kcore=0 keys=0" "$log"
	check_grep "/proc/sys is read-only" "procsys=readonly" "$log"
	check_grep "only fds 0-2 reach RUN (3 is ls's own)" 'fds=\[0 1 2 3 \]' "$log"
	check_grep "forks, sleep and kill -0 work" "forks=100" "$log"
fi

# --- the same filter around QEMU: an arm64 RUN step ------------------------------------------
if [ ! -s "$FIX/busybox-multi.oci.tar" ]; then
	skip "arm64 RUN under the filter" "no $FIX/busybox-multi.oci.tar (tests/fixtures/cached.sh amd64 arm64)"
	finish
fi
KILN_ROOT=$T/multi-root
export KILN_ROOT
check "load the two-platform busybox" kiln load "$FIX/busybox-multi.oci.tar"
a=$(newdir arm-ctx)
cat >"$a/Dockerfile" <<'DF'
FROM busybox
RUN echo "arch=$(uname -m) $(grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status | tr '\t\n' '= ')"
RUN if unshare -m true 2>/dev/null; then echo arm-unshare=allowed; else echo arm-unshare=denied; fi
RUN i=0; while [ $i -lt 20 ]; do /bin/true; i=$((i+1)); done; echo "arm-forks=$i"
DF
if check "arm64 build under QEMU with the filter" kiln build --no-cache --platform linux/arm64 --progress plain "$a"; then
	cp "$OUT" "$T/arm.log"
	check_grep "arm64 RUN: emulated, filtered, no_new_privs" \
		"arch=aarch64 NoNewPrivs:=1 Seccomp:=2" "$T/arm.log"
	check_grep "arm64 RUN: unshare is denied" "arm-unshare=denied" "$T/arm.log"
	check_grep "arm64 RUN: forks under QEMU work" "arm-forks=20" "$T/arm.log"
fi

finish
