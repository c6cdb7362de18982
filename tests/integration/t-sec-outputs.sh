#!/usr/bin/env bash
# Issue 8, outputs and image sources, checked from outside kiln:
#  3   -o type=local never deletes or writes through anything in DEST (whiteouts of the image,
#      RUN rm -rf, an opaque root, `dest=.` in a checkout), yet the export is the final tree
#  4   -o type=oci,tar=false never writes through DEST/blobs; archive dests replace a symlink
#  5b  an oci: dir whose index.json, oci-layout or blob is a symlink leading out reads nothing
#      of the host, and no error quotes the bytes of a file that failed to parse
#  9b  a FIFO as a blob, as index.json or as the archive path is refused, never waited on
#  10  an index listing one child index 27,000 times is refused at once; 1,000 is loaded fast
# The user's files are compared by sha256, mode and owner before and after; OUTSIDE (a dir the
# DEST symlinks point at) and SECRET (files an escape would read) must not change or leak.
. "$(dirname "$0")/lib.sh"
require_userns
load_busybox

TOKEN=kilnsecout$$x$RANDOM
OUTSIDE=$T/outside
SECRET=$T/secret
C=$T/ctx
O=$T/out
mkdir -p "$OUTSIDE" "$SECRET" "$C" "$O"
echo "canary $TOKEN" >"$OUTSIDE/canary"
chmod 700 "$OUTSIDE"
printf 'root:x:0:0:%s-passwd:/root:/bin/sh\n{"%s-json"\n' "$TOKEN" "$TOKEN" >"$SECRET/passwd"
outside_state() { (cd "$OUTSIDE" && ls -A && sha256sum canary && stat -c '%a %U %s %n' . canary); }
outside_before=$(outside_state)

build() { kiln build --platform linux/amd64 --progress plain "$@"; }
dockerfile() { printf '%s\n' "$1" >"$C/Dockerfile"; }
ms() { date +%s%3N; }

# --- crafted images, made here from the busybox fixture ----------------------------------------
cat >"$T/craft.py" <<'PY'
import hashlib, io, json, os, sys, tarfile
base_path, out = sys.argv[1:3]
os.makedirs(out, exist_ok=True)
MT_M = "application/vnd.oci.image.manifest.v1+json"
MT_I = "application/vnd.oci.image.index.v1+json"
def j(o): return json.dumps(o, separators=(",", ":")).encode()
def sha(b): return "sha256:" + hashlib.sha256(b).hexdigest()
def desc(mt, b, **kw): return dict(mediaType=mt, digest=sha(b), size=len(b), **kw)
def tar(entries):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name, data in entries:
            i = tarfile.TarInfo(name)
            i.mode, i.size = 0o644, len(data)
            t.addfile(i, io.BytesIO(data))
    return buf.getvalue()
with tarfile.open(base_path) as t:
    files = {m.name: t.extractfile(m).read() for m in t.getmembers() if m.isfile()}
blobs = {"sha256:" + n.rsplit("/", 1)[1]: d for n, d in files.items() if n.startswith("blobs/")}
(mdesc,) = json.loads(files["index.json"])["manifests"]
mdesc.pop("annotations", None)
manifest = json.loads(blobs[mdesc["digest"]])
config = json.loads(blobs[manifest["config"]["digest"]])
def archive(name, ref, root_mt, root, extra):
    bl = dict(blobs, **{sha(b): b for b in extra})
    index = j({"schemaVersion": 2, "mediaType": MT_I,
               "manifests": [desc(root_mt, root, annotations={"org.opencontainers.image.ref.name": ref})]})
    entries = [("oci-layout", j({"imageLayoutVersion": "1.0.0"})), ("index.json", index)]
    entries += [("blobs/sha256/" + d.split(":")[1], b) for d, b in sorted(bl.items())]
    open(os.path.join(out, name), "wb").write(tar(entries))
