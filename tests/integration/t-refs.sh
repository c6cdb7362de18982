#!/usr/bin/env bash
# Image references (issue 9 item 1): docker.io/library/busybox:1.36, busybox:1.36 and
# index.docker.io/library/busybox:1.36 are one name in the store, FROM, -t, kiln load, images,
# inspect, rmi and merge; FROM and COPY --from by digest; what kiln load names an image (never
# "latest:latest"; a name that moves says so); merge honours $KILN_ROOT. Item 10: a base whose
# first layer holds device nodes builds, and that layer ships unchanged.
. "$(dirname "$0")/lib.sh"
require_userns

# A store of its own: this file removes names.
export KILN_ROOT=$T/refs-root
C=$(newdir ctx)
O=$(newdir out)
D='sha256:[0-9a-f]{64}'
build() { kiln build --platform linux/amd64 --progress plain "$@" "$C"; }
dockerfile() { printf '%s\n' "$1" >"$C/Dockerfile"; }
# digest_of NAME: the digest `kiln images --json` gives the name (familiar form)
digest_of() { kiln images --json 2>/dev/null | jq -r --arg n "$1" '.[] | select(.name == $n) | .digest'; }
images_count() { kiln images 2>/dev/null | grep -c "^$1 "; }
# archive_annotations TAR: the first index.json entry's annotations, compact JSON
archive_annotations() { tar -xOf "$1" index.json | jq -c '.manifests[0].annotations // {}'; }
# retag_archive IN OUT JSON: a copy of oci-archive IN whose first index.json entry has the
# annotations JSON
retag_archive() {
	python3 - "$@" <<'PY'
import io, json, sys, tarfile
src, dst, ann = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
with tarfile.open(src) as t, tarfile.open(dst, "w") as out:
    for m in t.getmembers():
        data = t.extractfile(m).read() if m.isfile() else None
        if m.name.lstrip("./") == "index.json":
            idx = json.loads(data)
            idx["manifests"][0]["annotations"] = ann
            data = json.dumps(idx).encode()
            m.size = len(data)
        out.addfile(m, io.BytesIO(data) if data is not None else None)
PY
}

# --- one name, any spelling -------------------------------------------------------------------------
check "load as docker.io/library/busybox:1.36" \
	kiln load "$FIX/busybox-amd64.oci.tar" docker.io/library/busybox:1.36
check_grep "load prints the familiar name" '^Loaded image: busybox:1\.36$'
check "load again as index.docker.io/library/busybox:1.36" \
	kiln load "$FIX/busybox-amd64.oci.tar" index.docker.io/library/busybox:1.36
check_nogrep "the same image: no name moved" 'moved'
check_eq "images: one entry for both spellings" "$(images_count 'busybox:1\.36')" 1
kiln images >"$T/images.txt" 2>&1
check_nogrep "images shows familiar names" 'docker\.io/' "$T/images.txt"
check_jq "index.json holds the canonical name only" \
	'[.manifests[].annotations["org.opencontainers.image.ref.name"]] |
	 (index("docker.io/library/busybox:1.36") != null) and (index("busybox:1.36") == null)' \
	"$KILN_ROOT/index.json"

dockerfile $'FROM busybox:1.36\nRUN echo hi >/hi'
check "FROM busybox:1.36, -t app:1" build -t app:1
first=$(digest_of app:1)
i=0
for from in docker.io/library/busybox:1.36 index.docker.io/library/busybox:1.36 \
	registry-1.docker.io/busybox:1.36; do
	i=$((i + 1))
	tag=$(sed -n "${i}p" <<<$'docker.io/library/app:1\nindex.docker.io/library/app:1\ndocker.io/app:1')
	dockerfile "FROM $from
RUN echo hi >/hi"
	if check "FROM $from, -t $tag" build -t "$tag"; then
		check_grep "FROM $from is the same base: the RUN step is cached" '^#[0-9]+ CACHED'
	fi
