#!/usr/bin/env bash
# Multi-platform builds: `--platform linux/amd64,linux/arm64` on an x86-64 host with no host binfmt
# setup gives ONE index with both platforms, arm64 RUN steps under QEMU (registered in kiln's own
# user namespace); a `FROM --platform=$BUILDPLATFORM` stage runs once, not once per platform;
# the --report JSON; errors for a platform the base lacks and for a missing interpreter; doctor.
#
# Needs the two-platform base busybox-multi.oci.tar (tests/fixtures/cached.sh amd64 arm64).
if [ -z "${FIX:-}" ]; then
	FIX=$("$(cd "$(dirname "$0")" && pwd)/../fixtures/cached.sh" amd64 arm64) ||
		{ echo "Bail out! no fixtures" >&2; exit 1; }
fi
. "$(dirname "$0")/lib.sh"
require_userns

if [ ! -s "$FIX/busybox-multi.oci.tar" ]; then
	skip "two-platform base" "no $FIX/busybox-multi.oci.tar (make it: tests/fixtures/cached.sh amd64 arm64)"
	finish
fi

# use_root NAME: a fresh store for what follows, with busybox:latest = the two-platform base
# (the store shared by the other test files keeps its single-platform busybox:latest)
use_root() {
	KILN_ROOT=$T/$1
	export KILN_ROOT
	check "$1: load busybox-multi.oci.tar" kiln load "$FIX/busybox-multi.oci.tar"
}

# elf_machine FILE: e_machine of an ELF file as a name (x86_64, aarch64, other:N) or "not-elf"
elf_machine() {
	python3 - "$1" <<'PY'
import struct, sys
try:
    h = open(sys.argv[1], "rb").read(20)
except OSError:
    print("missing"); sys.exit()
if len(h) < 20 or h[:4] != b"\x7fELF":
    print("not-elf"); sys.exit()
m = struct.unpack("<H" if h[5] == 1 else ">H", h[18:20])[0]
print({62: "x86_64", 183: "aarch64"}.get(m, "other:%d" % m))
PY
}

# unpack_platform TAR ARCH DIR: the ARCH image of oci-archive TAR, unpacked to DIR/bundle/rootfs
unpack_platform() {
	local tar=$1 arch=$2 dir=$3
	rm_tree "$dir"
	mkdir -p "$dir"
	skopeo copy -q --override-os linux --override-arch "$arch" "oci-archive:$tar" "oci:$dir/layout:img" &&
		umoci unpack --rootless --image "$dir/layout:img" "$dir/bundle" >/dev/null
}

# sorted "os/arch[/variant]" of the index (skopeo inspect --raw) in FILE, comma-separated
index_platforms() {
	jq -r '[.manifests[]?.platform | "\(.os)/\(.architecture)" + (if .variant then "/\(.variant)" else "" end)]
		| sort | join(",")' "$1" 2>/dev/null
}

# report fields every step and the totals must have (SPEC.md "Build report")
report_shape='(.platforms | type == "array")
	and (.steps | type == "array" and length > 0)
	and all(.steps[]; has("platform") and has("stage") and has("line") and has("instruction")
		and has("cached") and has("reason") and has("emulated") and has("wall_s") and has("cpu_s")
		and has("layer"))
	and (.totals | has("steps") and has("cache_hits") and has("cache_hit_rate") and has("runs_executed")
		and has("platform_builds") and has("bytes_written") and has("wall_s"))'

o=$(newdir out)

# --- 1. two platforms, two stages: RUN under emulation for arm64, one index ----------------------
use_root root1
ctx=$(newdir ctx1)
cat >"$ctx/Dockerfile" <<'DF'
FROM busybox AS build
ARG TARGETPLATFORM
RUN uname -m > /arch.txt && echo "$TARGETPLATFORM" > /tp.txt && echo packed | gzip -c | gzip -dc > /gz.txt

