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

. "$(dirname "$0")/lib.sh"
bench_parse_args "$@"
bench_init
bench_make_context

# --- kiln: fresh --root each run; the base is loaded before the clock starts --------------------
kiln_times=()
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
run_buildah() { # N
	local s=$work/buildah-$1 out=$work/buildah-$1.tar t0 t1
	rm -f "$out"
	buildah_storage "$s" || return 1
	t0=$(now)
	{
		"${bcmd[@]}" bud --runtime runc --pull=never --platform linux/amd64,linux/arm64 \
			--manifest bench-app "$ctx" &&
			"${bcmd[@]}" manifest push --all bench-app "oci-archive:$out"
	} >"$work/buildah-$1.log" 2>&1 || return 1
	t1=$(now)
	buildah_times+=("$(elapsed "$t0" "$t1")")
	log "buildah run $1: ${buildah_times[-1]} s, platforms $(platforms_of "$out")"
	buildah_rm_storage "$s"
}

log "kiln: $KILN; $runs cold run(s) each; work dir $work"
bench_run_tools

km=$(median "${kiln_times[@]}")
bm_=$(median "${buildah_times[@]}")
echo
echo "cold two-platform build (linux/amd64 + linux/arm64 under QEMU), one oci-archive out"
echo "host: $(nproc) CPUs, $(uname -r); $runs run(s) each; workload: $(find "$ctx" -type f | wc -l) context files"
printf '%-9s %-8s %-12s %s\n' tool status median_s "runs_s"
printf '%-9s %-8s %-12s %s\n' kiln "$(status_word "$kiln_status")" "$km" "${kiln_times[*]:-}"
printf '%-9s %-8s %-12s %s\n' buildah "$(status_word "$buildah_status")" "$bm_" "${buildah_times[*]:-}"
[ "$kiln_status" = ok ] || echo "kiln: $kiln_status"
[ "$buildah_status" = ok ] || echo "buildah: $buildah_status"
if [ "$kiln_status" = ok ] && [ "$buildah_status" = ok ]; then
	echo "ratio buildah/kiln: $(ratio "$bm_" "$km")"
else
	echo "ratio buildah/kiln: n/a"
fi