done
check_eq "-t in four spellings: one name" "$(images_count 'app:1')" 1
check_eq "-t in four spellings: the same image" "$(digest_of app:1)" "$first"
check "inspect index.docker.io/library/app:1" kiln inspect index.docker.io/library/app:1
check_grep "inspect shows the familiar name" '^Name: +app:1$'
check "rmi docker.io/app:1" kiln rmi docker.io/app:1
check_grep "rmi prints the familiar name" '^Untagged: app:1$'
check_eq "app:1 is gone" "$(images_count 'app:1')" 0
if check "--metadata-file with -t app:meta -t index.docker.io/me/x:1" \
	build -t app:meta -t index.docker.io/me/x:1 --metadata-file "$O/meta.json"; then
	check_jq "image.name holds the canonical names, as buildx writes them" \
		'.["image.name"] == "docker.io/library/app:meta,docker.io/me/x:1"' "$O/meta.json"
fi
check_fail "-t with upper case is a usage error" 2 "invalid image reference 'App:1'.*lowercase" \
	build -t App:1
check_fail "-t with a digest is a usage error" 2 "cannot hold a digest" \
	build -t "app@sha256:$(printf '0%.0s' {1..64})"

# --- FROM and COPY --from by digest ---------------------------------------------------------------
dockerfile $'FROM busybox:1.36\nRUN echo by-digest >/d'
check "build app:2" build -t app:2
idx=$(digest_of app:2)
man=$(kiln inspect --json app:2 | jq -r '.platforms[0].manifest')
check_eq "app:2 has an index and a manifest digest" "$([[ $idx =~ ^$D$ && $man =~ ^$D$ ]] && echo y)" y
dockerfile "FROM app@$idx
RUN test -f /d"
check "FROM app@sha256:INDEX" build
dockerfile "FROM docker.io/library/app:nosuchtag@$idx
RUN test -f /d"
check "FROM app:othertag@sha256:INDEX: the digest wins, as in BuildKit" build
dockerfile "FROM any/other-name@$man
RUN test -f /d"
check "FROM other-name@sha256:MANIFEST: one platform's manifest in the store" build
dockerfile "FROM busybox:1.36
COPY --from=app@$idx /d /copied
RUN test -f /copied"
check "COPY --from=app@sha256:INDEX" build
dockerfile "FROM busybox@sha256:$(printf '0%.0s' {1..64})"
check_fail "FROM an unknown digest: an error naming it" 1 \
	"Dockerfile:1: FROM: .*busybox@sha256:0{64}' is not in the local store" build
dockerfile "FROM busybox@sha512:$(printf 'f%.0s' {1..128})"
check_fail "FROM a sha512 digest: refused by name" 1 \
	"Dockerfile:1: FROM: .*digest algorithm 'sha512' is not supported" build
dockerfile "FROM Busybox"
check_fail "FROM with upper case: the Dockerfile's error" 1 "Dockerfile:1: FROM: .*lowercase" build

# --- kiln load naming -----------------------------------------------------------------------------
R2=$T/load-root
dockerfile $'FROM busybox:1.36\nRUN echo named >/n'
if check "an archive named docker.io/me/app:2 (BuildKit's annotations)" \
	build -t docker.io/me/app:2 -o "type=oci,dest=$O/named.tar"; then
	check_eq "the archive: full name and the tag alone" "$(archive_annotations "$O/named.tar")" \
		'{"io.containerd.image.name":"docker.io/me/app:2","org.opencontainers.image.ref.name":"2"}'
	check "load it into a fresh store" env KILN_ROOT="$R2" "$KILN" load "$O/named.tar"
	check_grep "named from io.containerd.image.name" '^Loaded image: me/app:2$'
	retag_archive "$O/named.tar" "$O/tag-only.tar" '{"org.opencontainers.image.ref.name":"latest"}'
	check "load an archive whose ref.name is only a tag" \
		env KILN_ROOT="$R2" "$KILN" load "$O/tag-only.tar"
	check_grep "a bare tag names nothing: the load says so" \
		"^Loaded image: $D \\(no name: the source gives only the tag 'latest'"
	KILN_ROOT=$R2 kiln images >"$T/images2.txt" 2>&1
	check_nogrep "never latest:latest" 'latest:latest' "$T/images2.txt"
	check "load it with a NAME" env KILN_ROOT="$R2" "$KILN" load "$O/tag-only.tar" mine:1
	check_grep "named by the argument" '^Loaded image: mine:1$'
	old=$(KILN_ROOT=$R2 digest_of mine:1)
	check "load another image as mine:1" \
		env KILN_ROOT="$R2" "$KILN" load "$FIX/busybox-amd64.oci.tar" docker.io/library/mine:1
	check_grep "the name moved, and the load says so (as docker load does)" \
		"^The name mine:1 moved from image $old to the loaded one"
	check_eq "mine:1 is the new image" "$(KILN_ROOT=$R2 digest_of mine:1)" \
		"$(tar -xOf "$FIX/busybox-amd64.oci.tar" index.json | jq -r '.manifests[0].digest')"
	check "a skopeo-style ref.name (busybox:latest) is a name" \
		env KILN_ROOT="$R2" "$KILN" load "$FIX/busybox-amd64.oci.tar"
	check_grep "named busybox:latest" '^Loaded image: busybox:latest$'
	check_fail "load NAME with a digest is a usage error" 2 "cannot hold a digest" \
		env KILN_ROOT="$R2" "$KILN" load "$O/named.tar" "x@sha256:$(printf '0%.0s' {1..64})"
