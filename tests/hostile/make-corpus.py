#!/usr/bin/env python3
"""Write kiln's hostile-input corpus (at test time: no binary is ever committed).

Usage: make-corpus.py BASE_OCI_TAR OUTDIR OUTSIDE TOKEN

BASE_OCI_TAR is a single-platform oci-archive (the busybox fixture); every image case is that
image plus one more layer (or a damaged manifest/config/blob), written as OUTDIR/CASE.oci.tar with
the ref name "hostile-CASE:latest". OUTSIDE is an absolute directory outside any image root (the
test's canary dir); TOKEN is put in every name an escape would create, so the test can look for it.
Archives for ADD and build contexts' tars are written as OUTDIR/add-CASE.tar[.gz].

Image cases (the layer entries, in order):
  dotdot           file ../TOKEN-dotdot
  abs-dotdot       file /../TOKEN-absdotdot
  abs-ok           file /abs-ok (absolute inside the root: legit, treated as relative)
  symlink-out      dirs OUTSIDE (inside the root), etc/; evil -> OUTSIDE, evil/TOKEN-via-symlink;
                   etc-link -> /etc, etc-link/TOKEN-etc (both must land inside the root)
  symlink-dangling evil -> OUTSIDE (missing in the root), evil/TOKEN-dangling (an error)
  legit-links      usr/lib/, usr/lib/x.so, lib -> usr/lib, l1 -> l2, l2 -> /lib (chain in root)
  hardlink-out     hard link hl -> ../../../../OUTSIDE/canary
  hardlink-lower   hard link hl -> bin/busybox (a file of a lower layer)
  hardlink-later   hard link hl -> later, then file later
  symlink-dot      symlink . -> /etc
  dir-symlink-chmod  dir d (mode 0777), then d -> OUTSIDE (the dir's mode must not reach OUTSIDE)
  device           dev/kmsg, a character device (1, 11)
  whiteout-bare    etc/.wh.
  whiteout-symlink dirs OUTSIDE, wl -> OUTSIDE, wl/.wh.canary (must not delete OUTSIDE/canary)
  passwd-symlink   etc/passwd -> OUTSIDE/passwd (a passwd naming user "evil" lives there)
  gzip-bomb        one 64 MiB file of zeros (~64 KiB of gzip)
  entries-bomb     3000 empty files
  truncated        the layer's gzip cut in half (blob digest and diff_id as of the cut blob)
  blob-mismatch    the layer blob's bytes differ from the digest the manifest names
  digest-traversal the manifest names the layer "sha256:../../TOKEN"
  manifest-index   the manifest also has a "manifests" list
  diffid-mismatch  the config's last diff_id is not the layer's
  manifest-huge    a 5 MiB manifest (past the 4 MiB cap)

Two cases are not a base + one layer:
  diffid-claim     the base's last layer blob replaced by a tar holding /claim-marker while the
                   config keeps the base's diff_id for it (a config claiming another layer's
                   diff_id: the snapshot of that diff_id must not be reused for this blob)
  lower-dir-symlink  base + a layer with usr/lib/a and lib -> usr/lib + a layer with only
                   lib/foo (its parent comes through the lower layer's directory symlink)

Also base-root-owned.oci.tar: BASE with every entry owned by 0:0 (ref "base-root-owned:latest"),
for tests that run kiln with a one-id map.

ADD archives: add-dotdot.tar (../TOKEN-add), add-bomb.tar.gz (64 MiB of zeros).
"""
import gzip
import hashlib
import io
import json
import os
import sys
import tarfile

MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_INDEX = "application/vnd.oci.image.index.v1+json"
MT_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
REF = "org.opencontainers.image.ref.name"
BOMB = 64 << 20


