#include "export.h"

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/fdutil.h"
#include "common/owner.h"

#define COPY_BUF (64u << 10)
#define OCI_LAYOUT_JSON "{\"imageLayoutVersion\":\"1.0.0\"}"

/* The files of an artifact: blobs copied from the store, or small generated documents. */
typedef struct Item {
	char *name;
	bool dir;
	char digest[DIGEST_STRING_MAX]; /* blob, when data is NULL and !dir */
	int64_t size;
	char *data;
} Item;

typedef struct Items {
	Item *v;
	size_t n;
	json_t *names; /* set of the names in v */
} Items;

static void items_done(Items *it)
{
	for (size_t i = 0; i < it->n; i++) {
		free(it->v[i].name);
		free(it->v[i].data);
	}
	free(it->v);
	if (it->names)
		json_decref(it->names);
}

static Item *items_add(Items *it, char *name)
{
	if (!it->names)
		it->names = json_object();
	if (json_object_get(it->names, name)) {
		free(name);
		return NULL;
	}
	json_object_set_new(it->names, name, json_true());
	it->v = xrealloc(it->v, (it->n + 1) * sizeof(*it->v));
	Item *e = &it->v[it->n++];
	*e = (Item){.name = name};
	return e;
}

static void items_add_data(Items *it, const char *name, char *data)
{
	Item *e = items_add(it, xstrdup(name));

	if (!e) {
		free(data);
		return;
	}
	e->data = data;
	e->size = (int64_t)strlen(data);
}

static int items_add_blob(Store *s, Items *it, const char *digest, int64_t size, KilnError **err)
{
	if (!digest_is_valid(digest))
		return kiln_error(err, EINVAL, "invalid digest '%s'", digest);
	if (!store_has_blob(s, digest))
		return kiln_error(err, ENOENT, "blob %s is not in the store", digest);
	Item *e = items_add(it, xasprintf("blobs/sha256/%s", digest_hex(digest)));
	if (e) {
		memcpy(e->digest, digest, DIGEST_STRING_MAX);
		e->size = size;
	}
	return 0;
}

static int cmp_items(const void *a, const void *b)
{
	return strcmp(((const Item *)a)->name, ((const Item *)b)->name);
}

typedef struct CollectCtx {
	Store *s;
	Items *it;
} CollectCtx;

/* oci_walk visitor: every blob reachable from the root is exported. */
static int collect_fn(const OciDescriptor *d, unsigned depth, void *userdata, KilnError **err)
{
	CollectCtx *c = userdata;

	(void)depth;
	return items_add_blob(c->s, c->it, d->digest, d->size, err);
}

static void items_add_layout(Items *it)
{
	items_add(it, xstrdup("blobs/"))->dir = true;
	items_add(it, xstrdup("blobs/sha256/"))->dir = true;
	items_add_data(it, "oci-layout", xstrdup(OCI_LAYOUT_JSON));
}

/* The index.json entry of an export: root, with its name annotations replaced. */
static int named_descriptor(const OciDescriptor *root, const char *name, OciDescriptor *ret,
			    KilnError **err)
{
	Reference ref;
	json_t *ann;

	if (name) {
		int r = ref_parse_name(name, &ref, err);
		if (r < 0)
			return r;
	}
	ann = json_object();
	if (root->annotations)
		json_object_update(ann, root->annotations);
	json_object_del(ann, CONTAINERD_ANNOTATION_IMAGE_NAME);
	json_object_del(ann, OCI_ANNOTATION_REF_NAME);
	if (name) {
		_cleanup_free_ char *full = ref_string(&ref);
		json_object_set_new(ann, CONTAINERD_ANNOTATION_IMAGE_NAME, json_string(full));
		json_object_set_new(ann, OCI_ANNOTATION_REF_NAME, json_string(ref.tag));
	}
	*ret = *root;
	ret->annotations = ann;
	return 0;
}

static char *index_json(const OciDescriptor *entries, size_t n)
{
	_cleanup_json_ json_t *index = json_object();
	json_t *m = json_array();

	json_object_set_new(index, "schemaVersion", json_integer(2));
	json_object_set_new(index, "mediaType", json_string(MT_OCI_INDEX));
	json_object_set_new(index, "manifests", m);
	for (size_t i = 0; i < n; i++)
		json_array_append_new(m, oci_descriptor_to_json(&entries[i]));
	return oci_json_dump(index);
}

