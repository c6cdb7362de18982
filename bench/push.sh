#!/usr/bin/env bash
# Benchmark: pushing one two-platform artifact to two registries with two tags each, and pulling
# it back, kiln vs skopeo. The registries are real (Debian's docker-registry with TLS from the
# suite's CA and htpasswd auth, started with tests/registry/start.sh on loopback), fresh for each
# run. The artifact (linux/amd64 + linux/arm64, ~25 MB of random data per platform in four
# layers on the busybox base) is built once with kiln; when kiln cannot build it, the busybox
# fixture busybox-multi.oci.tar stands in (said in the output).
#
# Scenarios, in this order, per run (the refs are HOST1/bench/app:1, :2 and HOST2/bench/app:1, :2):
#   all platforms (skopeo copy --all, one copy per ref; kiln push ART REF1 REF2 REF3 REF4):
#     first push (empty registries), re-push (everything is there), pull (HOST1/bench/app:1 into
#     an empty OCI layout dir for skopeo, an empty store for kiln)
#   one platform, linux/amd64 (skopeo copy; kiln push --platform linux/amd64), to a second pair
#     of fresh registries: first push, re-push, pull
# Prints each timing, then a table: median seconds per scenario and tool, the ratio skopeo/kiln
# and the issue's targets (first push >= 2x faster than skopeo, re-push >= 3x, pull >= 1.5x),
# which are printed, never asserted. Until `kiln push --help` works, kiln's columns say
# "kiln: not available yet", and until `kiln pull --help` works kiln's pull rows stay empty: no
# kiln number is ever made up.
#
# Usage: bench/push.sh [-n RUNS] [--keep]
# Environment: KILN (kiln binary, default build/builder/kiln), FIX (fixture dir; default
# tests/fixtures/cached.sh amd64 arm64), BENCH_DIR (work dir, default a temp dir under /var/tmp).
# Runs as root or as an ordinary user; needs skopeo, docker-registry, apache2-utils (htpasswd),
# openssl, curl, jq, python3 (see scripts/install-deps.sh). No network beyond loopback.
set -euo pipefail