fi

# --- merge honours $KILN_ROOT and --root; its -t is one name in any spelling -----------------------
dockerfile $'FROM busybox:1.36\nRUN echo m >/m'
check "build app:m" build -t app:m
check "merge a store name, the root from \$KILN_ROOT" kiln merge -o "$O/m.tar" app:m
check "merge with --root" env -u KILN_ROOT "$KILN" merge --root "$KILN_ROOT" -o "$O/m1.tar" app:m
check "merge -t index.docker.io/library/merged:1 docker.io/library/app:m" \
	kiln merge -o "$O/m2.tar" -t index.docker.io/library/merged:1 docker.io/library/app:m
check_eq "merged:1 is named in \$KILN_ROOT, the same index as app:m" "$(digest_of merged:1)" \
	"$(digest_of app:m)"
check "rmi merged:1" kiln rmi merged:1

# --- item 10: a base whose first layer has device nodes ---------------------------------------------
devbase() {
	python3 - "$FIX/busybox-amd64.oci.tar" "$O/devbase.tar" <<'PY'
import gzip, hashlib, io, json, sys, tarfile
src, dst = sys.argv[1:3]
t = tarfile.open(src)
files = {m.name.lstrip("./"): m for m in t.getmembers() if m.isfile()}
def read(n): return t.extractfile(files[n]).read()
def blob(d): return read("blobs/sha256/" + d.split(":", 1)[1])
def sha(b): return "sha256:" + hashlib.sha256(b).hexdigest()
entry = json.loads(read("index.json"))["manifests"][0]
m = json.loads(blob(entry["digest"]))
cfg = json.loads(blob(m["config"]["digest"]))
raw = io.BytesIO()
with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as lt:
    for name, typ, mode, dev in [("dev", tarfile.DIRTYPE, 0o755, None),
                                 ("dev/console", tarfile.CHRTYPE, 0o600, (5, 1)),
                                 ("dev/null", tarfile.CHRTYPE, 0o666, (1, 3)),
                                 ("dev/loop0", tarfile.BLKTYPE, 0o660, (7, 0)),
                                 ("dev/initctl", tarfile.FIFOTYPE, 0o600, None),
                                 ("run", tarfile.DIRTYPE, 0o755, None),
                                 ("run/initctl", tarfile.FIFOTYPE, 0o600, None)]:
        ti = tarfile.TarInfo(name)
        ti.type, ti.mode, ti.mtime = typ, mode, 0
        if dev:
            ti.devmajor, ti.devminor = dev
        lt.addfile(ti)
layer = gzip.compress(raw.getvalue(), mtime=0)
m["layers"].insert(0, {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                       "digest": sha(layer), "size": len(layer)})
cfg["rootfs"]["diff_ids"].insert(0, sha(raw.getvalue()))
cfg.setdefault("history", []).insert(0, {"created_by": "mmdebstrap-like /dev"})
cb = json.dumps(cfg).encode()
m["config"] = {"mediaType": m["config"]["mediaType"], "digest": sha(cb), "size": len(cb)}
mb = json.dumps(m).encode()
index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
         "manifests": [{"mediaType": entry["mediaType"], "digest": sha(mb), "size": len(mb),
                        "platform": entry.get("platform", {"architecture": "amd64", "os": "linux"}),
                        "annotations": {"io.containerd.image.name": "docker.io/library/devbase:1",
                                        "org.opencontainers.image.ref.name": "1"}}]}
