#!/usr/bin/env bash
# Benchmark: the step cache, kiln vs buildah (`buildah bud --layers`), on the multi-stage workload
# of bench/multiplatform.sh built for linux/amd64 + linux/arm64 (arm64 RUN steps under QEMU), each
# build writing ONE oci-archive with both platforms. Three scenarios, in this order, in one fresh
# store per run: cold (empty cache), warm (nothing changed), incremental (one source file changed).
# Prints a table with the median wall time per scenario and tool, the ratio buildah/kiln, kiln's
# peak RSS (/usr/bin/time -f %M) and cache hit rate, and the issue's targets (warm >= 10x faster
# than buildah, incremental >= 2x, kiln peak memory < 200 MiB), which are printed, never asserted.
# See bench/README.md.
#
# Usage: bench/cache.sh [-n RUNS] [--keep]
# Environment: KILN (kiln binary, default build/builder/kiln), FIX (fixture dir; default
# tests/fixtures/cached.sh amd64 arm64), BENCH_DIR (work dir, default a temp dir under /var/tmp),
# BENCH_TOOLS ("kiln buildah", or one of them).
#
# Needs root, installs what it needs (buildah, runc, qemu-user-static, skopeo, time) with apt-get,
# and registers qemu-aarch64 on the HOST's binfmt_misc for buildah's runs only, as
# bench/multiplatform.sh does (undone right after them and on exit).
set -euo pipefail

. "$(dirname "$0")/lib.sh"
bench_parse_args "$@"
bench_init time
bench_make_context
scenarios=(cold warm incremental)

# the incremental change: one line appended to one source file that both stages COPY
edit=$ctx/src/mod00/f0000.txt
[ -f "$work/edit.orig" ] || cp "$edit" "$work/edit.orig"
src_restore() { cat "$work/edit.orig" >"$edit"; }
src_edit() { src_restore; echo "incremental change" >>"$edit"; }
prepare() { # SCENARIO: the context as the scenario wants it
	case $1 in incremental) src_edit ;; *) src_restore ;; esac
}

declare -A times rss hits

# --- kiln: a fresh --root per run, the base loaded before the clock starts ---------------------
run_kiln() { # N
	local r=$work/kiln-root-$1 sc out t0 t1 lg=$work/kiln-$1.log
	rm -rf "$r"
	KILN_ROOT=$r "$KILN" load "$base" >"$lg" 2>&1 || return 1
	for sc in "${scenarios[@]}"; do
		prepare "$sc"
		out=$work/kiln-$1-$sc.tar
		rm -f "$out"
		echo "=== $sc" >>"$lg"
		t0=$(now)
		KILN_ROOT=$r /usr/bin/time -f %M -o "$work/kiln-$1-$sc.rss" "$KILN" build \
			--platform linux/amd64,linux/arm64 --progress plain --report "$work/kiln-$1-$sc.json" \
			-o "type=oci,dest=$out" "$ctx" >>"$lg" 2>&1 || return 1
		t1=$(now)
		times[kiln:$sc]+="$(elapsed "$t0" "$t1") "
		rss[kiln:$sc]+="$(tail -n 1 "$work/kiln-$1-$sc.rss") "
		hits[$sc]+="$(jq -r '.totals.cache_hit_rate * 100 | round / 100' "$work/kiln-$1-$sc.json") "
		log "kiln run $1 $sc: $(elapsed "$t0" "$t1") s, peak RSS $(tail -n 1 "$work/kiln-$1-$sc.rss") KiB," \
			"$(jq -r '"hit rate \(.totals.cache_hit_rate), \(.totals.runs_executed) RUN executed"' "$work/kiln-$1-$sc.json")," \
			"platforms $(platforms_of "$out")"
	done
	src_restore
	rm -rf "$r"
}

