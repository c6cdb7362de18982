#!/usr/bin/env bash
# Benchmark: what the private network (pasta) costs a RUN step, against `--network host`.
#   - trivial steps: a build of 10 `RUN true` steps; the first RUN step of a build also pays the
#     once-per-build check that pasta works here, the others only their own pasta;
#   - downloads from the Debian mirror, like apt-get's: `wget` of bookworm's Release file and of
#     main/binary-amd64/Packages.xz (skipped, with a note, when the mirror is unreachable);
#   - the Debian workload's own step, `RUN apt-get update` on a Debian bookworm base (as root: the
#     base is made once with mmdebstrap --variant=apt, installed when missing, cached in
#     /var/cache/kiln-bench, and imported with kiln itself: FROM scratch + ADD of the tarball).
# Each run builds with --no-cache once per network, alternating; the times are the steps' wall_s
# from kiln's --report. Prints the median per step and the difference private - host.
#
# Usage: bench/network.sh [-n RUNS] [--keep]
# Environment: KILN (kiln binary, default build/builder/kiln), FIX (fixture dir; default
# tests/fixtures/cached.sh amd64), BENCH_DIR (work dir, default a temp dir under /var/tmp).
# Runs as root or as an ordinary user; needs pasta (package passt) and python3.
set -euo pipefail

. "$(dirname "$0")/lib.sh"
runs=5
bench_parse_args "$@"
FIX=${FIX:-$("$repo/tests/fixtures/cached.sh" amd64)}
work=${BENCH_DIR:-$(mktemp -d /var/tmp/kiln-bench-net.XXXXXX)}
mkdir -p "$work"
cleanup() {
	if [ "$keep" = 1 ]; then log "kept $work"; return; fi
	rm -rf "$work" 2>/dev/null || unshare --user --map-auto --map-root-user rm -rf "$work" || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM
export KILN_ROOT=$work/root
"$KILN" load "$FIX/busybox-amd64.oci.tar" >/dev/null
"$KILN" doctor 2>/dev/null | grep -E '^[a-zA-Z]+ +network:' >&2 || true

mirror=http://deb.debian.org/debian/dists/bookworm
mkdir -p "$work/trivial" "$work/fetch"
{
	echo "FROM busybox"
	for i in $(seq 10); do echo "RUN true $i"; done
} >"$work/trivial/Dockerfile"
# the first RUN pays the once-per-build pasta check, so the downloads show only their own cost
cat >"$work/fetch/Dockerfile" <<DF
FROM busybox
RUN true
RUN wget -q -O /dev/null $mirror/Release
RUN wget -q -O /dev/null $mirror/main/binary-amd64/Packages.xz
DF
fetch=1
if ! python3 -c "import urllib.request; urllib.request.urlopen('$mirror/Release', timeout=20).read()" 2>/dev/null; then
	log "deb.debian.org is not reachable from this host: the download steps are left out"
	fetch=0
fi

debian=0
if [ "$fetch" = 1 ] && [ "$(id -u)" -eq 0 ]; then
	cache=/var/cache/kiln-bench
	tarball=$cache/debian-bookworm-apt.tar
	if [ ! -s "$tarball" ]; then
		command -v mmdebstrap >/dev/null ||
			DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends mmdebstrap >&2
		mkdir -p "$cache"
		log "making a Debian bookworm base with mmdebstrap (once; cached in $cache)"
		# mmdebstrap picks the output format by the name: the temp name ends in .tar too
		mmdebstrap --quiet --variant=apt --skip=output/dev bookworm "$cache/.tmp-$$.tar" \
			http://deb.debian.org/debian >&2 && mv "$cache/.tmp-$$.tar" "$tarball"
	fi
	mkdir -p "$work/debbase" "$work/apt"
	ln -f "$tarball" "$work/debbase/debian.tar" 2>/dev/null || cp "$tarball" "$work/debbase/debian.tar"
	printf 'FROM scratch\nADD debian.tar /\nCMD ["bash"]\n' >"$work/debbase/Dockerfile"
	printf 'FROM bench-debian:bookworm\nRUN apt-get update\n' >"$work/apt/Dockerfile"
	"$KILN" build --progress quiet -t bench-debian:bookworm "$work/debbase" >/dev/null && debian=1
fi
[ "$debian" = 1 ] || log "the apt-get update step is left out (needs root and the Debian mirror)"

build() { # CTX NETWORK RUN
	local rep=$work/$(basename "$1")-$2-$3.json
	"$KILN" build --no-cache --progress quiet --network "$2" --report "$rep" "$1" \
		>"$work/$(basename "$1")-$2-$3.log" 2>&1 ||
		{ log "build $1 --network $2 failed:"; tail -n 5 "$work/$(basename "$1")-$2-$3.log" >&2; exit 1; }
	if grep -q 'warning: RUN steps use the host network' "$work/$(basename "$1")-$2-$3.log"; then
		log "pasta did not start (see kiln doctor): the private network fell back to the host's"
		exit 1
	fi
}

for n in $(seq "$runs"); do
	for net in default host; do
		build "$work/trivial" "$net" "$n"
		[ "$fetch" = 0 ] || build "$work/fetch" "$net" "$n"
		[ "$debian" = 0 ] || build "$work/apt" "$net" "$n"
	done
	log "run $n/$runs done"
done

python3 - "$work" "$runs" "$fetch" "$debian" <<'PY'
import json, statistics, sys
work, runs, fetch, debian = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1", sys.argv[4] == "1"

def run_steps(ctx, net, n):
    rep = json.load(open(f"{work}/{ctx}-{net}-{n}.json"))
    return [s["wall_s"] for s in rep["steps"] if s["instruction"].startswith("RUN")]

rows = []
def row(name, pick, ctx):
    vals = {net: [pick(run_steps(ctx, net, n)) for n in range(1, runs + 1)] for net in ("default", "host")}
    med = {net: statistics.median(v) * 1000 for net, v in vals.items()}
    rows.append((name, med["default"], med["host"], med["default"] - med["host"],
                 " ".join("%.0f" % (x * 1000) for x in vals["default"])))

row("RUN true (steps 2-10, per step)", lambda w: statistics.median(w[1:]), "trivial")
row("RUN true (first step: + pasta check)", lambda w: w[0], "trivial")
row("whole build of 10 RUN true", lambda w: sum(w), "trivial")
if fetch:
    row("wget Release (150 KB)", lambda w: w[1], "fetch")
    row("wget Packages.xz (8.8 MB)", lambda w: w[2], "fetch")
if debian:
    row("apt-get update (Debian bookworm base)", lambda w: w[0], "apt")

print("%-38s %12s %12s %12s   %s" % ("step", "private_ms", "host_ms", "cost_ms", "private runs_ms"))
for name, p, h, d, r in rows:
    print("%-38s %12.0f %12.0f %+12.0f   %s" % (name, p, h, d, r))
print("medians over %d runs each; private = kiln's default network (pasta), host = --network host" % runs)
PY