static int oci_items(Store *s, const OciDescriptor *root, const char *name, Items *it,
		     KilnError **err)
{
	OciDescriptor entry;
	int r;

	r = named_descriptor(root, name, &entry, err);
	if (r < 0)
		return r;
	items_add_layout(it);
	items_add_data(it, "index.json", index_json(&entry, 1));
	oci_descriptor_done(&entry);
	OciWalkOptions wo = {
	    .flags = OCI_WALK_MANIFESTS, .visit = collect_fn, .userdata = &(CollectCtx){s, it}};
	r = oci_walk(s, root, 1, &wo, err);
	if (r < 0)
		return r;
	qsort(it->v, it->n, sizeof(*it->v), cmp_items);
	return 0;
}

typedef int (*WriteFn)(void *ctx, const void *buf, size_t len, KilnError **err);

/* Copies a blob out of the store, checking its size and digest on the way. */
static int copy_blob(Store *s, const Item *e, WriteFn fn, void *ctx, KilnError **err)
{
	_cleanup_close_ int fd = -1;
	_cleanup_(sha256_freep) Sha256 *h = NULL;
	_cleanup_free_ char *buf = xcalloc(1, COPY_BUF);
	char actual[DIGEST_STRING_MAX];
	int64_t total = 0;
	int r;

	r = store_open_blob(s, e->digest, &fd, err);
	if (r < 0)
		return r;
	r = sha256_new(&h, err);
	if (r < 0)
		return r;
	for (;;) {
		ssize_t n = read(fd, buf, COPY_BUF);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return kiln_error_errno(err, errno, "read blob %s", e->digest);
		if (n == 0)
			break;
		if (total + n > e->size)
			return kiln_error(err, EIO, "blob %s is larger than its descriptor says",
					  e->digest);
		sha256_update(h, buf, (size_t)n);
		total += n;
		r = fn(ctx, buf, (size_t)n, err);
		if (r < 0)
			return r;
	}
	sha256_final(h, actual);
	if (total != e->size || strcmp(actual, e->digest) != 0)
		return kiln_error(err, EIO, "blob %s is corrupt in the store (content %s)",
				  e->digest, actual);
	return 0;
}

static int archive_write_fn(void *ctx, const void *buf, size_t len, KilnError **err)
{
	struct archive *a = ctx;

	if (archive_write_data(a, buf, len) != (la_ssize_t)len)
		return kiln_error(err, EIO, "write archive: %s", archive_error_string(a));
	return 0;
}

static void archive_write_freep(struct archive **a)
{
	if (*a)
		archive_write_free(*a);
}

static int write_tar(Store *s, const Items *it, int fd, KilnError **err)
{
	_cleanup_(archive_write_freep) struct archive *a = archive_write_new();

	if (!a)
		return kiln_error(err, ENOMEM, "out of memory");
	/* ustar headers for our short names; pax only if ever needed (never for these names). */
	if (archive_write_set_format_pax_restricted(a) != ARCHIVE_OK ||
	    archive_write_add_filter_none(a) != ARCHIVE_OK ||
	    archive_write_open_fd(a, fd) != ARCHIVE_OK)
		return kiln_error(err, EIO, "write archive: %s", archive_error_string(a));
	for (size_t i = 0; i < it->n; i++) {
		const Item *e = &it->v[i];
		struct archive_entry *ae = archive_entry_new();
		archive_entry_set_pathname(ae, e->name);
		archive_entry_set_filetype(ae, e->dir ? AE_IFDIR : AE_IFREG);
		archive_entry_set_perm(ae, e->dir ? 0755 : 0644);
		archive_entry_set_size(ae, e->dir ? 0 : e->size);
		archive_entry_set_mtime(ae, 0, 0);
		archive_entry_set_uid(ae, 0);
		archive_entry_set_gid(ae, 0);
		int ar = archive_write_header(a, ae);
		archive_entry_free(ae);
		if (ar != ARCHIVE_OK)
			return kiln_error(err, EIO, "write archive entry '%s': %s", e->name,
					  archive_error_string(a));
		int r = 0;
		if (e->data)
			r = archive_write_fn(a, e->data, (size_t)e->size, err);
		else if (!e->dir)
			r = copy_blob(s, e, archive_write_fn, a, err);
		if (r < 0)
			return r;
	}
	if (archive_write_close(a) != ARCHIVE_OK)
		return kiln_error(err, EIO, "write archive: %s", archive_error_string(a));
	return 0;
}