# --- buildah --layers: fresh storage per run, the base loaded before the clock starts -----------
run_buildah() { # N
	local s=$work/buildah-$1 sc out t0 t1 lg=$work/buildah-$1.log
	buildah_storage "$s" >"$lg" 2>&1 || return 1
	for sc in "${scenarios[@]}"; do
		prepare "$sc"
		out=$work/buildah-$1-$sc.tar
		rm -f "$out"
		echo "=== $sc" >>"$lg"
		t0=$(now)
		{
			"${bcmd[@]}" bud --layers --runtime runc --pull=never --platform linux/amd64,linux/arm64 \
				--manifest bench-app "$ctx" &&
				"${bcmd[@]}" manifest push --all bench-app "oci-archive:$out"
		} >>"$lg" 2>&1 || return 1
		t1=$(now)
		# the next scenario builds a new list; the images (and their layer cache) stay
		"${bcmd[@]}" manifest rm bench-app >>"$lg" 2>&1 || return 1
		times[buildah:$sc]+="$(elapsed "$t0" "$t1") "
		log "buildah run $1 $sc: $(elapsed "$t0" "$t1") s, platforms $(platforms_of "$out")"
	done
	src_restore
	buildah_rm_storage "$s"
}

log "kiln: $KILN; $runs run(s) of cold, warm, incremental each; work dir $work"
bench_run_tools
src_restore

# max_of V...: the largest number, or - when none
max_of() { printf '%s\n' "$@" | sort -g | tail -n 1 | grep . || echo -; }
mib() { if [ "$1" = - ]; then echo -; else python3 -c 'import sys; print("%.1f" % (int(sys.argv[1]) / 1024))' "$1"; fi; }
# met RATIO TARGET: "met" / "NOT met" / "n/a"
met() { python3 -c 'import sys
try: print("met" if float(sys.argv[1]) >= float(sys.argv[2]) else "NOT met")
except ValueError: print("n/a")' "$1" "$2"; }

echo
echo "step cache, two-platform build (linux/amd64 + linux/arm64 under QEMU), one oci-archive out"
echo "host: $(nproc) CPUs, $(uname -r); $runs run(s) of each scenario; workload: $(find "$ctx" -type f | wc -l) context files"
echo "kiln: $(status_word "$kiln_status"); buildah --layers: $(status_word "$buildah_status")"
[ "$kiln_status" = ok ] || echo "kiln: $kiln_status"
[ "$buildah_status" = ok ] || echo "buildah: $buildah_status"
printf '%-12s %-8s %-10s %-13s %-22s %-14s %-9s %s\n' scenario kiln_s buildah_s buildah/kiln target \
	kiln_peak_MiB kiln_hits "runs_s (kiln | buildah)"
peak_all=()
for sc in "${scenarios[@]}"; do
	# shellcheck disable=SC2086
	{
		k=$(median ${times[kiln:$sc]:-})
		b=$(median ${times[buildah:$sc]:-})
		p=$(max_of ${rss[kiln:$sc]:-})
		h=$(median ${hits[$sc]:-})
	}
	[ "$p" = - ] || peak_all+=("$p")
	r=$(ratio "$b" "$k")
	case $sc in
	warm) tg="ratio >= 10: $(met "$r" 10)" ;;
	incremental) tg="ratio >= 2: $(met "$r" 2)" ;;
	*) tg="-" ;;
	esac
	printf '%-12s %-8s %-10s %-13s %-22s %-14s %-9s %s\n' "$sc" "$k" "$b" "$r" "$tg" "$(mib "$p")" "$h" \
		"${times[kiln:$sc]:-}| ${times[buildah:$sc]:-}"
done
pk=$(max_of "${peak_all[@]}")
if [ "$pk" = - ]; then
	echo "kiln peak memory: n/a (target < 200 MiB)"
else
	echo "kiln peak memory: $(mib "$pk") MiB over all builds; target < 200 MiB: $([ "$pk" -lt $((200 * 1024)) ] && echo met || echo NOT met)"
fi
