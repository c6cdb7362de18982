/* Base images from files, offline: oci-archive, OCI layout dirs and `docker save` archives. */
#pragma once

#include <stddef.h>

#include "common/error.h"
#include "layers/oci.h"
#include "layers/store.h"

typedef enum {
	IMAGE_SRC_AUTO,
	IMAGE_SRC_OCI_ARCHIVE,
	IMAGE_SRC_OCI_DIR,
	IMAGE_SRC_DOCKER_ARCHIVE,
} ImageSourceKind;

/* Parses "oci-archive:PATH", "oci:DIR", "docker-archive:PATH" or a plain path, whose kind is
 * detected by content: a dir with oci-layout, a tar holding oci-layout (an OCI archive, also
 * when Docker 25+ added a manifest.json beside it) or a tar holding manifest.json only. An
 * explicit prefix is not checked against the content here. Errors are KILN_EUSAGE (bad spec) or
 * the errno of a path that cannot be read. */
int image_source_parse(const char *spec, ImageSourceKind *ret_kind, char **ret_path,
		       KilnError **err);

typedef struct ImportedImage {
	/* The name the source gives the image, raw (check it with ref_parse_name), or NULL:
	 * OCI: the io.containerd.image.name annotation (the full name BuildKit and containerd
	 * write), else org.opencontainers.image.ref.name when it is a name ("busybox:latest",
	 * "reg.io/app": it holds ':', '/' or '@'); docker-archive: RepoTags[0]. */
	char *name;
	/* OCI: org.opencontainers.image.ref.name when it is a bare tag ("latest", "1.0", as the
	 * OCI spec means it and BuildKit writes it) and there is no full name: it names no
	 * repository, so it is not a name (never "latest:latest"); else NULL. */
	char *tag_only;
	OciDescriptor root;
} ImportedImage;

/* Copies every blob of the source into the store, verifying each digest as it streams, and
 * returns the images it holds. Blobs are published only after the whole source was read and
 * verified: on any error (a blob whose bytes do not match its name, a bad name such as
 * blobs/sha256/../../x, a missing index.json) the store is unchanged and the error names the
 * blob or entry.
 * - OCI: one image per index.json entry (root = that descriptor, nested indexes kept as-is);
 *   every root blob must be present in the source or the store.
 * - docker-archive (`docker save`, legacy <id>/layer.tar and the newer blobs/sha256 layout,
 *   hardlinks and in-archive symlinks followed, escaping symlinks refused): builds an OCI
 *   manifest (layers MT_OCI_LAYER, or the gzip/zstd type detected from the bytes; the config blob
 *   byte-for-byte with MT_OCI_CONFIG; uncompressed layers checked against rootfs.diff_ids) and
 *   stores it; root = that manifest with the platform of its config; name = RepoTags[0]. */
int image_import(Store *s, const char *spec, ImportedImage **ret, size_t *ret_n, KilnError **err);
void imported_images_free(ImportedImage *v, size_t n);
