/* Writing artifacts: OCI layout dirs, oci-archives and docker-archives.
 *
 * Naming follows BuildKit's oci exporter (and containerd's archive exporter), which skopeo,
 * podman and containerd all read: the index.json entry of a named export carries
 *   io.containerd.image.name          = the fully qualified name ("docker.io/library/app:1.0")
 *   org.opencontainers.image.ref.name = the tag part only ("1.0")
 * so `skopeo copy oci-archive:F:1.0 ...` selects it, `ctr import` and `docker load` recover the
 * full name, and an archive with one entry needs no name at all (skopeo picks the only one). */
#pragma once

#include "common/error.h"
#include "layers/oci.h"
#include "layers/store.h"

/* OCI layout dir: oci-layout, index.json (one entry: root, with the two annotations above when
 * name is non-NULL; name is parsed with ref_parse_name, a bad name is KILN_EUSAGE) and
 * blobs/sha256/... for every blob reachable from root (recursively through indexes; blobs an
 * index lists that are not in the store are an error). dest_dir is created when missing; an
 * existing index.json there is replaced. */
int export_oci_dir(Store *s, const OciDescriptor *root, const char *name, const char *dest_dir,
		   KilnError **err);

/* Same content as a deterministic tar (entries sorted by name, directories "blobs/" and
 * "blobs/sha256/" first, mtime 0, uid/gid 0, no user/group names, mode 0644 files, 0755 dirs)
 * written atomically (temp file beside dest, fsync, rename) to dest ("-" = stdout). Every blob
 * is digest-checked while it is copied. */
int export_oci_archive(Store *s, const OciDescriptor *root, const char *name, const char *dest,
		       KilnError **err);

/* docker-archive for `docker load`: manifest.json
 * [{"Config":"blobs/sha256/<hex>","RepoTags":[...],"Layers":["blobs/sha256/<hex>",...]}] for
 * ONE platform's image, plus oci-layout and index.json (one entry per repo tag, annotated as
 * above) as Docker 25+ writes; deterministic tar, atomic. repo_tags (NULL-terminated, may be
 * NULL) are parsed with ref_parse_name and written in familiar form ("app:1.0", "me/app:1",
 * "reg.io/x:t"), as `docker save` writes them. */
int export_docker_archive(Store *s, const OciImage *img, char *const *repo_tags, const char *dest,
			  KilnError **err);