/* Writes the tar to dest atomically, or to stdout for "-". */
static int write_tar_atomic(Store *s, const Items *it, const char *dest, KilnError **err)
{
	if (!strcmp(dest, "-"))
		return write_tar(s, it, STDOUT_FILENO, err);

	_cleanup_free_ char *tmp = xasprintf("%s.tmp-XXXXXX", dest);
	_cleanup_close_ int fd = mkostemp(tmp, O_CLOEXEC);
	int r;

	if (fd < 0)
		return kiln_error_errno(err, errno, "create '%s'", tmp);
	/* the user's file, not kiln's namespace's (see owner.h) */
	r = owner_give_fd(fd);
	if (r < 0)
		r = kiln_error_errno(err, -r, "chown '%s'", tmp);
	if (r >= 0)
		r = write_tar(s, it, fd, err);
	if (r >= 0 && fchmod(fd, 0644) < 0)
		r = kiln_error_errno(err, errno, "chmod '%s'", tmp);
	if (r >= 0 && fsync(fd) < 0)
		r = kiln_error_errno(err, errno, "fsync '%s'", tmp);
	if (r >= 0 && rename(tmp, dest) < 0)
		r = kiln_error_errno(err, errno, "rename '%s' to '%s'", tmp, dest);
	if (r < 0) {
		unlink(tmp);
		return kiln_error_wrap(err, r, "write '%s'", dest);
	}
	return 0;
}

int export_oci_archive(Store *s, const OciDescriptor *root, const char *name, const char *dest,
		       KilnError **err)
{
	_cleanup_(items_done) Items it = {0};
	int r;

	r = oci_items(s, root, name, &it, err);
	if (r < 0)
		return kiln_error_wrap(err, r, "export %s", root->digest);
	return write_tar_atomic(s, &it, dest, err);
}

static int fd_write_fn(void *ctx, const void *buf, size_t len, KilnError **err)
{
	int r = write_all(*(int *)ctx, buf, len);

	if (r < 0)
		return kiln_error_errno(err, r, "write");
	return 0;
}

/* Creates (when missing) and opens dir/name without following a symlink: a planted
 * DEST/blobs -> /elsewhere must not redirect the export. */
static int subdir_open(int dfd, const char *dir, const char *name, int *ret_fd, KilnError **err)
{
	struct stat st;
	int r = mkdirat_owned(dfd, name, 0755);

	if (r < 0)
		return kiln_error_errno(err, -r, "mkdir '%s/%s'", dir, name);
	int fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0 && fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st.st_mode))
		return kiln_error(
		    err, ELOOP, "'%s/%s' is a symlink: kiln does not write through it", dir, name);
	if (fd < 0)
		return kiln_error_errno(err, errno, "open '%s/%s'", dir, name);
	*ret_fd = fd;
	return 0;
}

/* A temp file of ours, new (O_EXCL: never an existing file or a link planted under its name),
 * given to the user. */
static int create_temp_at(int dfd, const char *name, int *ret_fd)
{
	for (int attempt = 0; attempt < 2; attempt++) {
		int fd =
		    openat(dfd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0644);
		if (fd >= 0) {
			int r = owner_give_fd(fd);
			if (r < 0) {
				close(fd);
				unlinkat(dfd, name, 0);
				return r;
			}
			*ret_fd = fd;
			return 0;
		}
		if (errno != EEXIST || unlinkat(dfd, name, 0) < 0)
			return -errno;
	}
	return -EEXIST;
}

static int dir_write_blob(Store *s, int blobs_fd, const Item *e, KilnError **err)
{
	const char *hex = digest_hex(e->digest);
	_cleanup_free_ char *tmp = xasprintf(".tmp-%s-%d", hex, (int)getpid());
	_cleanup_close_ int fd = -1;
	int r;

	r = create_temp_at(blobs_fd, tmp, &fd);
	if (r < 0)
		return kiln_error_errno(err, -r, "create blobs/sha256/%s", tmp);
	r = copy_blob(s, e, fd_write_fn, &fd, err);
	if (r >= 0 && fsync(fd) < 0)
		r = kiln_error_errno(err, errno, "fsync blob %s", e->digest);
	/* rename replaces whatever has the blob's name (a symlink too), never writes through it */
	if (r >= 0 && renameat(blobs_fd, tmp, blobs_fd, hex) < 0)
		r = kiln_error_errno(err, errno, "rename blob %s", e->digest);
	if (r < 0)
		unlinkat(blobs_fd, tmp, 0);
	return r;
}

/* Writes a document through a new temp file renamed over name (which is replaced, never
 * followed). */
static int dir_write_document(int dfd, const Item *e, KilnError **err)
{
	_cleanup_free_ char *tmp = xasprintf(".%s.tmp-%d", e->name, (int)getpid());
	_cleanup_close_ int fd = -1;
	int r = create_temp_at(dfd, tmp, &fd);

	if (r == 0)
		r = write_all(fd, e->data, (size_t)e->size);
	if (r == 0 && fsync(fd) < 0)
		r = -errno;
	if (r == 0 && renameat(dfd, tmp, dfd, e->name) < 0)
		r = -errno;
	if (r < 0) {
		unlinkat(dfd, tmp, 0);
		return kiln_error_errno(err, -r, "write '%s'", e->name);
	}
	return 0;
}

