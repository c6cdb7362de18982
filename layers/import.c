#include "import.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/fdutil.h"
#include "common/rootfs.h"

#define LINK_HOPS_MAX 16
#define COPY_BUF (64u << 10)

/* One file of the source, staged in the store's tmp dir until everything is verified. */
typedef struct Staged {
	char *name;    /* cleaned path inside the archive */
	char *link;    /* hardlink or resolved symlink target (cleaned), or NULL */
	BlobWriter *w; /* NULL for links */
	bool publish;  /* referenced: publish at the end */
	char digest[DIGEST_STRING_MAX];
	int64_t size;
} Staged;

typedef struct Source {
	Store *store;
	Staged *v;
	size_t n;
	json_t *names;	 /* name -> index in v of its last entry */
	json_t *digests; /* digest -> index in v of the staged blob */
	char *layout;	 /* oci-layout contents */
	char *index;	 /* index.json or manifest.json contents */
	size_t index_len;
} Source;

static void source_done(Source *src)
{
	for (size_t i = 0; i < src->n; i++) {
		free(src->v[i].name);
		free(src->v[i].link);
		blob_writer_free(src->v[i].w);
	}
	free(src->v);
	json_decref(src->names);
	json_decref(src->digests);
	free(src->layout);
	free(src->index);
}

void imported_images_free(ImportedImage *v, size_t n)
{
	if (!v)
		return;
	for (size_t i = 0; i < n; i++) {
		free(v[i].name);
		free(v[i].tag_only);
		oci_descriptor_done(&v[i].root);
	}
	free(v);
}

/* Cleans an archive path: drops "", "." and leading "/" components; ".." is refused (NULL). */
static char *path_clean(const char *path)
{
	_cleanup_free_ char *copy = xstrdup(path);
	_cleanup_free_ char *out = xcalloc(strlen(path) + 1, 1);
	char *save = NULL;

	for (char *c = strtok_r(copy, "/", &save); c; c = strtok_r(NULL, "/", &save)) {
		if (!strcmp(c, "."))
			continue;
		if (!strcmp(c, ".."))
			return NULL;
		if (out[0])
			strcat(out, "/");
		strcat(out, c);
	}
	return TAKE_PTR(out);
}

/* Resolves a symlink target relative to the link's directory, refusing escapes. */
static char *symlink_resolve(const char *link_name, const char *target)
{
	if (target[0] == '/')
		return NULL;
	const char *slash = strrchr(link_name, '/');
	_cleanup_free_ char *joined =
	    xasprintf("%.*s/%s", slash ? (int)(slash - link_name) : 0, link_name, target);
	/* Fold "dir/.." pairs; a ".." that climbs above the root is an escape. */
	_cleanup_free_ char *out = xcalloc(strlen(joined) + 1, 1);
	char *save = NULL;
	for (char *c = strtok_r(joined, "/", &save); c; c = strtok_r(NULL, "/", &save)) {
		if (!strcmp(c, "."))
			continue;
		if (!strcmp(c, "..")) {
			char *last = strrchr(out, '/');
			if (!out[0])
				return NULL;
			if (last)
				*last = 0;
			else
				out[0] = 0;
			continue;
		}
		if (out[0])
			strcat(out, "/");
		strcat(out, c);
	}
	return out[0] ? TAKE_PTR(out) : NULL;
}

/* Lookups are hashed: an archive of many entries naming each other must not cost n^2. */
static Staged *source_add(Source *src, const char *name)
{
	src->v = xrealloc(src->v, (src->n + 1) * sizeof(*src->v));
	Staged *e = &src->v[src->n];
	*e = (Staged){.name = xstrdup(name)};
	json_object_set_new(src->names, name, json_integer((json_int_t)src->n++));
	return e;
}

/* Records e, whose blob is written and verified, under its digest. */
static void source_staged(Source *src, const Staged *e)
{
	json_object_set_new(src->digests, e->digest, json_integer((json_int_t)(e - src->v)));
}

static Staged *source_at(Source *src, json_t *index)
{
	return index ? &src->v[json_integer_value(index)] : NULL;
}

/* The staged file at name, following links. */
static Staged *source_lookup(Source *src, const char *name)
{
	for (int hop = 0; hop < LINK_HOPS_MAX; hop++) {
		Staged *found = source_at(src, json_object_get(src->names, name));
		if (!found || !found->link)
			return found;
		name = found->link;
	}
	return NULL;
}

