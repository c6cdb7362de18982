# shellcheck shell=bash
# Shared parts of the benchmarks (multiplatform.sh, cache.sh): options, root check, packages,
# fixtures, the work dir and its cleanup, the host binfmt_misc registration buildah needs, the
# workload, buildah storage with the base loaded, running each tool's runs, timing helpers. Source
# it after `set -euo pipefail`, then call bench_parse_args "$@", bench_init "PACKAGE..." (extra
# packages), bench_make_context, define run_kiln and run_buildah, call bench_run_tools, and use
# the rest.
#
# Sets: repo, KILN, tools, runs, keep (0, or 1 with --keep), FIX, base (busybox-multi.oci.tar),
# work, ctx, kiln_status and buildah_status
# Environment: KILN, FIX, BENCH_DIR, BENCH_TOOLS (see bench/README.md).

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
KILN=${KILN:-$repo/build/builder/kiln}
tools=${BENCH_TOOLS:-kiln buildah}
runs=3
keep=0
log() { echo "bench: $*" >&2; }

# bench_parse_args ARG...: [-n RUNS] [--keep]; -h prints the script's header comment
bench_parse_args() {
	while [ $# -gt 0 ]; do
		case $1 in
		-n) runs=$2; shift 2 ;;
		--keep) keep=1; shift ;;
		-h | --help) sed -n '2,/^[^#]/{/^#/p}' "$0"; exit 0 ;;
		*) echo "usage: $0 [-n RUNS] [--keep]" >&2; exit 2 ;;
		esac
	done
	[ "$runs" -ge 1 ] 2>/dev/null || { echo "bench: -n wants a positive number" >&2; exit 2; }
}

# bench_init [PACKAGE...]: root, packages (buildah runc qemu-user-static skopeo jq python3 + the
# given ones, installed with apt-get when missing), fixtures, work dir, cleanup on exit
bench_init() {
	local p need=()
	if [ "$(id -u)" -ne 0 ]; then
		log "run as root (apt-get, host binfmt_misc for buildah)"
		exit 2
	fi
	for p in buildah runc qemu-user-static skopeo jq python3 "$@"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need+=("$p")
	done
	if [ ${#need[@]} -gt 0 ]; then
		log "installing ${need[*]}"
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}" >&2 ||
			{ { apt-get update -q >&2 || true; } && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}" >&2; }
	fi
	qemu=/usr/bin/qemu-aarch64-static
	[ -x "$qemu" ] || { log "no $qemu after installing qemu-user-static"; exit 1; }

	FIX=${FIX:-$("$repo/tests/fixtures/cached.sh" amd64 arm64)}
	base=$FIX/busybox-multi.oci.tar
	[ -s "$base" ] || { log "no $base (tests/fixtures/cached.sh amd64 arm64 makes it)"; exit 1; }

	work=${BENCH_DIR:-$(mktemp -d /var/tmp/kiln-bench.XXXXXX)}
	mkdir -p "$work"
	ctx=$work/ctx
	trap 'binfmt_undo; rm_work' EXIT
	trap 'exit 130' INT TERM
}

# umount_under DIR: lazily unmounts whatever (buildah's overlay storage) is still mounted below DIR
umount_under() {
	grep -o " $1/[^ ]*" /proc/mounts | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done || true
}

rm_work() {
	if [ "$keep" = 1 ]; then log "kept $work"; return; fi
	umount_under "$work"
	rm -rf "$work"
}

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

# --- the workload: context of ~2000 files, a build stage that generates data, a final stage -----
# bench_make_context: makes $ctx once (kept when BENCH_DIR is reused)
bench_make_context() {
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
}

# --- buildah: storage under DIR with the base loaded as busybox (a local two-platform list) -----
# buildah_cmd DIR: prints nothing; sets the array bcmd to `buildah` with DIR's storage
buildah_cmd() {
	bcmd=(buildah --root "$1/root" --runroot "$1/run" --storage-driver overlay)
}
# buildah_storage DIR: fresh storage in DIR holding docker.io/library/busybox:latest for both
# platforms (skopeo cannot copy a list into containers-storage: each platform, then a local list)
buildah_storage() {
	local s=$1 a
	buildah_cmd "$s"
	rm -rf "$s"
	for a in amd64 arm64; do
		skopeo copy -q --override-os linux --override-arch "$a" "oci-archive:$base" \
			"containers-storage:[overlay@$s/root+$s/run]localhost/busybox-base:$a" || return 1
	done
	"${bcmd[@]}" manifest create docker.io/library/busybox:latest >/dev/null || return 1
	for a in amd64 arm64; do
		"${bcmd[@]}" manifest add docker.io/library/busybox:latest "containers-storage:localhost/busybox-base:$a" >/dev/null || return 1
	done
}
# buildah_rm_storage DIR
buildah_rm_storage() {
	umount_under "$1"
	rm -rf "$1"
}

# --- running the tools ---------------------------------------------------------------------------
# bench_runs TOOL: run_TOOL 1..runs; on the first failure sets TOOL_status, shows its log's tail
# and keeps the work dir
bench_runs() {
	local i
	for i in $(seq 1 "$runs"); do
		if ! "run_$1" "$i"; then
			printf -v "$1_status" 'failed (log: %s)' "$work/$1-$i.log"
			log "$1 run $i failed:"
			tail -n 15 "$work/$1-$i.log" | sed 's/^/    /' >&2
			keep=1
			break
		fi
	done
}
# bench_run_tools: the runs of each tool in $tools (buildah's with the host binfmt_misc set up just
# around them); sets kiln_status and buildah_status (ok, "not run" or why it failed)
# shellcheck disable=SC2034 # the statuses are read by the scripts
bench_run_tools() {
	kiln_status=ok
	buildah_status=ok
	case " $tools " in
	*" kiln "*) bench_runs kiln ;;
	*) kiln_status="not run" ;;
	esac
	case " $tools " in
	*" buildah "*)
		if binfmt_setup; then
			bench_runs buildah
		else
			buildah_status="failed: no host binfmt_misc registration for arm64"
		fi
		binfmt_undo
		;;
	*) buildah_status="not run" ;;
	esac
}

# --- timing and output helpers ----------------------------------------------------------------
now() { date +%s.%N; }
elapsed() { python3 -c 'import sys; print("%.2f" % (float(sys.argv[2]) - float(sys.argv[1])))' "$1" "$2"; }
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "-"; else if (NR % 2) print v[(NR + 1) / 2]; else printf "%.2f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
# ratio A B: A/B with two decimals, or n/a when either is not a number or B is 0
ratio() { python3 -c 'import sys
try: print("%.2f" % (float(sys.argv[1]) / float(sys.argv[2])))
except (ValueError, ZeroDivisionError): print("n/a")' "$1" "$2"; }
platforms_of() { skopeo inspect --raw "oci-archive:$1" 2>/dev/null | jq -r '[.manifests[]?.platform | "\(.os)/\(.architecture)"] | sort | join(",")'; }
status_word() { case $1 in ok) echo ok ;; "not run") echo - ;; *) echo FAIL ;; esac; }