def jbytes(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def sha(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def ti(name, kind="file", mode=0o644, data=b"", target=""):
    t = tarfile.TarInfo(name)
    t.mode, t.mtime, t.uid, t.gid, t.uname, t.gname = mode, 0, 0, 0, "", ""
    if kind == "dir":
        t.type = tarfile.DIRTYPE
    elif kind == "symlink":
        t.type, t.linkname = tarfile.SYMTYPE, target
    elif kind == "hardlink":
        t.type, t.linkname = tarfile.LNKTYPE, target
    elif kind == "chr":
        t.type, t.devmajor, t.devminor = tarfile.CHRTYPE, 1, 11
    else:
        t.size = len(data)
    return t, (data if kind == "file" else None)


def tar_bytes(entries):
    """Entries in the given order (attacks depend on it); names are kept as written: Python's
    tarfile does not clean '../' or a leading '/'."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for info, data in entries:
            t.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def gz(data):
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", fileobj=buf, mode="wb", compresslevel=9, mtime=0) as g:
        g.write(data)
    return buf.getvalue()


def zeros_tar_gz(name):
    """A tar holding one BOMB-byte file of zeros, gzipped, streamed (never all in memory)."""
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", fileobj=buf, mode="wb", compresslevel=9, mtime=0) as g:
        info, _ = ti(name)
        info.size = BOMB
        g.write(info.tobuf(format=tarfile.PAX_FORMAT))
        chunk = bytes(1 << 20)
        for _ in range(BOMB >> 20):
            g.write(chunk)
        g.write(bytes(1024))  # end of archive
    return buf.getvalue()


def parents(path):
    """"/a/b/c" -> ["a", "a/b", "a/b/c"]"""
    parts = path.strip("/").split("/")
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def read_base(path):
    with tarfile.open(path) as t:
        files = {m.name: t.extractfile(m).read() for m in t.getmembers() if m.isfile()}
    blobs = {"sha256:" + n.rsplit("/", 1)[1]: d for n, d in files.items() if n.startswith("blobs/")}
    (desc,) = json.loads(files["index.json"])["manifests"]
    manifest = json.loads(blobs[desc["digest"]])
    config = json.loads(blobs[manifest["config"]["digest"]])
    return blobs, manifest, config


def oci_archive(blobs, manifest_b, ref, mt=MT_MANIFEST):
    files = [("oci-layout", jbytes({"imageLayoutVersion": "1.0.0"}))]
    for d, b in sorted(blobs.items()):
        files.append(("blobs/sha256/" + d.split(":", 1)[1], b))
    files.append(("index.json", jbytes({
        "schemaVersion": 2, "mediaType": MT_INDEX,
        "manifests": [{"mediaType": mt, "digest": sha(manifest_b), "size": len(manifest_b),
                       "annotations": {REF: ref}}],
    })))
    dirs = [ti("blobs/", "dir", 0o755), ti("blobs/sha256/", "dir", 0o755)]
    return tar_bytes(dirs + [ti(n, data=b) for n, b in files])


class Base:
    def __init__(self, path):
        self.blobs, self.manifest, self.config = read_base(path)

    def image(self, name, layer_tar=None, layer_blob=None, diff_id=None, mutate=None):
        """Base image + one layer; mutate(blobs, manifest, config) may damage it. Returns the
        oci-archive bytes."""
        blobs = dict(self.blobs)
        manifest = json.loads(json.dumps(self.manifest))
        config = json.loads(json.dumps(self.config))
        if layer_blob is None:
            layer_blob = gz(layer_tar)
        if diff_id is None:
            diff_id = sha(layer_tar)
        blobs[sha(layer_blob)] = layer_blob
        manifest["layers"].append({"mediaType": MT_LAYER, "digest": sha(layer_blob),
                                   "size": len(layer_blob)})
        config["rootfs"]["diff_ids"].append(diff_id)
        config.setdefault("history", []).append({"created_by": "hostile " + name})
        if mutate:
            mutate(blobs, manifest, config)
        return self._finish(blobs, manifest, config, "hostile-%s:latest" % name)

    def _finish(self, blobs, manifest, config, ref):
        config_b = jbytes(config)
        blobs[sha(config_b)] = config_b
        manifest["config"]["digest"], manifest["config"]["size"] = sha(config_b), len(config_b)
        manifest_b = jbytes(manifest)
        blobs[sha(manifest_b)] = manifest_b
        return oci_archive(blobs, manifest_b, ref)

    def claim(self, name, layer_tar):
        """The base with its last layer blob replaced, the config's diff_ids unchanged."""
        blobs = dict(self.blobs)
        manifest = json.loads(json.dumps(self.manifest))
        blob = gz(layer_tar)
        blobs[sha(blob)] = blob
        manifest["layers"][-1].update(digest=sha(blob), size=len(blob))
        return self._finish(blobs, manifest, json.loads(json.dumps(self.config)),
                            "hostile-%s:latest" % name)

    def stacked(self, name, layer_tars):
        """The base plus one layer per tar, in order."""
        blobs = dict(self.blobs)
        manifest = json.loads(json.dumps(self.manifest))
        config = json.loads(json.dumps(self.config))
        for plain in layer_tars:
            blob = gz(plain)
            blobs[sha(blob)] = blob
            manifest["layers"].append({"mediaType": MT_LAYER, "digest": sha(blob),
                                       "size": len(blob)})
            config["rootfs"]["diff_ids"].append(sha(plain))
        return self._finish(blobs, manifest, config, "hostile-%s:latest" % name)

    def root_owned(self, ref):
        """The base image with every entry owned by 0:0, for a user namespace that maps one id
        (t-faults runs kiln rootless inside `unshare` on a small tmpfs that way)."""
        blobs = dict(self.blobs)
        manifest = json.loads(json.dumps(self.manifest))
        config = json.loads(json.dumps(self.config))
        for i, l in enumerate(manifest["layers"]):
            entries = []
            with tarfile.open(fileobj=io.BytesIO(blobs[l["digest"]])) as t:
                for m in t.getmembers():
                    m.uid = m.gid = 0
                    entries.append((m, t.extractfile(m).read() if m.isfile() else None))
            plain = tar_bytes(entries)
            blob = gz(plain)
            blobs[sha(blob)] = blob
            l["digest"], l["size"] = sha(blob), len(blob)
            config["rootfs"]["diff_ids"][i] = sha(plain)
        return self._finish(blobs, manifest, config, ref)


def main():
    base_path, outdir, outside, token = sys.argv[1:5]
    if not os.path.isabs(outside):
        sys.exit("make-corpus: OUTSIDE must be absolute")
    base = Base(base_path)
    os.makedirs(outdir, exist_ok=True)
    out = {}

    def layer(name, entries, **kw):
        out[name + ".oci.tar"] = base.image(name, tar_bytes(entries), **kw)

    layer("dotdot", [ti("ok"), ti("../%s-dotdot" % token, data=b"pwned")])
    layer("abs-dotdot", [ti("/../%s-absdotdot" % token, data=b"pwned")])
    layer("abs-ok", [ti("/abs-ok", data=b"inside\n")])
    # the symlinks' targets exist inside the root (made by the layer itself), so the files
    # below them land there; symlink-dangling has no target and must fail
    inside_outside = [ti(p + "/", "dir", 0o755) for p in parents(outside)]
    layer("symlink-out", inside_outside + [
        ti("etc/", "dir", 0o755),
        ti("evil", "symlink", 0o777, target=outside),
        ti("evil/%s-via-symlink" % token, data=b"pwned"),
        ti("etc-link", "symlink", 0o777, target="/etc"),
        ti("etc-link/%s-etc" % token, data=b"pwned"),
    ])
    layer("legit-links", [
        ti("usr/", "dir", 0o755), ti("usr/lib/", "dir", 0o755),
        ti("usr/lib/x.so", data=b"lib\n"),
        ti("lib", "symlink", 0o777, target="usr/lib"),
        ti("l1", "symlink", 0o777, target="l2"),
        ti("l2", "symlink", 0o777, target="/lib"),
        ti("abs", "symlink", 0o777, target="/usr/lib/x.so"),
    ])
    layer("symlink-dangling", [ti("evil", "symlink", 0o777, target=outside),
                               ti("evil/%s-dangling" % token, data=b"pwned")])
    layer("hardlink-out", [ti("hl", "hardlink", target="../../../../../../%s/canary" % outside)])
    layer("hardlink-lower", [ti("hl", "hardlink", target="bin/busybox")])
    layer("hardlink-later", [ti("hl", "hardlink", target="later"), ti("later", data=b"x")])
    layer("symlink-dot", [ti(".", "symlink", 0o777, target="/etc"),
                          ti("%s-dot" % token, data=b"pwned")])
    layer("dir-symlink-chmod", [ti("d/", "dir", 0o777),
                                ti("d", "symlink", 0o777, target=outside)])
    layer("device", [ti("dev/", "dir", 0o755), ti("dev/kmsg", "chr", 0o600)])
    layer("whiteout-bare", [ti("etc/", "dir", 0o755), ti("etc/.wh.", data=b"")])
    layer("whiteout-symlink", inside_outside + [ti("wl", "symlink", 0o777, target=outside),
                               ti("wl/.wh.canary", data=b"")])
    layer("passwd-symlink", [ti("etc/", "dir", 0o755),
                             ti("etc/passwd", "symlink", 0o777, target=outside + "/passwd")])

    bomb = zeros_tar_gz("%s-bomb" % token)
    with gzip.open(io.BytesIO(bomb)) as g:
        bomb_diff = hashlib.sha256()
        for chunk in iter(lambda: g.read(1 << 20), b""):
            bomb_diff.update(chunk)
    out["gzip-bomb.oci.tar"] = base.image("gzip-bomb", layer_blob=bomb,
                                          diff_id="sha256:" + bomb_diff.hexdigest())
    layer("entries-bomb", [ti("f%05d" % i) for i in range(3000)])

    good = tar_bytes([ti("f", data=os.urandom(4096))])
    cut = gz(good)[: len(gz(good)) // 2]
    out["truncated.oci.tar"] = base.image("truncated", good, layer_blob=cut)

    def blob_mismatch(blobs, manifest, config):
        d = manifest["layers"][-1]["digest"]
        b = bytearray(blobs[d])
        b[len(b) // 2] ^= 0xFF
        blobs[d] = bytes(b)
    layer("blob-mismatch", [ti("f", data=b"original")], mutate=blob_mismatch)

    def digest_traversal(blobs, manifest, config):
        manifest["layers"][-1]["digest"] = "sha256:../../%s" % token
    layer("digest-traversal", [ti("f", data=b"x")], mutate=digest_traversal)

    def manifest_index(blobs, manifest, config):
        manifest["manifests"] = [dict(manifest["layers"][0], mediaType=MT_MANIFEST)]
    layer("manifest-index", [ti("f", data=b"x")], mutate=manifest_index)

    def diffid_mismatch(blobs, manifest, config):
        config["rootfs"]["diff_ids"][-1] = sha(b"something else")
    layer("diffid-mismatch", [ti("f", data=b"x")], mutate=diffid_mismatch)

    def size_mismatch(blobs, manifest, config):
        manifest["layers"][-1]["size"] += 1
    layer("size-mismatch", [ti("f", data=b"x")], mutate=size_mismatch)

    def manifest_huge(blobs, manifest, config):
        manifest["annotations"] = {"padding": "x" * (5 << 20)}
    layer("manifest-huge", [ti("f", data=b"x")], mutate=manifest_huge)

    out["diffid-claim.oci.tar"] = base.claim("diffid-claim", tar_bytes([
        ti("claim-marker", data=b"crafted\n")]))
    out["lower-dir-symlink.oci.tar"] = base.stacked("lower-dir-symlink", [
        tar_bytes([ti("usr/", "dir", 0o755), ti("usr/lib/", "dir", 0o755),
                   ti("usr/lib/a", data=b"a\n"), ti("lib", "symlink", 0o777, target="usr/lib")]),
        tar_bytes([ti("lib/foo", data=b"foo\n")]),
    ])
    out["base-root-owned.oci.tar"] = base.root_owned("base-root-owned:latest")
    out["add-dotdot.tar"] = tar_bytes([ti("ok", data=b"ok"),
                                       ti("../%s-add" % token, data=b"pwned")])
    out["add-bomb.tar.gz"] = zeros_tar_gz("%s-addbomb" % token)

    for name, data in out.items():
        with open(os.path.join(outdir, name), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    main()
