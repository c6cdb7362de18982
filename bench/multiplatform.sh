#!/usr/bin/env bash
# Benchmark: a COLD two-platform build (linux/amd64 + linux/arm64 on an x86-64 host, arm64 RUN
# steps under QEMU) of the same multi-stage workload with kiln and with buildah, each writing ONE
# oci-archive with both platforms. Prints the median wall time of each and the ratio buildah/kiln.
# Timings are printed, never asserted. See bench/README.md.
#
# Usage: bench/multiplatform.sh [-n RUNS] [--keep]
# Environment: KILN (kiln binary, default build/builder/kiln), FIX (fixture dir; default
# tests/fixtures/cached.sh amd64 arm64), BENCH_DIR (work dir, default a temp dir under /var/tmp),
# BENCH_TOOLS ("kiln buildah", or one of them).
#
# Needs root: it installs buildah, runc, qemu-user-static and skopeo with apt-get when missing, and
# buildah needs the HOST's binfmt_misc to run arm64 binaries: for buildah's runs only, the script
# mounts binfmt_misc (if it is not mounted) and, if no aarch64 entry is enabled, registers
# qemu-aarch64 with the flags FP (F: interpreter opened at registration; P: argv[0] preserved,
# which busybox's shell needs to run applets like tar and gzip), and removes what it added right
# after them and on exit.
# kiln gets no host registration: it emulates arm64 in its own user namespace.
set -euo pipefail

runs=3
keep=0
while [ $# -gt 0 ]; do
	case $1 in
	-n) runs=$2; shift 2 ;;
	--keep) keep=1; shift ;;
	-h | --help) sed -n '2,17p' "$0"; exit 0 ;;
	*) echo "usage: $0 [-n RUNS] [--keep]" >&2; exit 2 ;;
	esac
done
[ "$runs" -ge 1 ] 2>/dev/null || { echo "bench: -n wants a positive number" >&2; exit 2; }
if [ "$(id -u)" -ne 0 ]; then
	echo "bench: run as root (apt-get, host binfmt_misc for buildah)" >&2
	exit 2
fi

repo=$(cd "$(dirname "$0")/.." && pwd)
KILN=${KILN:-$repo/build/builder/kiln}
tools=${BENCH_TOOLS:-kiln buildah}
log() { echo "bench: $*" >&2; }

# --- packages (the bench's own; the test suite does not need buildah) ---------------------------
need=()
for p in buildah runc qemu-user-static skopeo jq python3; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
	log "installing ${need[*]}"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}" >&2 ||
		{ apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}" >&2; }
fi
qemu=/usr/bin/qemu-aarch64-static
[ -x "$qemu" ] || { log "no $qemu after installing qemu-user-static"; exit 1; }

FIX=${FIX:-$("$repo/tests/fixtures/cached.sh" amd64 arm64)}
base=$FIX/busybox-multi.oci.tar
[ -s "$base" ] || { log "no $base (tests/fixtures/cached.sh amd64 arm64 makes it)"; exit 1; }

work=${BENCH_DIR:-$(mktemp -d /var/tmp/kiln-bench.XXXXXX)}
mkdir -p "$work"

# --- host binfmt_misc for buildah: set up just around its runs, undone on exit -----------------
bm=/proc/sys/fs/binfmt_misc
bm_mounted=0
bm_added=
bm_enabled=
binfmt_undo() {
	if [ -n "$bm_added" ] && [ -e "$bm/$bm_added" ]; then
		echo -1 >"$bm/$bm_added" && log "removed host binfmt_misc entry $bm_added"
	fi
	bm_added=
	if [ -n "$bm_enabled" ] && [ -e "$bm/$bm_enabled" ]; then
		echo 0 >"$bm/$bm_enabled" && log "disabled host binfmt_misc entry $bm_enabled again"
	fi
	bm_enabled=
	if [ $bm_mounted = 1 ]; then
		umount "$bm" && log "unmounted host binfmt_misc"
		bm_mounted=0
	fi
}
binfmt_setup() {
	local e
	if [ ! -e "$bm/status" ]; then
		mount -t binfmt_misc binfmt_misc "$bm" || { log "cannot mount binfmt_misc on $bm"; return 1; }
		bm_mounted=1
		log "mounted host binfmt_misc on $bm"
	fi
	for e in "$bm"/*; do
		case ${e##*/} in register | status) continue ;; esac
		if grep -Eqi '^interpreter .*aarch64|^magic 7f454c46020101[0-9a-f]{18}0200b700' "$e" 2>/dev/null; then
			if [ "$(head -n 1 "$e")" = enabled ]; then
				log "host binfmt_misc already handles aarch64: ${e##*/}"
				return 0
			fi
			if [ "${e##*/}" = qemu-aarch64 ]; then
				echo 1 >"$e" && bm_enabled=qemu-aarch64 && log "enabled host binfmt_misc entry qemu-aarch64"
				return 0
			fi
		fi
	done
	printf '%s' ':qemu-aarch64:M::\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00:\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff:'"$qemu"':FP' \
		>"$bm/register" || { log "cannot register qemu-aarch64 on the host"; return 1; }
	bm_added=qemu-aarch64
	log "registered host binfmt_misc entry qemu-aarch64 -> $qemu (FP)"
}

