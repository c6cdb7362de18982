#!/usr/bin/env bash
# kiln merge -o OUT IN...: per-platform artifacts built in separate stores (as separate CI jobs
# would) merge into the same index, byte for byte, as the one-command multi-platform build, in
# either order; a platform given twice is refused unless --replace (the later input wins).
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

ctx=$(newdir ctx)
echo "from the context" >"$ctx/ctx.txt"
cat >"$ctx/Dockerfile" <<'DF'
FROM busybox
ARG TARGETARCH
ARG FLAVOUR=plain
COPY ctx.txt /
RUN echo "$TARGETARCH $(uname -m) $FLAVOUR" > /which.txt
DF
o=$(newdir out)

# build ROOTNAME PLATFORMS OUT.TAR [options]: a build in its own fresh store
build() {
	local root=$T/$1 plats=$2 tar=$3
	shift 3
	[ -d "$root" ] || KILN_ROOT=$root kiln load "$FIX/busybox-multi.oci.tar" >/dev/null 2>&1
	KILN_ROOT=$root kiln build --platform "$plats" -t app:1 -o "type=oci,dest=$tar" "$@" "$ctx"
}
index_sum() { skopeo inspect --raw "oci-archive:$1" 2>/dev/null | sha256sum | cut -d' ' -f1; }
# the archive's file names, sorted (blobs + index.json + oci-layout)
tar_names() { tar -tf "$1" 2>/dev/null | sed 's|^\./||; /\/$/d; /^$/d' | sort; }
# "os/arch MANIFEST-DIGEST" a line, sorted, for every image manifest in oci-archive TAR (index.json
# -> manifest, or -> index -> manifests; the platform from the descriptor, else from the config)
plat_manifests() {
	python3 - "$1" <<'PY'
import json, sys, tarfile
t = tarfile.open(sys.argv[1])
names = {m.name.lstrip("./"): m for m in t.getmembers() if m.isfile()}
def read(name):
    return t.extractfile(names[name]).read()
def blob(dg):
    return json.loads(read("blobs/" + dg.replace(":", "/", 1)))
out = []
def walk(descs):
    for d in descs:
        if d.get("mediaType") == "application/vnd.oci.image.index.v1+json":
            walk(blob(d["digest"])["manifests"])
            continue
        p = d.get("platform") or blob(blob(d["digest"])["config"]["digest"])
        out.append("%s/%s %s" % (p["os"], p["architecture"], d["digest"]))
walk(json.loads(read("index.json"))["manifests"])
print("\n".join(sorted(out)))
PY
}

check "build linux/arm64 in store A" build ra linux/arm64 "$o/a.tar"
check "build linux/amd64 in store B" build rb linux/amd64 "$o/b.tar"
check "build linux/amd64,linux/arm64 in store C" build rc linux/amd64,linux/arm64 "$o/both.tar"
want=$(index_sum "$o/both.tar")

if check "kiln merge -o merged.tar a.tar b.tar" kiln merge -o "$o/merged.tar" "$o/a.tar" "$o/b.tar"; then
	check_eq "merged index digest == one-command build's" "$(index_sum "$o/merged.tar")" "$want"
	check "merged archive holds the same files as the one-command build's" \
		cmp <(tar_names "$o/merged.tar") <(tar_names "$o/both.tar")
	plat_manifests "$o/merged.tar" >"$o/merged.pm"
	check_eq "merged: two platforms" "$(cut -d' ' -f1 "$o/merged.pm" | tr '\n' ' ')" "linux/amd64 linux/arm64 "
	check_eq "merged: arm64 manifest is a.tar's" "$(grep arm64 "$o/merged.pm")" "$(plat_manifests "$o/a.tar")"
	check_eq "merged: amd64 manifest is b.tar's" "$(grep amd64 "$o/merged.pm")" "$(plat_manifests "$o/b.tar")"
	check "merged: skopeo copies the arm64 image" \
		skopeo copy -q --override-os linux --override-arch arm64 "oci-archive:$o/merged.tar" "oci:$o/m-arm64:img"
fi
if check "kiln merge in the other order (b.tar a.tar)" kiln merge -o "$o/merged-ba.tar" "$o/b.tar" "$o/a.tar"; then
	check_eq "other order: same index digest" "$(index_sum "$o/merged-ba.tar")" "$want"
fi
if check "kiln merge of a multi-platform and nothing else" kiln merge -o "$o/merged-both.tar" "$o/both.tar"; then
	check_eq "merging one artifact keeps its index digest" "$(index_sum "$o/merged-both.tar")" "$want"
fi

# duplicates: both.tar already has linux/arm64
check_fail "duplicate platform without --replace: exit 1 naming linux/arm64" 1 'linux/arm64' \
	kiln merge -o "$o/dup.tar" "$o/both.tar" "$o/a.tar"
check "refused merge writes no output" test ! -e "$o/dup.tar"

check "build a different linux/arm64 image (FLAVOUR=spicy) in store A" \
	build ra linux/arm64 "$o/a2.tar" --build-arg FLAVOUR=spicy
if check "duplicate platform with --replace succeeds" \
	kiln merge --replace -o "$o/replaced.tar" "$o/both.tar" "$o/a2.tar"; then
	plat_manifests "$o/replaced.tar" >"$o/replaced.pm"
	check_eq "--replace: still two platforms" "$(cut -d' ' -f1 "$o/replaced.pm" | tr '\n' ' ')" \
		"linux/amd64 linux/arm64 "
	check_eq "--replace: the later input's arm64 manifest wins" "$(grep arm64 "$o/replaced.pm")" \
		"$(plat_manifests "$o/a2.tar")"
	check_eq "--replace: amd64 kept from both.tar" "$(grep amd64 "$o/replaced.pm")" \
		"$(plat_manifests "$o/both.tar" | grep amd64)"
	u=$(newdir u-replaced)
	if check "--replace: unpack arm64" sh -c 'skopeo copy -q --override-os linux --override-arch arm64 \
		"oci-archive:$1" "oci:$2/layout:img" && umoci unpack --rootless --image "$2/layout:img" "$2/bundle" >/dev/null' \
		sh "$o/replaced.tar" "$u"; then
		check_eq "--replace: arm64 image is the spicy one" "$(cat "$u/bundle/rootfs/which.txt" 2>&1)" "arm64 aarch64 spicy"
	fi
fi

check_fail "merge without -o is a usage error (exit 2)" 2 '.' kiln merge "$o/a.tar" "$o/b.tar"

finish