/* oci-layout and index.json, index.json last: a reader never sees an index naming a missing
 * blob. */
static int dir_write_documents(int dfd, const Items *it, KilnError **err)
{
	for (size_t pass = 0; pass < 2; pass++)
		for (size_t i = 0; i < it->n; i++) {
			const Item *e = &it->v[i];
			bool is_index = !strcmp(e->name, "index.json");
			if (!e->data || is_index != (pass == 1))
				continue;
			int r = dir_write_document(dfd, e, err);
			if (r < 0)
				return r;
		}
	return 0;
}

int export_oci_dir(Store *s, const OciDescriptor *root, const char *name, const char *dest_dir,
		   KilnError **err)
{
	_cleanup_(items_done) Items it = {0};
	_cleanup_close_ int dfd = -1, bfd = -1, blobs_fd = -1;
	_cleanup_free_ char *blobs = xasprintf("%s/blobs", dest_dir);
	int r;

	r = oci_items(s, root, name, &it, err);
	if (r < 0)
		return kiln_error_wrap(err, r, "export %s", root->digest);
	r = mkdir_p_owned(dest_dir, 0755, err);
	if (r < 0)
		return r;
	dfd = open(dest_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return kiln_error_errno(err, errno, "open '%s'", dest_dir);
	r = subdir_open(dfd, dest_dir, "blobs", &bfd, err);
	if (r >= 0)
		r = subdir_open(bfd, blobs, "sha256", &blobs_fd, err);
	for (size_t i = 0; i < it.n && r >= 0; i++)
		if (!it.v[i].dir && !it.v[i].data)
			r = dir_write_blob(s, blobs_fd, &it.v[i], err);
	if (r >= 0 && fsync(blobs_fd) < 0)
		r = kiln_error_errno(err, errno, "fsync '%s/sha256'", blobs);
	if (r >= 0)
		r = dir_write_documents(dfd, &it, err);
	if (r < 0)
		return kiln_error_wrap(err, r, "export to '%s'", dest_dir);
	return 0;
}

static json_t *blob_path_json(const char *digest)
{
	_cleanup_free_ char *p = xasprintf("blobs/sha256/%s", digest_hex(digest));

	return json_string(p);
}

int export_docker_archive(Store *s, const OciImage *img, char *const *repo_tags, const char *dest,
			  KilnError **err)
{
	_cleanup_(items_done) Items it = {0};
	_cleanup_json_ json_t *list = json_array();
	json_t *m = json_object(), *tags = json_array(), *layers = json_array();
	size_t n_tags = strv_length(repo_tags);
	OciDescriptor *entries = xcalloc(n_tags + 1, sizeof(*entries));
	size_t n_entries = 0;
	int r = 0;

	json_array_append_new(list, m);
	json_object_set_new(m, "Config", blob_path_json(img->config_digest));
	json_object_set_new(m, "RepoTags", tags);
	json_object_set_new(m, "Layers", layers);

	OciDescriptor md = {.size = img->manifest_size};
	memcpy(md.media_type, img->manifest_media_type, sizeof(md.media_type));
	memcpy(md.digest, img->manifest_digest, sizeof(md.digest));
	for (size_t i = 0; i < n_tags && r >= 0; i++) {
		Reference ref;
		r = ref_parse_name(repo_tags[i], &ref, err);
		if (r >= 0) {
			_cleanup_free_ char *familiar = ref_familiar(&ref);
			json_array_append_new(tags, json_string(familiar));
			r = named_descriptor(&md, repo_tags[i], &entries[n_entries], err);
		}
		if (r >= 0)
			n_entries++;
	}
	if (r >= 0 && n_tags == 0)
		entries[n_entries++] = md;
	if (r >= 0)
		items_add_data(&it, "index.json", index_json(entries, n_entries));
	oci_descriptors_free(entries, n_entries);
	if (r < 0)
		return r;

	items_add_layout(&it);
	r = items_add_blob(s, &it, img->manifest_digest, img->manifest_size, err);
	if (r >= 0)
		r = items_add_blob(s, &it, img->config_digest, img->config_size, err);
	for (size_t i = 0; i < img->n_layers && r >= 0; i++) {
		r = items_add_blob(s, &it, img->layers[i].digest, img->layers[i].size, err);
		json_array_append_new(layers, blob_path_json(img->layers[i].digest));
	}
	if (r < 0)
		return kiln_error_wrap(err, r, "export %s", img->manifest_digest);
	items_add_data(&it, "manifest.json", oci_json_dump(list));
	qsort(it.v, it.n, sizeof(*it.v), cmp_items);
	return write_tar_atomic(s, &it, dest, err);
}