rm_work() {
	if [ $keep = 1 ]; then log "kept $work"; return; fi
	# buildah's overlay storage may still hold mounts
	grep -o " $work/[^ ]*" /proc/mounts | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done || true
	rm -rf "$work"
}
trap 'binfmt_undo; rm_work' EXIT
trap 'exit 130' INT TERM

# --- the workload: context of ~2000 files, a build stage that generates data, a final stage -----
ctx=$work/ctx
if [ ! -f "$ctx/Dockerfile" ]; then
	log "making the context in $ctx"
	mkdir -p "$ctx"
	python3 - "$ctx" <<'PY'
import hashlib, os, sys
ctx = sys.argv[1]
# 2000 source files in 40 directories, 200 bytes to 8 KB each (~ 8 MB), deterministic content
for i in range(2000):
    d = os.path.join(ctx, "src", "mod%02d" % (i % 40))
    os.makedirs(d, exist_ok=True)
    seed = hashlib.sha256(b"file %d" % i).digest()
    size = 200 + (int.from_bytes(seed[:2], "big") % 8000)
    line = seed.hex().encode() + b"\n"
    with open(os.path.join(d, "f%04d.txt" % i), "wb") as f:
        f.write((line * (size // len(line) + 1))[:size])
PY
	cat >"$ctx/Dockerfile" <<'DF'
FROM busybox AS build
ARG TARGETARCH
COPY src /src
# a few thousand generated files
RUN mkdir -p /out/gen && cd /out/gen && \
    for d in $(seq 1 30); do mkdir d$d; for f in $(seq 1 100); do echo "$TARGETARCH $d $f" > d$d/f$f; done; done
# a few MB of data, hashed
RUN dd if=/dev/zero of=/out/data.bin bs=1024 count=4096 2>/dev/null && \
    seq 1 300000 > /out/numbers.txt && \
    cd /src && find . -type f | sort | xargs sha256sum > /out/src.sha256 && \
    sha256sum /out/data.bin /out/numbers.txt > /out/data.sha256 && \
    tar -cf /out/src.tar -C /src . && gzip -9 /out/src.tar
FROM busybox
COPY --from=build /out /app
COPY src /app/src
RUN find /app -type f | wc -l > /app/count.txt
CMD ["cat", "/app/count.txt"]
DF
fi
log "context: $(find "$ctx" -type f | wc -l) files, $(du -sh "$ctx" | cut -f1)"

now() { date +%s.%N; }
elapsed() { python3 -c 'import sys; print("%.2f" % (float(sys.argv[2]) - float(sys.argv[1])))' "$1" "$2"; }
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "-"; else if (NR % 2) print v[(NR + 1) / 2]; else printf "%.2f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
platforms_of() { skopeo inspect --raw "oci-archive:$1" 2>/dev/null | jq -r '[.manifests[]?.platform | "\(.os)/\(.architecture)"] | sort | join(",")'; }

# --- kiln: fresh --root each run; the base is loaded before the clock starts --------------------
kiln_times=()
kiln_status=ok
run_kiln() { # N
	local r=$work/kiln-root-$1 out=$work/kiln-$1.tar t0 t1
	rm -rf "$r" "$out"
	KILN_ROOT=$r "$KILN" load "$base" >"$work/kiln-$1.log" 2>&1 || return 1
	t0=$(now)
	KILN_ROOT=$r "$KILN" build --platform linux/amd64,linux/arm64 --progress plain \
		-o "type=oci,dest=$out" "$ctx" >>"$work/kiln-$1.log" 2>&1 || return 1
	t1=$(now)
	kiln_times+=("$(elapsed "$t0" "$t1")")
	log "kiln run $1: ${kiln_times[-1]} s, platforms $(platforms_of "$out")"
	rm -rf "$r"
}

# --- buildah: fresh storage each run; the base is loaded before the clock starts ----------------
buildah_times=()
buildah_status=ok
run_buildah() { # N
	local s=$work/buildah-$1 out=$work/buildah-$1.tar a t0 t1
	local b=(buildah --root "$s/root" --runroot "$s/run" --storage-driver overlay)
	rm -rf "$s" "$out"
	# skopeo cannot copy a list into containers-storage: each platform, then a local list named busybox
	for a in amd64 arm64; do
		skopeo copy -q --override-os linux --override-arch "$a" "oci-archive:$base" \
			"containers-storage:[overlay@$s/root+$s/run]localhost/busybox-base:$a" || return 1
	done
	"${b[@]}" manifest create docker.io/library/busybox:latest >/dev/null || return 1
	for a in amd64 arm64; do
		"${b[@]}" manifest add docker.io/library/busybox:latest "containers-storage:localhost/busybox-base:$a" >/dev/null || return 1
	done
	t0=$(now)
	{
		"${b[@]}" bud --runtime runc --pull=never --platform linux/amd64,linux/arm64 \
			--manifest bench-app "$ctx" &&
			"${b[@]}" manifest push --all bench-app "oci-archive:$out"
	} >"$work/buildah-$1.log" 2>&1 || return 1
	t1=$(now)
	buildah_times+=("$(elapsed "$t0" "$t1")")
	log "buildah run $1: ${buildah_times[-1]} s, platforms $(platforms_of "$out")"
	grep -o " $s/[^ ]*" /proc/mounts | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done || true
	rm -rf "$s"
}

log "kiln: $KILN; $runs cold run(s) each; work dir $work"
case " $tools " in *" kiln "*)
	for i in $(seq 1 "$runs"); do
		if ! run_kiln "$i"; then
			kiln_status="failed (log: $work/kiln-$i.log)"
			log "kiln run $i failed:"
			tail -n 15 "$work/kiln-$i.log" | sed 's/^/    /' >&2
			keep=1
			break
		fi
	done ;;
*) kiln_status="not run" ;;
esac

case " $tools " in *" buildah "*)
	if binfmt_setup; then
		for i in $(seq 1 "$runs"); do
			if ! run_buildah "$i"; then
				buildah_status="failed (log: $work/buildah-$i.log)"
				log "buildah run $i failed:"
				tail -n 15 "$work/buildah-$i.log" | sed 's/^/    /' >&2
				keep=1
				break
			fi
		done
	else
		buildah_status="failed: no host binfmt_misc registration for arm64"
	fi
	binfmt_undo ;;