static Staged *source_find_digest(Source *src, const char *digest)
{
	return source_at(src, json_object_get(src->digests, digest));
}

/* Streams the current archive entry into a new staged blob. */
static int stage_entry_data(Source *src, struct archive *a, Staged *e, const char *expected,
			    KilnError **err)
{
	_cleanup_free_ char *buf = xcalloc(1, COPY_BUF);
	int r;

	r = store_blob_writer_new(src->store, &e->w, err);
	if (r < 0)
		return r;
	for (;;) {
		la_ssize_t n = archive_read_data(a, buf, COPY_BUF);
		if (n < 0)
			return kiln_error(err, EIO, "read '%s': %s", e->name,
					  archive_error_string(a));
		if (n == 0)
			break;
		r = blob_writer_write(e->w, buf, (size_t)n, err);
		if (r < 0)
			return r;
	}
	r = blob_writer_finish(e->w, expected, e->digest, &e->size, err);
	if (r < 0)
		return kiln_error_wrap(err, r, "blob '%s'", e->name);
	source_staged(src, e);
	return 0;
}

static int read_entry_small(struct archive *a, const char *name, size_t max, char **ret,
			    size_t *ret_len, KilnError **err)
{
	size_t cap = 4096, len = 0;
	_cleanup_free_ char *buf = xcalloc(1, cap + 1);

	for (;;) {
		if (len == cap) {
			if (cap >= max)
				return kiln_error(err, EFBIG, "'%s' is larger than %zu bytes", name,
						  max);
			cap = cap * 2 > max ? max : cap * 2;
			buf = xrealloc(buf, cap + 1);
		}
		la_ssize_t n = archive_read_data(a, buf + len, cap - len);
		if (n < 0)
			return kiln_error(err, EIO, "read '%s': %s", name, archive_error_string(a));
		if (n == 0)
			break;
		len += (size_t)n;
	}
	buf[len] = 0;
	free(*ret);
	*ret = TAKE_PTR(buf);
	if (ret_len)
		*ret_len = len;
	return 0;
}

static void archive_freep(struct archive **a)
{
	if (*a)
		archive_read_free(*a);
}

/* Opens the archive at path for reading; *ret_fd is the caller's to close after the archive is
 * freed (libarchive does not close it). A FIFO, socket or device is refused before anything
 * waits on it: an archive is read twice (detection, then import), which a stream cannot give. */