FROM busybox
COPY --from=build /arch.txt /tp.txt /gz.txt /
DF
if check "build --platform linux/amd64,linux/arm64" kiln build --platform linux/amd64,linux/arm64 \
	-o "type=oci,dest=$o/out.tar" --report "$o/r.json" "$ctx"; then
	if check "skopeo inspect --raw the archive" skopeo inspect --raw "oci-archive:$o/out.tar"; then
		cp "$OUT" "$o/index.json"
		check_jq "the archive is one image index" \
			'.mediaType == "application/vnd.oci.image.index.v1+json" and (.manifests | length == 2)' "$o/index.json"
		plats=$(index_platforms "$o/index.json")
		check_eq "index platforms: exactly linux/amd64 and linux/arm64 (variant absent or v8)" \
			"${plats/linux\/arm64\/v8/linux/arm64}" "linux/amd64,linux/arm64"
		check_jq "index manifests are image manifests" \
			'all(.manifests[]; .mediaType == "application/vnd.oci.image.manifest.v1+json")' "$o/index.json"
	fi
	for p in amd64:x86_64 arm64:aarch64; do
		arch=${p%%:*} mach=${p#*:}
		u=$o/u-$arch
		if check "$arch: skopeo copy --override-arch + umoci unpack" unpack_platform "$o/out.tar" "$arch" "$u"; then
			r=$u/bundle/rootfs
			check_eq "$arch: /arch.txt from RUN is $mach" "$(cat "$r/arch.txt" 2>&1)" "$mach"
			check_eq "$arch: /tp.txt is TARGETPLATFORM linux/$arch" "$(cat "$r/tp.txt" 2>&1)" "linux/$arch"
			# busybox sh runs applets like gzip by exec of /proc/self/exe with argv[0] = the applet:
			# under QEMU that needs the binfmt_misc P flag (preserve argv[0])
			check_eq "$arch: gzip applet ran in RUN (argv[0] preserved)" "$(cat "$r/gz.txt" 2>&1)" packed
			check_eq "$arch: bin/busybox is an ELF for $mach" "$(elf_machine "$r/bin/busybox")" "$mach"
			skopeo inspect --config "oci:$u/layout:img" >"$u/config.json" 2>&1
			check_jq "$arch: config architecture is $arch" ".architecture == \"$arch\" and .os == \"linux\"" "$u/config.json"
		fi
	done
	r=$o/r.json
	check_jq "report: has every field of SPEC.md" "$report_shape" "$r"
	check_jq "report: platforms are linux/amd64 and linux/arm64" \
		'[.platforms[] | sub("/v8$"; "")] | sort == ["linux/amd64", "linux/arm64"]' "$r"
	check_jq "report: the arm64 RUN step is emulated" \
		'[.steps[] | select((.platform | startswith("linux/arm64")) and (.instruction | startswith("RUN")))]
		| length == 1 and all(.emulated == true)' "$r"
	check_jq "report: the amd64 RUN step is not emulated" \
		'[.steps[] | select(.platform == "linux/amd64" and (.instruction | startswith("RUN")))]
		| length == 1 and all(.emulated == false)' "$r"
	check_jq "report: RUN steps name stage build, line 3" \
		'[.steps[] | select(.instruction | startswith("RUN"))] | all(.stage == "build" and .line == 3)' "$r"
	check_jq "report: COPY steps name line 6" \
		'[.steps[] | select(.instruction | startswith("COPY"))] | length == 2 and all(.line == 6)' "$r"
	check_jq "report: totals.platform_builds == 2" '.totals.platform_builds == 2' "$r"
	check_jq "report: totals.runs_executed == 2 (one RUN per platform, cold)" '.totals.runs_executed == 2' "$r"
	check_jq "report: totals.steps and cache_hits count the steps" \
		'.totals.steps == (.steps | length) and .totals.cache_hits == ([.steps[] | select(.cached)] | length)' "$r"
	check_jq "report: cache_hit_rate = cache_hits / steps" \
		'(.totals.cache_hit_rate - (.totals.cache_hits / .totals.steps)) | (if . < 0 then -. else . end) < 0.001' "$r"
	check_jq "report: reasons of executed steps are from the SPEC list" \
		'[.steps[] | select(.cached | not) | .reason]
		| all(. == "no-cache" or . == "new-key" or . == "parent-changed" or startswith("source-changed:"))' "$r"
	check_jq "report: RUN steps made layers with digests" \
		'[.steps[] | select(.instruction | startswith("RUN")) | .layer]
		| all(type == "object" and (.digest | startswith("sha256:")) and (.diff_id | startswith("sha256:")) and .size > 0)' "$r"
	check_jq "report: bytes_written > 0, wall_s >= 0" '.totals.bytes_written > 0 and .totals.wall_s >= 0' "$r"

	# warm: everything is cached, the same index comes out
	if check "build again (warm cache)" kiln build --platform linux/amd64,linux/arm64 \
		-o "type=oci,dest=$o/out2.tar" --report "$o/r2.json" "$ctx"; then
		check_jq "warm report: no RUN executed, every RUN cached" \
			'.totals.runs_executed == 0 and ([.steps[] | select(.instruction | startswith("RUN")) | .cached] | length == 2 and all)' \
			"$o/r2.json"
		check_jq "warm report: cache_hits > 0, platform_builds == 2" \
			'.totals.cache_hits > 0 and .totals.cache_hit_rate > 0 and .totals.platform_builds == 2' "$o/r2.json"
		check_eq "warm build gives the same index digest" \
			"$(skopeo inspect --raw "oci-archive:$o/out2.tar" 2>/dev/null | sha256sum)" \
			"$(skopeo inspect --raw "oci-archive:$o/out.tar" 2>/dev/null | sha256sum)"
	fi
fi

# --- 2. cross-compile pattern: the $BUILDPLATFORM stage runs once -------------------------------
use_root root2
ctx=$(newdir ctx2)
cat >"$ctx/Dockerfile" <<'DF'
FROM --platform=$BUILDPLATFORM busybox AS gen
RUN echo "gen $(uname -m)" > /g.txt

FROM busybox
COPY --from=gen /g.txt /
DF
if check "cross-compile pattern: build two platforms" kiln build --platform linux/amd64,linux/arm64 \
	-o "type=oci,dest=$o/cross.tar" --report "$o/rc.json" "$ctx"; then
	r=$o/rc.json
	check_jq "cross: runs_executed == 1 (gen ran once)" '.totals.runs_executed == 1' "$r"
	check_jq "cross: the gen RUN is listed once, for linux/amd64, stage gen, not emulated" \
		'[.steps[] | select(.instruction | startswith("RUN"))]
		| length == 1 and .[0].platform == "linux/amd64" and .[0].stage == "gen" and .[0].emulated == false' "$r"
	check_jq "cross: platform_builds == 2" '.totals.platform_builds == 2' "$r"
	check_jq "cross: a COPY step per target platform" \
		'[.steps[] | select(.instruction | startswith("COPY")) | .platform | sub("/v8$"; "")] | sort == ["linux/amd64", "linux/arm64"]' "$r"
	for arch in amd64 arm64; do
		u=$o/c-$arch
		if check "cross $arch: unpack" unpack_platform "$o/cross.tar" "$arch" "$u"; then
			check_eq "cross $arch: /g.txt made on the build platform" "$(cat "$u/bundle/rootfs/g.txt" 2>&1)" "gen x86_64"
		fi
	done
fi

# --- 3. errors ----------------------------------------------------------------------------------
ctx=$(newdir ctx3)
printf 'FROM busybox\nRUN echo one > /one.txt\n' >"$ctx/Dockerfile"
if check_fail "a platform the base lacks: exit 1" 1 's390x' \
	kiln build --platform linux/s390x -o "type=oci,dest=$o/s390x.tar" "$ctx"; then
	check_grep "the error lists linux/amd64 as available" 'linux/amd64'
	check_grep "the error lists linux/arm64 as available" 'linux/arm64'
fi

# no interpreter: a PATH without qemu (only the id-map helpers) and an empty qemu search path
nobin=$(newdir nobin)
for h in newuidmap newgidmap; do
	p=$(command -v "$h") && ln -s "$p" "$nobin/$h"
done
tmo=$(command -v timeout)
check_fail "no qemu interpreter for arm64: exit 1 naming qemu-user-static" 1 'qemu-user-static' \
	env PATH="$nobin" KILN_QEMU_SEARCH_PATH=/nonexistent "$tmo" -k 10 "${KILN_TIMEOUT:-600}" \
	"$KILN" build --no-cache --platform linux/arm64 -o "type=oci,dest=$o/noqemu.tar" "$ctx"
check "no qemu interpreter: no artifact written" test ! -s "$o/noqemu.tar"

# --- 4. doctor ----------------------------------------------------------------------------------
if check "kiln doctor" kiln doctor; then
	grep -i 'arm64\|aarch64' "$OUT" >"$T/doctor-arm64.txt"
	check_grep "doctor: arm64 via private binfmt_misc (or host)" 'private binfmt_misc|[Hh]ost' "$T/doctor-arm64.txt"
	check_grep "doctor: arm64 names an interpreter path" '/[^ ]*qemu-aarch64' "$T/doctor-arm64.txt"
fi

finish