blobs = {sha(layer): layer, sha(cb): cb, sha(mb): mb}
for l in m["layers"][1:]:
    blobs[l["digest"]] = blob(l["digest"])
with tarfile.open(dst, "w") as out:
    def add(name, data):
        ti = tarfile.TarInfo(name)
        ti.size, ti.mode = len(data), 0o644
        out.addfile(ti, io.BytesIO(data))
    add("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
    add("index.json", json.dumps(index).encode())
    for d, data in sorted(blobs.items()):
        add("blobs/sha256/" + d.split(":", 1)[1], data)
print(sha(layer))
PY
}
# first_layer ARCHIVE: the first layer digest of the amd64 image in an oci-archive
first_layer() {
	python3 - "$1" <<'PY'
import json, sys, tarfile
t = tarfile.open(sys.argv[1])
files = {m.name.lstrip("./"): m for m in t.getmembers() if m.isfile()}
def doc(d): return json.loads(t.extractfile(files["blobs/sha256/" + d.split(":", 1)[1]]).read())
d = json.loads(t.extractfile(files["index.json"]).read())["manifests"][0]
while "manifests" in doc(d["digest"]):
    ms = doc(d["digest"])["manifests"]
    d = next((x for x in ms if x.get("platform", {}).get("architecture") == "amd64"), ms[0])
print(doc(d["digest"])["layers"][0]["digest"])
PY
}
if devlayer=$(devbase) && [ -n "$devlayer" ]; then
	check "kiln load accepts device nodes (only hostile entries are refused)" kiln load "$O/devbase.tar"
	check_grep "named devbase:1" '^Loaded image: devbase:1$'
	dockerfile $'FROM devbase:1\nRUN test -p /run/initctl && echo ran >/ran'
	if check "FROM a base with device nodes: builds, RUN works" build -o "type=oci,dest=$O/dev-out.tar"; then
		check_grep "one warning for the layer, naming it and its first device" \
			"warning: layer $devlayer: 3 device nodes left out \\('dev/console', \\.\\.\\.\\)"
		check_eq "the warning is printed once" \
			"$(grep -c 'device nodes left out' "$OUT")" 1
		check_eq "the output's first layer is the base's, byte for byte (same digest)" \
			"$(first_layer "$O/dev-out.tar")" "$devlayer"
	fi
	check "type=local of it: the FIFO kept, the devices left out" \
		build -o "type=local,dest=$O/dev-local"
	check "type=local: run/initctl is a FIFO" test -p "$O/dev-local/run/initctl"
	check "type=local: no dev/console" test ! -e "$O/dev-local/dev/console"
	check "the store is clean after it" kiln doctor --verify
else
	check "make the device-node base" false
fi

# ADD of a local tar with device nodes: extracted without them (as moby's archive code does in a
# user namespace), with a warning naming the Dockerfile line.
c=$(newdir adddev)
python3 - "$c/dev.tar" <<'PY'
import io, sys, tarfile
with tarfile.open(sys.argv[1], "w") as t:
    for name, kind in (("d/", tarfile.DIRTYPE), ("d/null", tarfile.CHRTYPE), ("d/sda", tarfile.BLKTYPE)):
        ti = tarfile.TarInfo(name.rstrip("/")); ti.type = kind; ti.mode = 0o755 if kind == tarfile.DIRTYPE else 0o666
        ti.devmajor, ti.devminor = (1, 3) if kind == tarfile.CHRTYPE else (8, 0)
        t.addfile(ti)
    data = b"kept\n"; ti = tarfile.TarInfo("d/file"); ti.size = len(data); t.addfile(ti, io.BytesIO(data))
PY
kiln load "$FIX/busybox-amd64.oci.tar" busybox:adddev >/dev/null
printf 'FROM busybox:adddev\nADD dev.tar /x/\nRUN cat /x/d/file && test ! -e /x/d/null && test ! -e /x/d/sda\n' >"$c/Dockerfile"
check "ADD of a tar with device nodes builds" kiln build --progress plain --platform linux/amd64 "$c"
check_grep "the warning names the line and the count" 'warning: Dockerfile:2: ADD: 2 device nodes left out'

finish
