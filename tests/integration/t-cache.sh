#!/usr/bin/env bash
# The step cache (issue 4), on a two-platform (linux/amd64 + linux/arm64 under QEMU) two-stage
# build from the busybox-multi fixture:
#   - cold, warm, touched-context, re-checkout (other dir, umask 077, other mtimes), --no-cache,
#     imported-cache (--cache-from) and other-user builds all give ONE index digest;
#   - warm: hit rate 1.0 and no RUN executed, on both platforms;
#   - a build-arg change misses from its ARG step on; a --source-date-epoch change misses all;
#   - --no-cache runs every RUN with reason no-cache;
#   - --cache-to type=local mode=max / mode=min, imported into a FRESH root with --cache-from:
#     max hits everything, min hits the final stage but not the build stage's RUN;
#   - editing one copied file: steps before its COPY hit, the COPY misses with
#     source-changed:src/a.txt, every later step with parent-changed;
#   - as root, the same build as the ordinary user kiln-tester (own root) gives the same digest.
#
# Needs the two-platform base busybox-multi.oci.tar (tests/fixtures/cached.sh amd64 arm64).
if [ -z "${FIX:-}" ]; then
	FIX=$("$(cd "$(dirname "$0")" && pwd)/../fixtures/cached.sh" amd64 arm64) ||
		{ echo "Bail out! no fixtures" >&2; exit 1; }
fi
. "$(dirname "$0")/lib.sh"
require_userns

base=$FIX/busybox-multi.oci.tar
if [ ! -s "$base" ]; then
	skip "two-platform base" "no $base (make it: tests/fixtures/cached.sh amd64 arm64)"
	finish
fi