static int archive_open_path(const char *path, struct archive **ret, int *ret_fd, KilnError **err)
{
	_cleanup_close_ int fd = open(path, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
	int r;

	if (fd < 0)
		return kiln_error_errno(err, errno, "open archive '%s'", path);
	r = fd_require_regular(fd, path, err);
	if (r < 0)
		return r;
	_cleanup_(archive_freep) struct archive *a = archive_read_new();
	if (!a)
		return kiln_error(err, ENOMEM, "out of memory");
	archive_read_support_format_tar(a);
	archive_read_support_filter_all(a);
	if (archive_read_open_fd(a, fd, COPY_BUF) != ARCHIVE_OK) {
		int e = archive_errno(a);
		return kiln_error(err, e > 0 ? e : EIO, "open archive '%s': %s", path,
				  archive_error_string(a));
	}
	*ret = TAKE_PTR(a);
	*ret_fd = TAKE_FD(fd);
	return 0;
}

/* Reads every entry of an archive into src. docker = stage all regular files (docker-archive),
 * else only blobs/sha256/<hex>, oci-layout and index.json (OCI). */
static int source_read_archive(Source *src, const char *path, bool docker, KilnError **err)
{
	_cleanup_close_ int fd = -1;
	_cleanup_(archive_freep) struct archive *a = NULL;
	struct archive_entry *entry;
	int r;

	r = archive_open_path(path, &a, &fd, err);
	if (r < 0)
		return r;
	for (;;) {
		r = archive_read_next_header(a, &entry);
		if (r == ARCHIVE_EOF)
			break;
		if (r != ARCHIVE_OK && r != ARCHIVE_WARN)
			return kiln_error(err, EIO, "read archive '%s': %s", path,
					  archive_error_string(a));
		const char *raw = archive_entry_pathname(entry);
		_cleanup_free_ char *name = raw ? path_clean(raw) : NULL;
		if (!name)
			return kiln_error(err, EINVAL, "archive '%s': invalid entry name '%s'",
					  path, raw ? raw : "");
		mode_t type = archive_entry_filetype(entry);
		const char *hardlink = archive_entry_hardlink(entry);
		bool in_blobs = !strncmp(name, "blobs/", 6);

		if (type == AE_IFDIR && !hardlink)
			continue;
		const char *expected = NULL;
		char digest[DIGEST_STRING_MAX];
		if (in_blobs) {
			bool ok = !strncmp(name, "blobs/sha256/", 13) && strlen(name + 13) == 64;
			if (ok)
				snprintf(digest, sizeof(digest), "sha256:%s", name + 13);
			if (!ok || !digest_is_valid(digest))
				return kiln_error(
				    err, EINVAL, "archive '%s': invalid blob name '%s'", path, raw);
			expected = digest;
		}
		if (!docker) {
			if (!strcmp(name, "oci-layout"))
				r = read_entry_small(a, name, 4096, &src->layout, NULL, err);
			else if (!strcmp(name, "index.json"))
				r = read_entry_small(a, name, OCI_MANIFEST_MAX, &src->index,
						     &src->index_len, err);
			else if (!in_blobs)
				continue;
			else if (type != AE_IFREG || hardlink)
				return kiln_error(err, EINVAL,
						  "archive '%s': blob '%s' is not a regular file",
						  path, name);
			else if (store_has_blob(src->store, expected) ||
				 source_find_digest(src, expected))
				continue;
			else
				r = stage_entry_data(src, a, source_add(src, name), expected, err);
			if (r < 0)
				return r;
			continue;
		}
		if (hardlink) {
			_cleanup_free_ char *target = path_clean(hardlink);
			if (!target)
				return kiln_error(err, EINVAL, "archive '%s': invalid link '%s'",
						  path, hardlink);
			source_add(src, name)->link = TAKE_PTR(target);
		} else if (type == AE_IFLNK) {
			const char *t = archive_entry_symlink(entry);
			char *target = t ? symlink_resolve(name, t) : NULL;
			if (!target)
				return kiln_error(err, EINVAL,
						  "archive '%s': symlink '%s' -> '%s' escapes the "
						  "archive",
						  path, name, t ? t : "");
			source_add(src, name)->link = target;
		} else if (type != AE_IFREG)
			continue;
		else if (!strcmp(name, "manifest.json"))
			r = read_entry_small(a, name, OCI_MANIFEST_MAX, &src->index,
					     &src->index_len, err);
		else
			r = stage_entry_data(src, a, source_add(src, name), expected, err);
		if (r < 0)
			return r;
	}
	return 0;
}

/* Opens name inside the layout dir dfd for reading: resolved as if dfd were "/" (a symlink
 * leading out of it cannot reach a host file), a FIFO or device refused without waiting. */
static int dir_open_file(int dfd, const char *dir, const char *name, int *ret_fd, KilnError **err)
{
	_cleanup_free_ char *path = xasprintf("%s/%s", dir, name);
	_cleanup_close_ int fd = rootfs_open(dfd, name, O_RDONLY | O_NONBLOCK | O_NOCTTY, 0);
	struct stat st;
	int r;

	if (fd == -ENOENT && fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
	    S_ISLNK(st.st_mode))
		return kiln_error(err, ENOENT, "'%s' is a symlink to nothing inside '%s'", path,
				  dir);
	if (fd < 0)
		return kiln_error_errno(err, -fd, "open '%s'", path);
	r = fd_require_regular(fd, path, err);
	if (r < 0)
		return r;
	*ret_fd = TAKE_FD(fd);
	return 0;
}

static int dir_read_small(int dfd, const char *dir, const char *name, size_t max, char **ret,
			  size_t *ret_len, KilnError **err)
{
	_cleanup_close_ int fd = -1;
	int r = dir_open_file(dfd, dir, name, &fd, err);

	if (r < 0)
		return r;
	r = read_all_fd(fd, max, ret, ret_len, err);
	if (r < 0)
		return kiln_error_wrap(err, r, "read '%s/%s'", dir, name);
	return 0;
}

/* Stages blobs/sha256/<hex> of the layout dir (unless the store has it). */
static int dir_stage_blob(Source *src, int dfd, const char *dir, const char *hex, KilnError **err)
{
	_cleanup_free_ char *name = xasprintf("blobs/sha256/%s", hex);
	_cleanup_free_ char *buf = NULL;
	_cleanup_close_ int fd = -1;
	char digest[DIGEST_STRING_MAX];
	int r;

	snprintf(digest, sizeof(digest), "sha256:%s", hex);
	if (strlen(hex) != 64 || !digest_is_valid(digest))
		return kiln_error(err, EINVAL, "'%s': invalid blob name '%s'", dir, name);
	if (store_has_blob(src->store, digest))
		return 0;
	r = dir_open_file(dfd, dir, name, &fd, err);
	if (r < 0)
		return r;
	Staged *e = source_add(src, hex);
	r = store_blob_writer_new(src->store, &e->w, err);
	buf = xcalloc(1, COPY_BUF);
	for (ssize_t n; r >= 0 && (n = read(fd, buf, COPY_BUF)) != 0;) {
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return kiln_error_errno(err, errno, "read blob %s", digest);
		r = blob_writer_write(e->w, buf, (size_t)n, err);
	}
	if (r >= 0)
		r = blob_writer_finish(e->w, digest, e->digest, &e->size, err);
	if (r < 0)
		return kiln_error_wrap(err, r, "blob %s", digest);
	source_staged(src, e);
	return 0;
}

/* An OCI layout directory: the blobs under blobs/sha256, oci-layout and index.json, every path
 * resolved inside the directory. */
static int source_read_dir(Source *src, const char *path, KilnError **err)
{
	_cleanup_close_ int dfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	_cleanup_strv_free_ char **names = NULL;
	int r;

	if (dfd < 0)
		return kiln_error_errno(err, errno, "open '%s'", path);
	r = dir_read_small(dfd, path, "oci-layout", 4096, &src->layout, NULL, err);
	if (r >= 0)
		r = dir_read_small(dfd, path, "index.json", OCI_MANIFEST_MAX, &src->index,
				   &src->index_len, err);
	if (r < 0)
		return r;
	_cleanup_close_ int bfd = rootfs_open(dfd, "blobs/sha256", O_RDONLY | O_DIRECTORY, 0);
	if (bfd == -ENOENT)
		return 0;
	if (bfd < 0)
		return kiln_error_errno(err, -bfd, "open '%s/blobs/sha256'", path);
	r = dir_list_sorted(bfd, &names, err);
	if (r < 0)
		return kiln_error_wrap(err, r, "'%s/blobs/sha256'", path);
	for (size_t i = 0; names[i] && r >= 0; i++)
		r = dir_stage_blob(src, dfd, path, names[i], err);
	return r;
}

static int source_publish(Source *src, bool all, KilnError **err)
{
	for (size_t i = 0; i < src->n; i++) {
		Staged *e = &src->v[i];
		if (!e->w || !(all || e->publish))
			continue;
		int r = blob_writer_commit(e->w, NULL, NULL, NULL, err);
		if (r < 0)
			return kiln_error_wrap(err, r, "store blob %s", e->digest);
	}
	return 0;
}

/* Messages about the source's own documents name positions, never their bytes. */
static int json_parse_source(const char *what, const char *data, size_t len, json_t **ret,
			     KilnError **err)
{
	json_error_t jerr;
	json_t *j = json_loadb(data, len, 0, &jerr);

	if (!j)
		return kiln_error(err, EINVAL, "%s: not valid JSON at line %d column %d", what,
				  jerr.line, jerr.column);
	*ret = j;
	return 0;
}

static int check_layout(const char *layout, KilnError **err)
{
	_cleanup_json_ json_t *j = NULL;
	int r;

	if (!layout)
		return kiln_error(err, EINVAL, "no oci-layout file");
	r = json_parse_source("oci-layout", layout, strlen(layout), &j, err);
	if (r < 0)
		return r;
	const char *v = json_string_value(json_object_get(j, "imageLayoutVersion"));
	if (!v || strcmp(v, "1.0.0") != 0)
		return kiln_error(err, EINVAL, "oci-layout: imageLayoutVersion is not \"1.0.0\"");
	return 0;
}

/* An index.json entry's name: io.containerd.image.name (BuildKit and containerd write the full
 * name there), else org.opencontainers.image.ref.name when it is a name. The OCI spec means
 * that annotation for a tag, and BuildKit writes only the tag ("latest", "1.0"): a tag alone
 * names no repository, so it is kept apart, never turned into a name like "latest:latest".
 * skopeo and older kiln write "busybox:latest" there, which is a name (it holds ':' or '/'). */
static void oci_entry_name(const OciDescriptor *d, ImportedImage *img)
{
	const char *full = oci_descriptor_annotation(d, CONTAINERD_ANNOTATION_IMAGE_NAME);
	const char *ref = oci_descriptor_annotation(d, OCI_ANNOTATION_REF_NAME);

	if (full && *full)
		img->name = xstrdup(full);
	else if (ref && *ref && strpbrk(ref, ":/@"))
		img->name = xstrdup(ref);
	else if (ref && *ref)
		img->tag_only = xstrdup(ref);
}

static int import_oci(Source *src, ImportedImage **ret, size_t *ret_n, KilnError **err)
{
	OciDescriptor *roots = NULL;
	size_t n = 0;
	int r;

	r = check_layout(src->layout, err);
	if (r < 0)
		return r;
	if (!src->index)
		return kiln_error(err, EINVAL, "no index.json");
	r = oci_index_parse(src->index, src->index_len, &roots, &n, err);
	if (r < 0)
		return kiln_error_wrap(err, r, "index.json");
	for (size_t i = 0; i < n; i++)
		if (!source_find_digest(src, roots[i].digest) &&
		    !store_has_blob(src->store, roots[i].digest)) {
			r = kiln_error(err, ENOENT, "index.json names blob %s, which is missing",
				       roots[i].digest);
			oci_descriptors_free(roots, n);
			return r;
		}
	r = source_publish(src, true, err);
	if (r < 0) {
		oci_descriptors_free(roots, n);
		return r;
	}
	ImportedImage *v = xcalloc(n + 1, sizeof(*v));
	for (size_t i = 0; i < n; i++) {
		oci_entry_name(&roots[i], &v[i]);
		v[i].root = roots[i];
	}
	free(roots);
	*ret = v;
	*ret_n = n;
	return 0;
}

static int staged_read(Staged *e, size_t max, char **ret, size_t *ret_len, KilnError **err)
{
	_cleanup_close_ int fd = -1;
	int r = blob_writer_open_data(e->w, &fd, err);

	if (r < 0)
		return r;
	r = read_all_fd(fd, max, ret, ret_len, err);
	if (r < 0)
		return kiln_error_wrap(err, r, "read '%s'", e->name);
	return 0;
}

static const char *layer_media_type(Staged *e, KilnError **err)
{
	unsigned char head[4] = {0};
	_cleanup_close_ int fd = -1;

	if (blob_writer_open_data(e->w, &fd, err) < 0)
		return NULL;
	ssize_t n = pread(fd, head, sizeof(head), 0);
	if (n < 0) {
		kiln_error_errno(err, errno, "read '%s'", e->name);
		return NULL;
	}
	if (n >= 2 && head[0] == 0x1f && head[1] == 0x8b)
		return MT_OCI_LAYER_GZIP;
	if (n == 4 && head[0] == 0x28 && head[1] == 0xb5 && head[2] == 0x2f && head[3] == 0xfd)
		return MT_OCI_LAYER_ZSTD;
	return MT_OCI_LAYER;
}

static Staged *lookup_file(Source *src, json_t *path, const char *what, KilnError **err)
{
	const char *p = json_string_value(path);
	_cleanup_free_ char *clean = p ? path_clean(p) : NULL;
	Staged *e = clean ? source_lookup(src, clean) : NULL;

	if (!e || !e->w) {
		kiln_error(err, ENOENT, "manifest.json: %s '%s' is missing from the archive", what,
			   p ? p : "");
		return NULL;
	}
	return e;
}

/* One manifest.json entry -> an OCI manifest (JSON text) and its root descriptor. */
static int docker_build_manifest(Source *src, json_t *m, char **ret_text, ImportedImage *ret,
				 KilnError **err)
{
	_cleanup_(oci_image_freep) OciImage *img = xcalloc(1, sizeof(*img));
	_cleanup_free_ char *config = NULL;
	size_t config_len = 0;
	int r;

	json_t *layers = json_object_get(m, "Layers");
	if (!json_is_object(m) || !json_is_array(layers))
		return kiln_error(err, EINVAL, "manifest.json: entry without Layers");
	Staged *ce = lookup_file(src, json_object_get(m, "Config"), "config", err);
	if (!ce)
		return -ENOENT;
	r = staged_read(ce, OCI_CONFIG_MAX, &config, &config_len, err);
	if (r < 0)
		return r;
	img->n_layers = json_array_size(layers);
	r = oci_config_parse(img, config, config_len, false, err);
	if (r < 0)
		return kiln_error_wrap(err, r, "config '%s'", ce->name);
	ce->publish = true;

	_cleanup_json_ json_t *doc = json_object();
	json_t *jl = json_array();
	json_object_set_new(doc, "schemaVersion", json_integer(2));
	json_object_set_new(doc, "mediaType", json_string(MT_OCI_MANIFEST));
	OciDescriptor cd = {.media_type = MT_OCI_CONFIG, .size = ce->size};
	memcpy(cd.digest, ce->digest, sizeof(cd.digest));
	json_object_set_new(doc, "config", oci_descriptor_to_json(&cd));
	json_object_set_new(doc, "layers", jl);
	for (size_t i = 0; i < img->n_layers; i++) {
		Staged *le = lookup_file(src, json_array_get(layers, i), "layer", err);
		if (!le)
			return -ENOENT;
		const char *mt = layer_media_type(le, err);
		if (!mt)
			return -EIO;
		if (!strcmp(mt, MT_OCI_LAYER) && strcmp(le->digest, img->diff_ids[i]) != 0)
			return kiln_error(err, EIO,
					  "layer '%s' is %s but rootfs.diff_ids[%zu] says %s",
					  le->name, le->digest, i, img->diff_ids[i]);
		le->publish = true;
		OciDescriptor ld = {.size = le->size};
		snprintf(ld.media_type, sizeof(ld.media_type), "%s", mt);
		memcpy(ld.digest, le->digest, sizeof(ld.digest));
		json_array_append_new(jl, oci_descriptor_to_json(&ld));
	}
	*ret_text = oci_json_dump(doc);
	digest_buffer(*ret_text, strlen(*ret_text), ret->root.digest);
	snprintf(ret->root.media_type, sizeof(ret->root.media_type), "%s", MT_OCI_MANIFEST);
	ret->root.size = (int64_t)strlen(*ret_text);
	ret->root.has_platform = true;
	ret->root.platform = img->platform;
	const char *tag = json_string_value(json_array_get(json_object_get(m, "RepoTags"), 0));
	ret->name = tag ? xstrdup(tag) : NULL;
	return 0;
}

/* manifest.json: an array of images, at most OCI_DESCRIPTORS_MAX layers listed in all. */
static int docker_manifest_list(Source *src, json_t **ret, KilnError **err)
{
	_cleanup_json_ json_t *list = NULL;
	size_t i, layers = 0;
	json_t *m;
	int r;

	if (!src->index)
		return kiln_error(err, EINVAL, "no manifest.json");
	r = json_parse_source("manifest.json", src->index, src->index_len, &list, err);
	if (r < 0)
		return r;
	if (!json_is_array(list))
		return kiln_error(err, EINVAL, "manifest.json is not a JSON array");
	json_array_foreach (list, i, m)
		layers += json_array_size(json_object_get(m, "Layers"));
	if (json_array_size(list) > OCI_DESCRIPTORS_MAX || layers > OCI_DESCRIPTORS_MAX)
		return kiln_error(err, E2BIG, "manifest.json lists more than %d images or layers",
				  OCI_DESCRIPTORS_MAX);
	*ret = TAKE_PTR(list);
	return 0;
}

static int import_docker(Source *src, ImportedImage **ret, size_t *ret_n, KilnError **err)
{
	_cleanup_json_ json_t *list = NULL;
	int r = docker_manifest_list(src, &list, err);

	if (r < 0)
		return r;
	size_t n = json_array_size(list);
	ImportedImage *v = xcalloc(n + 1, sizeof(*v));
	char **texts = xcalloc(n + 1, sizeof(char *));
	for (size_t i = 0; i < n && r >= 0; i++)
		r = docker_build_manifest(src, json_array_get(list, i), &texts[i], &v[i], err);
	if (r >= 0)
		r = source_publish(src, false, err);
	for (size_t i = 0; i < n && r >= 0; i++)
		r = store_put_blob(src->store, texts[i], strlen(texts[i]), v[i].root.digest, NULL,
				   err);
	strv_free(texts);
	if (r < 0) {
		imported_images_free(v, n);
		return r;
	}
	*ret = v;
	*ret_n = n;
	return 0;
}

/* Peeks at a tar's entry names. */
static int archive_detect(const char *path, ImageSourceKind *ret, KilnError **err)
{
	_cleanup_close_ int fd = -1;
	_cleanup_(archive_freep) struct archive *a = NULL;
	struct archive_entry *entry;
	bool manifest = false;
	int r;

	r = archive_open_path(path, &a, &fd, err);
	if (r < 0)
		return r;
	while ((r = archive_read_next_header(a, &entry)) == ARCHIVE_OK || r == ARCHIVE_WARN) {
		const char *raw = archive_entry_pathname(entry);
		_cleanup_free_ char *name = raw ? path_clean(raw) : NULL;
		if (name && !strcmp(name, "oci-layout")) {
			*ret = IMAGE_SRC_OCI_ARCHIVE;
			return 0;
		}
		if (name && !strcmp(name, "manifest.json"))
			manifest = true;
	}
	if (r != ARCHIVE_EOF)
		return kiln_error(err, EINVAL, "'%s' is not a readable tar archive: %s", path,
				  archive_error_string(a));
	if (!manifest)
		return kiln_error(err, EINVAL,
				  "'%s' is neither an oci-archive nor a docker-archive", path);
	*ret = IMAGE_SRC_DOCKER_ARCHIVE;
	return 0;
}

int image_source_parse(const char *spec, ImageSourceKind *ret_kind, char **ret_path,
		       KilnError **err)
{
	static const struct {
		const char *prefix;
		ImageSourceKind kind;
	} prefixes[] = {
	    {"oci-archive:", IMAGE_SRC_OCI_ARCHIVE},
	    {"oci:", IMAGE_SRC_OCI_DIR},
	    {"docker-archive:", IMAGE_SRC_DOCKER_ARCHIVE},
	};
	ImageSourceKind kind = IMAGE_SRC_AUTO;
	const char *path = spec;
	struct stat st;
	int r;

	if (!spec || !*spec)
		return kiln_error(err, KILN_EUSAGE, "empty image source");
	for (size_t i = 0; i < ELEMENTSOF(prefixes); i++)
		if (!strncmp(spec, prefixes[i].prefix, strlen(prefixes[i].prefix))) {
			kind = prefixes[i].kind;
			path = spec + strlen(prefixes[i].prefix);
		}
	if (!*path)
		return kiln_error(err, KILN_EUSAGE, "image source '%s' has no path", spec);
	if (kind == IMAGE_SRC_AUTO) {
		if (stat(path, &st) < 0)
			return kiln_error_errno(err, errno, "image source '%s'", path);
		if (S_ISDIR(st.st_mode)) {
			_cleanup_free_ char *layout = xasprintf("%s/oci-layout", path);
			if (access(layout, F_OK) < 0)
				return kiln_error(err, EINVAL,
						  "'%s' is a directory without oci-layout", path);
			kind = IMAGE_SRC_OCI_DIR;
		} else {
			r = archive_detect(path, &kind, err);
			if (r < 0)
				return r;
		}
	}
	*ret_kind = kind;
	*ret_path = xstrdup(path);
	return 0;
}

int image_import(Store *s, const char *spec, ImportedImage **ret, size_t *ret_n, KilnError **err)
{
	_cleanup_(source_done)
	    Source src = {.store = s, .names = json_object(), .digests = json_object()};
	_cleanup_free_ char *path = NULL;
	ImageSourceKind kind;
	int r;

	r = image_source_parse(spec, &kind, &path, err);
	if (r < 0)
		return r;
	switch (kind) {
	case IMAGE_SRC_OCI_DIR:
		r = source_read_dir(&src, path, err);
		if (r >= 0)
			r = import_oci(&src, ret, ret_n, err);
		break;
	case IMAGE_SRC_OCI_ARCHIVE:
		r = source_read_archive(&src, path, false, err);
		if (r >= 0)
			r = import_oci(&src, ret, ret_n, err);
		break;
	case IMAGE_SRC_DOCKER_ARCHIVE:
		r = source_read_archive(&src, path, true, err);
		if (r >= 0)
			r = import_docker(&src, ret, ret_n, err);
		break;
	case IMAGE_SRC_AUTO:
	default:
		r = kiln_error(err, EINVAL, "unknown image source kind");
		break;
	}
	if (r < 0)
		return kiln_error_wrap(err, r, "import '%s'", spec);
	return 0;
}