. "$(dirname "$0")/lib.sh"
bench_parse_args "$@"
FIX=${FIX:-$("$repo/tests/fixtures/cached.sh" amd64 arm64)}
work=${BENCH_DIR:-$(mktemp -d /var/tmp/kiln-bench-push.XXXXXX)}
mkdir -p "$work"
regs=()
cleanup() {
	local r
	for r in "${regs[@]+"${regs[@]}"}"; do "$repo/tests/registry/stop.sh" "$r" >/dev/null 2>&1 || true; done
	if [ "$keep" = 1 ]; then log "kept $work"; return; fi
	rm -rf "$work" 2>/dev/null || unshare --user --map-auto --map-root-user rm -rf "$work" || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM
for bin in skopeo docker-registry htpasswd openssl curl jq; do
	command -v "$bin" >/dev/null || { log "$bin is not installed (scripts/install-deps.sh)"; exit 1; }
done

# --- the artifact -------------------------------------------------------------------------------
art=$work/artifact.oci.tar
artifact_note=
make_context() { # DIR: Dockerfile + per-arch random files (seeded: the same bytes every time)
	mkdir -p "$1"
	python3 - "$1" <<'PY'
import os, random, sys
ctx = sys.argv[1]
for arch in ("amd64", "arm64"):
    rnd = random.Random("kiln bench push " + arch)
    os.makedirs(os.path.join(ctx, arch), exist_ok=True)
    for name, mb in (("l1", 12), ("l2", 8), ("l3", 4), ("l4", 1)):
        p = os.path.join(ctx, arch, name)
        if not os.path.exists(p) or os.path.getsize(p) != mb << 20:
            with open(p, "wb") as f:
                f.write(rnd.randbytes(mb << 20))
PY
	cat >"$1/Dockerfile" <<'DF'
FROM busybox
ARG TARGETARCH
COPY ${TARGETARCH}/l1 /data/l1
COPY ${TARGETARCH}/l2 /data/l2
COPY ${TARGETARCH}/l3 /data/l3
COPY ${TARGETARCH}/l4 /data/l4
DF
}
if [ ! -s "$art" ]; then
	make_context "$work/ctx"
	if [ -x "$KILN" ] && KILN_ROOT=$work/build-root "$KILN" load "$FIX/busybox-multi.oci.tar" >"$work/build.log" 2>&1 &&
		KILN_ROOT=$work/build-root "$KILN" build --platform linux/amd64,linux/arm64 --progress plain \
			-o "type=oci,dest=$art" "$work/ctx" >>"$work/build.log" 2>&1; then
		log "artifact built with kiln: $art"
	else
		log "kiln could not build the artifact (see $work/build.log); using busybox-multi.oci.tar"
		cp "$FIX/busybox-multi.oci.tar" "$art"
		artifact_note=" (kiln build failed: the busybox fixture stands in)"
	fi
	rm -rf "$work/build-root"
fi
art_digest=sha256:$(skopeo inspect --raw "oci-archive:$art" | sha256sum | cut -d' ' -f1)
amd64_digest=$(skopeo inspect --raw "oci-archive:$art" | jq -r '.manifests[] | select(.platform.architecture == "amd64") | .digest')
art_mb=$(python3 -c 'import sys; print("%.1f" % (int(sys.argv[1]) / 1048576))' "$(stat -c %s "$art")")
log "artifact: $(platforms_of "$art"), index $art_digest, $art_mb MB"

# --- registries ---------------------------------------------------------------------------------
# start_pair NAME: two fresh TLS registries in $work/NAME; sets H1 H2 (host:port), CERTS, CREDS
start_pair() {
	local d=$work/$1
	rm -rf "$d"
	regs+=("$d")
	REG_INSTANCES="tls1 tls2" REG_WATCH_PID=$$ "$repo/tests/registry/start.sh" "$d" 2>>"$work/registries.log"
	# shellcheck disable=SC1091
	. "$d/env"
	H1=$REG_TLS1_HOST H2=$REG_TLS2_HOST CERTS=$REG_CERT_DIR CREDS=$REG_USER:$REG_PASSWORD
	# for kiln: docker's config.json with both hosts and the suite's CA (SSL_CERT_FILE)
	mkdir -p "$d/docker"
	printf '{"auths": {"%s": {"auth": "%s"}, "%s": {"auth": "%s"}}}\n' \
		"$H1" "$(printf %s "$CREDS" | base64 -w0)" "$H2" "$(printf %s "$CREDS" | base64 -w0)" >"$d/docker/config.json"
	DOCKER_CFG=$d/docker CA=$REG_CA
}
stop_pair() { "$repo/tests/registry/stop.sh" "$work/$1" >/dev/null 2>&1 || true; }
refs() { echo "$H1/bench/app:1 $H1/bench/app:2 $H2/bench/app:1 $H2/bench/app:2"; }

# --- the tools --------------------------------------------------------------------------------------
# skopeo_push ALL(1|0): copies the artifact to the four refs, one skopeo copy each
skopeo_push() {
	local r all=()
	[ "$1" = 1 ] && all=(--all)
	for r in $(refs); do
		skopeo copy -q "${all[@]}" --dest-cert-dir "$CERTS" --dest-creds "$CREDS" \
			"oci-archive:$art" "docker://$r" || return 1
	done
}
# skopeo_pull ALL DIR: HOST1/bench/app:1 into the empty OCI layout DIR
skopeo_pull() {
	local all=()
	[ "$1" = 1 ] && all=(--all)
	rm -rf "$2"
	skopeo copy -q "${all[@]}" --src-cert-dir "$CERTS" --src-creds "$CREDS" "docker://$H1/bench/app:1" "oci:$2:pulled"
}

# ---- KILN SLOT: kiln's push and pull (pull only once `kiln pull --help` works) -----------------
# One `kiln push [--platform P] --tls-ca CA oci-archive:ART REF...` for the four refs, one
# `kiln pull [--all-platforms | --platform P] REF` into an empty store;
# credentials from $DOCKER_CONFIG/config.json. A file source goes through a scratch store (kiln
# imports it, verifying every blob, then pushes): that import is inside the clock.
# `--platform linux/amd64` pushes a new index holding only that manifest (skopeo without --all
# pushes the bare manifest): check_refs accepts either form.
kiln_available() { "$KILN" push --help >/dev/null 2>&1; }
kiln_pull_available() { "$KILN" pull --help >/dev/null 2>&1; }
kiln_push() { # ALL(1|0)
	local plat=()
	[ "$1" = 1 ] || plat=(--platform linux/amd64)
	# shellcheck disable=SC2046
	DOCKER_CONFIG=$DOCKER_CFG "$KILN" push --tls-ca "$CA" "${plat[@]}" "oci-archive:$art" $(refs)
}
kiln_pull() { # ALL(1|0) ROOT
	local plat=(--all-platforms)
	[ "$1" = 1 ] || plat=(--platform linux/amd64)
	rm -rf "$2"
	DOCKER_CONFIG=$DOCKER_CFG KILN_ROOT=$2 "$KILN" pull -q --tls-ca "$CA" "${plat[@]}" "$H1/bench/app:1"
}
# ---- end of the KILN SLOT --------------------------------------------------------------------

declare -A times
scenarios=("all:first push" "all:re-push" "all:pull" "one:first push" "one:re-push" "one:pull")
tools_run=(skopeo)
kiln_note="kiln: not available yet (\`kiln push --help\` fails): kiln columns are empty"
if kiln_available; then
	tools_run+=(kiln)
	kiln_note=
	kiln_pull_available || kiln_note="kiln pull: not available yet (\`kiln pull --help\` fails): no kiln pull timings"
fi

# timed TOOL SCENARIO CMD...: runs CMD, adds its wall time to times[TOOL:SCENARIO]
timed() {
	local tool=$1 sc=$2 t0 t1 lg=$work/$1.log
	shift 2
	echo "=== $sc: $*" >>"$lg"
	t0=$(now)
	"$@" >>"$lg" 2>&1 || { log "$tool $sc failed (log: $lg)"; tail -n 5 "$lg" >&2; keep=1; return 1; }
	t1=$(now)
	times[$tool:$sc]+="$(elapsed "$t0" "$t1") "
	log "run $run $tool $sc: $(elapsed "$t0" "$t1") s"
}
# check_refs TOOL MODE: every ref gives the artifact's index digest (all) or its linux/amd64
# manifest's (one); checked outside the clock
check_refs() {
	local r d raw want=$art_digest what="index"
	if [ "$2" = one ]; then
		want=$amd64_digest
		what="linux/amd64 manifest"
	fi
	for r in $(refs); do
		raw=$(skopeo inspect --raw --cert-dir "$CERTS" --creds "$CREDS" "docker://$r")
		d=sha256:$(printf %s "$raw" | sha256sum | cut -d' ' -f1)
		# an index of just that manifest (kiln push --platform) is the one-platform form too
		if [ "$2" = one ] && [ "$d" != "$want" ] &&
			[ "$(printf %s "$raw" | jq -c '[.manifests[]?.digest]')" = "[\"$want\"]" ]; then
			d=$want
			what="linux/amd64 manifest (in an index of it)"
		fi
		if [ "$d" != "$want" ]; then
			log "NOTE: after $1's push $r has $d, not the artifact's $what $want"
			return 0
		fi
	done
	log "run $run: after $1's push all four refs give the artifact's $what digest"
}

# one_tool TOOL MODE(all|one): the three scenarios of MODE for TOOL on fresh registries
one_tool() {
	local tool=$1 mode=$2 every=0
	[ "$mode" = all ] && every=1
	start_pair "reg-$tool-$mode"
	timed "$tool" "$mode:first push" "${tool}_push" "$every" || return 1
	check_refs "$tool" "$mode"
	timed "$tool" "$mode:re-push" "${tool}_push" "$every" || return 1
	check_refs "$tool" "$mode"
	if [ "$tool" = kiln ] && ! kiln_pull_available; then
		stop_pair "reg-$tool-$mode"
		return 0
	fi
	timed "$tool" "$mode:pull" "${tool}_pull" "$every" "$work/pull-$tool-$mode" || return 1
	rm -rf "$work/pull-$tool-$mode"
	stop_pair "reg-$tool-$mode"
}

log "$runs run(s); work dir $work"
[ -z "$kiln_note" ] || log "$kiln_note"
for run in $(seq 1 "$runs"); do
	for tool in "${tools_run[@]}"; do
		for mode in all one; do
			one_tool "$tool" "$mode" || break 2
		done
	done
done

# met RATIO TARGET
met() { python3 -c 'import sys
try: print("met" if float(sys.argv[1]) >= float(sys.argv[2]) else "NOT met")
except ValueError: print("n/a")' "$1" "$2"; }

echo
echo "push: one two-platform artifact$artifact_note ($(platforms_of "$art"), $art_mb MB) to 2 registries x 2 tags, and pull"
echo "host: $(nproc) CPUs, $(uname -r); $runs run(s); registries: docker-registry $(docker-registry --version | awk '{print $NF}'), TLS + htpasswd on loopback"
echo "skopeo $(skopeo --version | awk '{print $NF}'): one \`skopeo copy\` per ref; kiln: one \`kiln push ART REF...\`"
[ -z "$kiln_note" ] || echo "$kiln_note"
printf '%-27s %-9s %-9s %-13s %-20s %s\n' scenario skopeo_s kiln_s skopeo/kiln target "runs_s (skopeo | kiln)"
for sc in "${scenarios[@]}"; do
	# shellcheck disable=SC2086
	{
		s=$(median ${times[skopeo:$sc]:-})
		k=$(median ${times[kiln:$sc]:-})
	}
	s=${s:--}
	k=${k:--}
	r=$(ratio "$s" "$k")
	case $sc in
	*"first push") tg="ratio >= 2: $(met "$r" 2)" ;;
	*re-push) tg="ratio >= 3: $(met "$r" 3)" ;;
	*pull) tg="ratio >= 1.5: $(met "$r" 1.5)" ;;
	esac
	label=${sc/#all:/all platforms, }
	label=${label/#one:/linux\/amd64, }
	printf '%-27s %-9s %-9s %-13s %-20s %s\n' "$label" "$s" "$k" "$r" "$tg" "${times[skopeo:$sc]:-}| ${times[kiln:$sc]:-}"
done