*) buildah_status="not run" ;;
esac

km=$(median "${kiln_times[@]}")
bm_=$(median "${buildah_times[@]}")
echo
echo "cold two-platform build (linux/amd64 + linux/arm64 under QEMU), one oci-archive out"
echo "host: $(nproc) CPUs, $(uname -r); $runs run(s) each; workload: $(find "$ctx" -type f | wc -l) context files"
printf '%-9s %-8s %-12s %s\n' tool status median_s "runs_s"
status_word() { case $1 in ok) echo ok ;; "not run") echo - ;; *) echo FAIL ;; esac; }
printf '%-9s %-8s %-12s %s\n' kiln "$(status_word "$kiln_status")" "$km" "${kiln_times[*]:-}"
printf '%-9s %-8s %-12s %s\n' buildah "$(status_word "$buildah_status")" "$bm_" "${buildah_times[*]:-}"
[ "$kiln_status" = ok ] || echo "kiln: $kiln_status"
[ "$buildah_status" = ok ] || echo "buildah: $buildah_status"
if [ "$kiln_status" = ok ] && [ "$buildah_status" = ok ]; then
	echo "ratio buildah/kiln: $(python3 -c 'import sys; print("%.2f" % (float(sys.argv[1]) / float(sys.argv[2])))' "$bm_" "$km")"
else
	echo "ratio buildah/kiln: n/a"
fi