# --- the workload -------------------------------------------------------------------------------
# Line numbers matter: the checks below select report steps by line.
#   build stage: 2 ARG, 3 COPY lib, 4 RUN            final stage: 7 ARG VERSION, 8 COPY --from,
#   9 COPY src (holds src/a.txt), 10 RUN, 11 ENV, 12 CMD
ctx=$(newdir ctx)
mkdir -p "$ctx/src/sub" "$ctx/src/more" "$ctx/lib"
echo "alpha" >"$ctx/src/a.txt"
echo "beta" >"$ctx/src/sub/b.txt"
for i in $(seq 1 20); do echo "more $i" >"$ctx/src/more/m$i.txt"; done
printf '#!/bin/sh\necho tool\n' >"$ctx/src/tool.sh"
chmod 755 "$ctx/src/tool.sh"
echo "x" >"$ctx/lib/x.txt"
echo "y" >"$ctx/lib/y.txt"
cat >"$ctx/Dockerfile" <<'DF'
FROM busybox AS build
ARG TARGETARCH
COPY lib /lib-src
RUN uname -m > /built.txt && echo "$TARGETARCH" >> /built.txt && cat /lib-src/*.txt >> /built.txt

FROM busybox
ARG VERSION=1
COPY --from=build /built.txt /app/built.txt
COPY src /app/src
RUN cat /app/src/a.txt /app/src/sub/b.txt /app/built.txt > /app/summary.txt && echo "v$VERSION" >> /app/summary.txt
ENV APP_MODE=release
CMD ["cat", "/app/summary.txt"]
DF
n_steps=18 # 9 per platform (FROM is not a step)
n_runs=4   # 2 per platform

o=$(newdir out)
# build ROOT NAME [options]: builds ctx (or $BCTX) into $o/NAME.tar with report $o/NAME.json
build() {
	local root=$1 name=$2
	shift 2
	rm -f "$o/$name.tar" "$o/$name.json"
	kiln build --root "$root" --platform linux/amd64,linux/arm64 \
		--build-context "busybox=oci-archive:$base" --report "$o/$name.json" "$@" \
		-o "type=oci,dest=$o/$name.tar" "${BCTX:-$ctx}"
}
index_digest() { skopeo inspect --raw "oci-archive:$1" 2>/dev/null | sha256sum | cut -d' ' -f1; }
# same_digest NAME: the index digest of $o/NAME.tar equals the cold build's
same_digest() {
	check_eq "$1: same index digest as the cold build" "$(index_digest "$o/$1.tar")" "$cold"
}
# full_hit NAME: every step cached, hit rate 1.0, no RUN executed, both platforms
full_hit() {
	check_jq "$1: every step hit (hit rate 1.0, runs_executed 0, $n_steps steps, 2 platforms)" \
		".totals.cache_hit_rate == 1 and .totals.cache_hits == $n_steps and .totals.steps == $n_steps
		and .totals.runs_executed == 0 and .totals.platform_builds == 2
		and ([.steps[] | select(.cached | not)] | length == 0)" "$o/$1.json"
}

# --- cold -------------------------------------------------------------------------------------
R1=$T/r1
cold=
if check "cold: build two platforms in a fresh root" build "$R1" cold; then
	cold=$(index_digest "$o/cold.tar")
	check "cold: the archive has an index digest" test -n "$cold" -a "$cold" != \
		"$(printf '' | sha256sum | cut -d' ' -f1)"
	check_jq "cold: $n_steps steps, no hit, every RUN executed ($n_runs)" \
		".totals.steps == $n_steps and .totals.cache_hits == 0 and .totals.runs_executed == $n_runs
		and .totals.cache_hit_rate == 0" "$o/cold.json"
	check_jq "cold: every miss is new-key or parent-changed" \
		'all(.steps[]; .reason == "new-key" or .reason == "parent-changed")' "$o/cold.json"
else
	echo "# the cold build failed: the rest of this file depends on it"
	finish
fi

# --- warm ---------------------------------------------------------------------------------------
if check "warm: build again in the same root" build "$R1" warm; then
	full_hit warm
	check_jq "warm: every RUN of both platforms is listed and cached" \
		'[.steps[] | select(.instruction | startswith("RUN"))]
		| length == 4 and all(.cached) and ([.[].platform | sub("/v8$"; "")] | sort == ["linux/amd64", "linux/amd64", "linux/arm64", "linux/arm64"])' \
		"$o/warm.json"
	check_jq "warm: hits have reason null" 'all(.steps[]; .reason == null)' "$o/warm.json"
	same_digest warm
fi

# --- touching every context file ------------------------------------------------------------
find "$ctx" -exec touch -h -d '2022-03-04 05:06:07' {} +
if check "touched: build after touching every context file" build "$R1" touched; then
	full_hit touched
	same_digest touched
fi

# --- re-checkout: another dir, umask 077 (files 0600, dirs 0700), other mtimes -------------
co=$T/checkout2
(umask 077 && cp -r "$ctx" "$co")
find "$co" -exec touch -h -d '2019-01-01 00:00:00' {} +
check_eq "re-checkout: the copy's files are 0600" "$(stat -c %a "$co/src/a.txt")" 600
BCTX=$co
if check "re-checkout: build the copy in a fresh root" build "$T/r2" checkout; then
	same_digest checkout
fi
if check "re-checkout: build the copy in the warm root" build "$R1" checkout-warm; then
	full_hit checkout-warm
	same_digest checkout-warm
fi
BCTX=

# --- --no-cache ---------------------------------------------------------------------------------
if check "no-cache: build with --no-cache in the warm root" build "$R1" nocache --no-cache; then
	check_jq "no-cache: every step ran with reason no-cache, every RUN executed" \
		".totals.cache_hits == 0 and .totals.runs_executed == $n_runs and .totals.steps == $n_steps
		and all(.steps[]; .cached == false and .reason == \"no-cache\")" "$o/nocache.json"
	same_digest nocache
fi

# --- build-arg change ---------------------------------------------------------------------------
if check "build-arg: build with --build-arg VERSION=2" build "$R1" arg --build-arg VERSION=2; then
	check_jq "build-arg: steps before the ARG (line 7) hit" \
		'[.steps[] | select(.line < 7)] | length == 6 and all(.cached)' "$o/arg.json"
	check_jq "build-arg: the ARG step and every later one miss" \
		'[.steps[] | select(.line >= 7)] | length == 12 and all(.cached | not)' "$o/arg.json"
	check_jq "build-arg: only the final stage RUN executed (one per platform)" \
		'.totals.runs_executed == 2' "$o/arg.json"
	check_eq "build-arg: a different index digest" \
		"$([ "$(index_digest "$o/arg.tar")" != "$cold" ] && echo differs)" differs
fi

# --- source date epoch change -------------------------------------------------------------------
if check "epoch: build with --source-date-epoch 1700000000" build "$R1" epoch --source-date-epoch 1700000000; then
	check_jq "epoch: every step misses, every RUN executed" \
		".totals.cache_hits == 0 and .totals.runs_executed == $n_runs and all(.steps[]; .cached | not)" \
		"$o/epoch.json"
	check_eq "epoch: a different index digest" \
		"$([ "$(index_digest "$o/epoch.tar")" != "$cold" ] && echo differs)" differs
fi
if check "epoch: back at the default epoch" build "$R1" epoch0; then
	full_hit epoch0
	same_digest epoch0
fi

# --- --cache-to / --cache-from (type=local) ---------------------------------------------------
cmax=$T/cache-max
cmin=$T/cache-min
if check "cache-to: warm build exporting mode=max" build "$R1" tomax --cache-to "type=local,dest=$cmax,mode=max"; then
	full_hit tomax
	same_digest tomax
	check "cache-to mode=max: the export dir is not empty" test -n "$(ls -A "$cmax" 2>/dev/null)"
fi
if check "cache-to: warm build exporting mode=min" build "$R1" tomin --cache-to "type=local,dest=$cmin,mode=min"; then
	same_digest tomin
	check "cache-to mode=min: the export dir is not empty" test -n "$(ls -A "$cmin" 2>/dev/null)"
fi
if check "cache-from mode=max: build in a fresh root" build "$T/r3" frommax --cache-from "type=local,src=$cmax"; then
	full_hit frommax
	check_jq "cache-from mode=max: the build stage's RUN hit on both platforms" \
		'[.steps[] | select(.stage == "build" and (.instruction | startswith("RUN")))] | length == 2 and all(.cached)' \
		"$o/frommax.json"
	same_digest frommax
fi
if check "cache-from mode=min: build in a fresh root" build "$T/r4" frommin --cache-from "type=local,src=$cmin"; then
	check_jq "cache-from mode=min: every final-stage step hit" \
		'[.steps[] | select(.line >= 7)] | length == 12 and all(.cached)' "$o/frommin.json"
	check_jq "cache-from mode=min: the build stage's RUN did not hit (min leaves it out)" \
		'[.steps[] | select(.stage == "build" and (.instruction | startswith("RUN")))] | all(.cached | not)' \
		"$o/frommin.json"
	check_jq "cache-from mode=min: no final-stage RUN executed" \
		'[.steps[] | select(.line >= 7 and (.instruction | startswith("RUN")))] | all(.cached)' "$o/frommin.json"
	same_digest frommin
fi

# --- root and an ordinary user --------------------------------------------------------------
# When run as root (scripts/test.sh runs this file as root and as kiln-tester), the same build as
# kiln-tester, with its own root, in a world-writable dir it can use.
tester=kiln-tester
if [ "$(id -u)" -eq 0 ]; then
	if ! id "$tester" >/dev/null 2>&1; then
		# as scripts/test.sh's ensure_tester makes it: a user with a subordinate id range
		useradd -m -s /bin/bash "$tester" >/dev/null 2>&1
		start=$(awk -F: 'NF >= 3 { e = $2 + $3; if (e > m) m = e } END { print (m < 100000 ? 100000 : m) }' \
			/etc/subuid /etc/subgid 2>/dev/null)
		for f in /etc/subuid /etc/subgid; do
			touch "$f"
			grep -q "^$tester:" "$f" || echo "$tester:$start:65536" >>"$f"
		done
	fi
	if id "$tester" >/dev/null 2>&1; then
		sh_=$T/shared
		mkdir -p "$sh_"
		chmod 1777 "$sh_"
		cp "$KILN" "$sh_/kiln"
		cp "$base" "$sh_/base.oci.tar"
		cp -r "$ctx" "$sh_/ctx"
		chmod -R a+rX "$sh_/kiln" "$sh_/base.oci.tar" "$sh_/ctx"
		home=$(getent passwd "$tester" | cut -d: -f6)
		check "as $tester: the same build in its own root" runuser -u "$tester" -- env -i \
			PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin HOME="$home" USER="$tester" \
			LOGNAME="$tester" LANG=C.UTF-8 TMPDIR=/tmp KILN_ROOT="$sh_/root" \
			timeout -k 10 "${KILN_TIMEOUT:-600}" "$sh_/kiln" build --platform linux/amd64,linux/arm64 \
			--build-context "busybox=oci-archive:$sh_/base.oci.tar" --report "$sh_/tester.json" \
			-o "type=oci,dest=$sh_/tester.tar" "$sh_/ctx" &&
			check_eq "as $tester: same index digest as root's build" "$(index_digest "$sh_/tester.tar")" "$cold"
	else
		skip "root vs $tester" "no user $tester and useradd failed"
	fi
else
	echo "# running as $(id -un): the root vs $tester comparison runs in the root pass"
fi

# --- editing one copied file (last: it changes the context) ---------------------------------
echo "alpha, edited" >"$ctx/src/a.txt"
if check "edit: build after editing src/a.txt" build "$R1" edit; then
	e=$o/edit.json
	check_jq "edit: every step before the COPY of src (line 9) hit" \
		'[.steps[] | select(.line < 9)] | length == 10 and all(.cached)' "$e"
	check_jq "edit: the COPY of src misses with reason source-changed:src/a.txt (both platforms)" \
		'[.steps[] | select(.line == 9)] | length == 2 and all(.cached == false and .reason == "source-changed:src/a.txt")' "$e"
	check_jq "edit: every later step misses with reason parent-changed" \
		'[.steps[] | select(.line > 9)] | length == 6 and all(.cached == false and .reason == "parent-changed")' "$e"
	check_jq "edit: only the final stage RUN executed (one per platform)" '.totals.runs_executed == 2' "$e"
	check_eq "edit: a different index digest" \
		"$([ "$(index_digest "$o/edit.tar")" != "$cold" ] && echo differs)" differs
fi

finish