def plus_layer(name, entries):
    layer = tar(entries)
    m, c = json.loads(json.dumps(manifest)), json.loads(json.dumps(config))
    m["layers"].append({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": sha(layer), "size": len(layer)})
    c["rootfs"]["diff_ids"].append(sha(layer))
    cb = j(c)
    m["config"].update(digest=sha(cb), size=len(cb))
    mb = j(m)
    archive(name + ".oci.tar", "hsec-%s:latest" % name, MT_M, mb, [layer, cb, mb])
# an opaque root and whiteouts of what a checkout holds
plus_layer("opq", [(".wh..wh..opq", b""), ("top.txt", b"top\n")])
plus_layer("whgit", [(".wh..git", b""), (".wh.canary", b""), (".wh.root", b""), ("whgit.txt", b"w\n")])
# index fan-out: A lists B n times, B lists the busybox manifest n times
def fanout(n):
    b = j({"schemaVersion": 2, "mediaType": MT_I, "manifests": [mdesc] * n})
    a = j({"schemaVersion": 2, "mediaType": MT_I, "manifests": [desc(MT_I, b)] * n})
    archive("fan%d.oci.tar" % n, "hsec-fan%d:latest" % n, MT_I, a, [a, b])
fanout(27000)
fanout(1000)
PY
check "make the crafted images" python3 "$T/craft.py" "$FIX/busybox-amd64.oci.tar" "$T/corpus" || finish
ls -l "$T/corpus" | sed 's/^/# /'

# --- 3: type=local --------------------------------------------------------------------------------
prep_dest() { # DIR: a user's checkout, with symlinks into OUTSIDE
	mkdir -p "$1/.git/objects/ab" "$1/root"
	printf 'ref: refs/heads/main\n' >"$1/.git/HEAD"
	printf 'object\n' >"$1/.git/objects/ab/cdef"
	printf 'canary of the checkout\n' >"$1/canary"
	printf 'mine\n' >"$1/root/keep"
	chmod 600 "$1/root/keep"
	ln -s "$OUTSIDE" "$1/link"
	ln -s "$OUTSIDE/canary" "$1/flink"
}
user_state() { # DIR: sha256, mode and owner of the user's files
	(cd "$1" && for f in .git .git/HEAD .git/objects/ab/cdef canary root root/keep; do
		printf '%s %s %s\n' "$( [ -f "$f" ] && sha256sum <"$f" | cut -c1-16)" \
			"$(stat -c '%F %a %U:%G' "$f")" "$f"
	done)
}
D=$O/dest
prep_dest "$D"
user_before=$(user_state "$D")
dockerfile $'FROM busybox\nRUN rm -rf /root /etc/group && mkdir /link && echo in >/link/x && echo img >/flink'
if check "local: RUN rm -rf /root into a checkout" build -o "type=local,dest=$D" "$C"; then
	check_eq "local: the checkout's .git, canary and root/keep are unchanged" "$(user_state "$D")" "$user_before"
	check_eq "local: OUTSIDE (behind DEST/link) is unchanged" "$(outside_state)" "$outside_before"
	check "local: DEST/link, a symlink where the image has a dir, is now that dir" \
		test -d "$D/link" -a ! -L "$D/link"
	check_eq "local: the image's link/x is in it" "$(cat "$D/link/x" 2>&1)" in
	check "local: DEST/flink, a symlink where the image has a file, is that file" \
		test -f "$D/flink" -a ! -L "$D/flink"
	check_eq "local: flink holds the image's bytes" "$(cat "$D/flink" 2>&1)" img
	check "local: the image's files are there" test -f "$D/bin/busybox" -a -f "$D/etc/passwd"
fi
if check "local: the same into an empty dir" build -o "type=local,dest=$O/fresh" "$C"; then
	check "local: the whiteouted /root and /etc/group are absent" \
		test ! -e "$O/fresh/root" -a ! -e "$O/fresh/etc/group" -a -f "$O/fresh/etc/passwd"
	check_eq "local: every exported file and dir belongs to the caller" \
		"$(find "$O/fresh" -printf '%u:%g\n' | sort -u)" "$(id -un):$(id -gn)"
fi

for img in opq whgit; do
	check "load hsec-$img" kiln load "$T/corpus/$img.oci.tar"
done
dockerfile 'FROM hsec-opq'
if check "local: an opaque root into the checkout" build -o "type=local,dest=$D" "$C"; then
	check_eq "local opq: the checkout is unchanged" "$(user_state "$D")" "$user_before"
	check_eq "local opq: top.txt is there" "$(cat "$D/top.txt" 2>&1)" top
fi
check "local opq: into an empty dir" build -o "type=local,dest=$O/fresh-opq" "$C" &&
	check_eq "local opq: only the top layer's file" "$(ls -A "$O/fresh-opq")" top.txt
dockerfile 'FROM hsec-whgit'
if check "local: .wh..git, .wh.canary, .wh.root into the checkout" build -o "type=local,dest=$D" "$C"; then
	check_eq "local whgit: the checkout is unchanged" "$(user_state "$D")" "$user_before"
	check "local whgit: whgit.txt is there" test -f "$D/whgit.txt"
fi
check "local whgit: into an empty dir" build -o "type=local,dest=$O/fresh-wh" "$C" &&
	check "local whgit: root is absent, busybox there" \
		test ! -e "$O/fresh-wh/root" -a -f "$O/fresh-wh/bin/busybox" -a -f "$O/fresh-wh/whgit.txt"

# the buildx idiom, run in the checkout itself
dockerfile $'FROM busybox\nRUN rm -rf /root && echo dot >/dot.txt'
if check "local: -o type=local,dest=. inside the checkout" \
	bash -c 'cd "$1" && shift && "$@"' _ "$D" timeout 600 "$KILN" build --platform linux/amd64 \
	-o type=local,dest=. "$C"; then
	check_eq "local dest=.: the checkout is unchanged" "$(user_state "$D")" "$user_before"
	check_eq "local dest=.: dot.txt is there" "$(cat "$D/dot.txt" 2>&1)" dot
fi

# a directory of the user's where the image has a file: refused, kept
mkdir -p "$O/conflict/dot.txt"
echo mine >"$O/conflict/dot.txt/keep"
check_fail "local: a dir in DEST where the image has a file is refused, naming it" 1 \
	"'$O/conflict/dot.txt' is a directory" build -o "type=local,dest=$O/conflict" "$C"
check_eq "local: that dir's file is kept" "$(cat "$O/conflict/dot.txt/keep" 2>&1)" mine

# --- 4: type=oci,tar=false and the archive dests ------------------------------------------------
dockerfile $'FROM busybox\nRUN echo x >/x'
mkdir -p "$O/lay1" "$O/lay2/blobs"
ln -s "$OUTSIDE" "$O/lay1/blobs"
ln -s "$OUTSIDE" "$O/lay2/blobs/sha256"
check_fail "oci dir: DEST/blobs -> OUTSIDE is refused, naming it" 1 "'$O/lay1/blobs' is a symlink" \
	build -o "type=oci,dest=$O/lay1,tar=false" "$C"
check_fail "oci dir: DEST/blobs/sha256 -> OUTSIDE is refused" 1 "'$O/lay2/blobs/sha256' is a symlink" \
	build -o "type=oci,dest=$O/lay2,tar=false" "$C"
if check "oci dir: into a new DEST" build -o "type=oci,dest=$O/lay3/sub,tar=false" "$C"; then
	check_eq "oci dir: every file and dir it made belongs to the caller" \
		"$(find "$O/lay3" -printf '%u:%g\n' | sort -u)" "$(id -un):$(id -gn)"
fi
ln -s "$OUTSIDE/canary" "$O/img.tar"
ln -s "$OUTSIDE/canary" "$O/docker.tar"
check "oci archive: dest is a symlink to OUTSIDE/canary" build -o "type=oci,dest=$O/img.tar" "$C" &&
	check "oci archive: the symlink was replaced by the archive" \
		bash -c '[ ! -L "$1" ] && tar -tf "$1" | grep -qx index.json' _ "$O/img.tar"
check "docker archive: dest is a symlink to OUTSIDE/canary" build -o "type=docker,dest=$O/docker.tar" "$C" &&
	check "docker archive: the symlink was replaced by the archive" \
		bash -c '[ ! -L "$1" ] && tar -tf "$1" | grep -qx manifest.json' _ "$O/docker.tar"
check_eq "oci/docker: the archives belong to the caller" \
	"$(stat -c '%U:%G' "$O/img.tar" "$O/docker.tar" | sort -u)" "$(id -un):$(id -gn)"
check_eq "oci/docker: OUTSIDE is unchanged" "$(outside_state)" "$outside_before"

# --- 5b: an oci: dir with symlinks leading out --------------------------------------------------
# (blob cases in a store of their own: a blob the store has already is never opened)
load_fresh() { KILN_ROOT=$T/root-fresh kiln load "$@"; }
L=$O/ocidir
mkdir -p "$L"
tar -xf "$FIX/busybox-amd64.oci.tar" -C "$L"
blob=$(cd "$L/blobs/sha256" && ls | head -n 1)
mv "$L/index.json" "$L/index.json.real"
ln -s "$SECRET/passwd" "$L/index.json"
check_fail "oci dir: index.json -> a host file is not read" 1 "index.json' is a symlink to nothing inside" \
	kiln load "oci:$L"
check_nogrep "oci dir: no byte of the host file in the error" "$TOKEN"
dockerfile $'FROM base\nRUN true'
check_fail "oci dir: the same as a --build-context" 1 "index.json' is a symlink to nothing inside" \
	build --build-context "base=oci:$L" "$C"
check_nogrep "oci dir: no byte of the host file in the build's error" "$TOKEN"
rm "$L/index.json"
cp "$SECRET/passwd" "$L/index.json"
check_fail "oci dir: an index.json that is not JSON is reported by position" 1 \
	"index.json: not valid JSON at line 1 column [0-9]+" kiln load "oci:$L"
check_nogrep "oci dir: none of its bytes in the error" "$TOKEN"
mv "$L/index.json.real" "$L/index.json"
mv "$L/oci-layout" "$L/oci-layout.real"
ln -s "../../secret/passwd" "$L/oci-layout"
check_fail "oci dir: oci-layout -> ../../secret/passwd is not read" 1 "oci-layout" kiln load "oci:$L"
check_nogrep "oci dir: nothing of it in the error" "$TOKEN"
rm "$L/oci-layout"
mv "$L/oci-layout.real" "$L/oci-layout"
cp "$L/blobs/sha256/$blob" "$SECRET/$blob"
rm "$L/blobs/sha256/$blob"
ln -s "$SECRET/$blob" "$L/blobs/sha256/$blob"
check_fail "oci dir: a blob -> a host file is not read" 1 "blobs/sha256/$blob' is a symlink to nothing inside" \
	load_fresh "oci:$L"

# --- 9b: FIFOs -----------------------------------------------------------------------------------
rm "$L/blobs/sha256/$blob"
mkfifo "$L/blobs/sha256/$blob"
fifo_check() { # NAME ERE ARGS...: refused, within 20 s
	local name=$1 pat=$2 t0
	shift 2
	t0=$(ms)
	KILN_TIMEOUT=20 check_fail "$name" 1 "$pat" "$@"
	check_eq "$name: within 5 s" "$(( $(ms) - t0 < 5000 ))" 1
}
fifo_check "fifo: a blob of an oci: dir" "blobs/sha256/$blob' is a FIFO" load_fresh "oci:$L"
rm "$L/blobs/sha256/$blob"
cp "$SECRET/$blob" "$L/blobs/sha256/$blob"
mv "$L/index.json" "$L/index.json.real"
mkfifo "$L/index.json"
fifo_check "fifo: index.json of an oci: dir" "index.json' is a FIFO" kiln load "oci:$L"
fifo_check "fifo: index.json, as a --build-context" "index.json' is a FIFO" \
	build --build-context "base=oci:$L" "$C"
mkfifo "$O/pipe.tar"
fifo_check "fifo: oci-archive:FIFO" "pipe.tar' is a FIFO" kiln load "oci-archive:$O/pipe.tar"
fifo_check "fifo: docker-archive:FIFO" "pipe.tar' is a FIFO" kiln load "docker-archive:$O/pipe.tar"
fifo_check "fifo: a FIFO given as a plain path" "pipe.tar' is a FIFO" kiln load "$O/pipe.tar"
fifo_check "fifo: docker-archive:FIFO as a --build-context" "pipe.tar' is a FIFO" \
	build --build-context "base=docker-archive:$O/pipe.tar" "$C"

# --- 10: index fan-out ---------------------------------------------------------------------------
t0=$(ms)
check_fail "fan-out 27000: refused, naming the index" 1 \
	"index sha256:[0-9a-f]{64}: index lists 27000 descriptors, more than 10000" \
	kiln load "$T/corpus/fan27000.oci.tar"
check_eq "fan-out 27000: refused within 5 s (took $(( $(ms) - t0 )) ms)" "$(( $(ms) - t0 < 5000 ))" 1
t0=$(ms)
check_fail "fan-out 27000 as a --build-context: refused" 1 "lists 27000 descriptors" \
	build --build-context "base=oci-archive:$T/corpus/fan27000.oci.tar" "$C"
check_eq "fan-out 27000 --build-context: within 5 s" "$(( $(ms) - t0 < 5000 ))" 1
t0=$(ms)
check "fan-out 1000: loaded" kiln load "$T/corpus/fan1000.oci.tar"
check_eq "fan-out 1000: loaded within 5 s (took $(( $(ms) - t0 )) ms)" "$(( $(ms) - t0 < 5000 ))" 1
dockerfile $'FROM hsec-fan1000\nRUN echo ok >/fan'
t0=$(ms)
check "fan-out 1000: a build FROM it" build -o "type=local,dest=$O/fan" "$C" &&
	check_eq "fan-out 1000: its RUN ran" "$(cat "$O/fan/fan" 2>&1)" ok
check_eq "fan-out 1000: the build within 30 s" "$(( $(ms) - t0 < 30000 ))" 1
t0=$(ms)
check "fan-out 1000: kiln doctor --verify walks it" kiln doctor --verify
check_eq "fan-out 1000: the verify walk within 5 s" "$(( $(ms) - t0 < 5000 ))" 1

# --- nothing outside changed -----------------------------------------------------------------------
check_eq "OUTSIDE is unchanged at the end" "$(outside_state)" "$outside_before"
check_eq "SECRET holds only what the test put there" "$(ls -A "$SECRET" | tr '\n' ' ')" "$blob passwd "
finish
