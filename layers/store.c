#include "store.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/fdutil.h"

#define INDEX_MAX (64u << 20)
#define OCI_LAYOUT_JSON "{\"imageLayoutVersion\":\"1.0.0\"}"

struct Store {
	char *path;
	int dirfd;
	int blobsfd;   /* ROOT/blobs/sha256 */
	int tmpfd;     /* ROOT/tmp */
	int gcfd;      /* ROOT/gc.lock, shared (or exclusive after store_gc_lock_exclusive) */
	int diffidsfd; /* ROOT/diffids */
	int workfd;    /* ROOT/work/<pid>.lock while this process owns ROOT/work/<pid> */
	char *work;
	char workname[16]; /* "<pid>" */
	char *warning;	   /* store_warning() */
	bool scratch;	   /* store_set_scratch(): no fsync */
};

struct BlobWriter {
	Store *store;
	int fd;
	char tmpname[64];
	Sha256 *hash;
	int64_t size;
	int64_t flushed; /* bytes handed to writeback already (sync_file_range) */
	bool finished;
	char digest[DIGEST_STRING_MAX];
};

/* Writeback starts while a big blob is still coming in, so the fsync that publishes it waits
 * only for the last few MiB instead of the whole blob. */
#define BLOB_WRITEBACK_STEP (8 << 20)

static int open_dir_at(int dirfd, const char *name, bool create, int *ret_fd, KilnError **err)
{
	if (create && mkdirat(dirfd, name, 0700) < 0 && errno != EEXIST)
		return kiln_error_errno(err, errno, "mkdir '%s'", name);
	int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return kiln_error_errno(err, errno, "open '%s'", name);
	*ret_fd = fd;
	return 0;
}

int store_lock(Store *s, int *ret_fd, KilnError **err)
{
	_cleanup_close_ int fd =
	    openat(s->dirfd, "lock", O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);

	if (fd < 0)
		return kiln_error_errno(err, errno, "open '%s/lock'", s->path);
	while (flock(fd, LOCK_EX) < 0)
		if (errno != EINTR)
			return kiln_error_errno(err, errno, "lock '%s/lock'", s->path);
	*ret_fd = TAKE_FD(fd);
	return 0;
}

static int write_if_missing(Store *s, const char *name, const char *data, KilnError **err)
{
	if (faccessat(s->dirfd, name, F_OK, AT_SYMLINK_NOFOLLOW) == 0)
		return 0;
	if (errno != ENOENT)
		return kiln_error_errno(err, errno, "access '%s/%s'", s->path, name);
	return write_file_atomic_at(s->dirfd, name, data, strlen(data), 0600, err);
}

static int flock_retry(int fd, int op)
{
	while (flock(fd, op) < 0)
		if (errno != EINTR)
			return -errno;
	return 0;
}

/* Every process using the store holds ROOT/gc.lock shared for as long as the store is open. */
static int gc_lock_take(Store *s, KilnError **err)
{
	s->gcfd = openat(s->dirfd, "gc.lock", O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (s->gcfd < 0)
		return kiln_error_errno(err, errno, "open '%s/gc.lock'", s->path);
	int r = flock_retry(s->gcfd, LOCK_SH);
	if (r < 0)
		return kiln_error_errno(err, -r, "lock '%s/gc.lock'", s->path);
	return 0;
}

int store_gc_lock_exclusive(Store *s, KilnError **err)
{
	int r = flock_retry(s->gcfd, LOCK_EX);

	if (r < 0)
		return kiln_error_errno(err, -r, "lock '%s/gc.lock'", s->path);
	return 0;
}

/* Whether fd is still the file at dirfd/name (a lock file unlinked by its owner is not). */
static bool fd_is_at(int fd, int dirfd, const char *name)
{
	struct stat a, b;

	return fstat(fd, &a) == 0 && fstatat(dirfd, name, &b, AT_SYMLINK_NOFOLLOW) == 0 &&
	       a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

int store_work_acquire(Store *s, char **ret_path, KilnError **err)
{
	_cleanup_close_ int workdir = -1;
	char lockname[32], idname[16];
	int r;

	if (s->workfd >= 0) {
		*ret_path = xstrdup(s->work);
		return 0;
	}
	r = open_dir_at(s->dirfd, "work", true, &workdir, err);
	if (r < 0)
		return r;
	snprintf(idname, sizeof(idname), "%d", (int)getpid());
	snprintf(lockname, sizeof(lockname), "%s.lock", idname);
	for (;;) {
		_cleanup_close_ int fd =
		    openat(workdir, lockname, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
		if (fd < 0)
			return kiln_error_errno(err, errno, "open '%s/work/%s'", s->path, lockname);
		/* Blocking: another process may hold it for a moment to check that the id is
		 * dead and clean up after the earlier process of the same pid. */
		r = flock_retry(fd, LOCK_EX);
		if (r < 0)
			return kiln_error_errno(err, -r, "lock '%s/work/%s'", s->path, lockname);
		if (!fd_is_at(fd, workdir, lockname))
			continue;
		/* What a dead process of the same pid left is ours to remove. */
		r = rm_rf_at(workdir, idname, err);
		if (r < 0)
			return kiln_error_wrap(err, r, "remove '%s/work/%s'", s->path, idname);
		if (mkdirat(workdir, idname, 0700) < 0)
			return kiln_error_errno(err, errno, "mkdir '%s/work/%s'", s->path, idname);
		s->workfd = TAKE_FD(fd);
		break;
	}
	memcpy(s->workname, idname, sizeof(s->workname));
	s->work = xasprintf("%s/work/%s", s->path, idname);
	*ret_path = xstrdup(s->work);
	return 0;
}

void store_work_release(Store *s)
{
	_cleanup_close_ int workdir = -1;
	char name[32];

	if (s->workfd < 0)
		return;
	workdir = openat(s->dirfd, "work", O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
	if (workdir >= 0) {
		rm_rf_at(workdir, s->workname, NULL);
		/* Unlinked while still locked, so a checker that opened it before sees a file that
		 * is no longer at its name and leaves it alone. */
		snprintf(name, sizeof(name), "%s.lock", s->workname);
		unlinkat(workdir, name, 0);
	}
	closep(&s->workfd);
	s->workfd = -1;
	free(s->work);
	s->work = NULL;
}

int store_work_probe(Store *s, pid_t pid, int *ret_fd, KilnError **err)
{
	_cleanup_close_ int workdir = -1, fd = -1;
	char name[32];
	int r;

	snprintf(name, sizeof(name), "%d", (int)pid);
	if (s->workfd >= 0 && strcmp(name, s->workname) == 0)
		return 1;
	r = open_dir_at(s->dirfd, "work", true, &workdir, err);
	if (r < 0)
		return r;
	snprintf(name, sizeof(name), "%d.lock", (int)pid);
	/* Created when missing: holding it keeps a new process of that pid from starting to use
	 * the id while the caller removes what the dead one left. */
	fd = openat(workdir, name, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		return kiln_error_errno(err, errno, "open '%s/work/%s'", s->path, name);
	if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		if (errno == EWOULDBLOCK)
			return 1;
		return kiln_error_errno(err, errno, "lock '%s/work/%s'", s->path, name);
	}
	/* Its owner unlinked it on the way out; a new process of that pid may be starting with a
	 * new file: leave the id alone. */
	if (!fd_is_at(fd, workdir, name))
		return 1;
	*ret_fd = TAKE_FD(fd);
	return 0;
}

/* Everything inside is created 0700 (dirs) and 0600 (files): blobs and snapshots hold the
 * images' files, which other local users must not read. */
static int store_init_layout(Store *s, KilnError **err)
{
	_cleanup_close_ int blobs = -1, lock = -1, snapshots = -1;
	int r;

	r = open_dir_at(s->dirfd, "blobs", true, &blobs, err);
	if (r < 0)
		return r;
	r = open_dir_at(blobs, "sha256", true, &s->blobsfd, err);
	if (r < 0)
		return r;
	r = open_dir_at(s->dirfd, "tmp", true, &s->tmpfd, err);
	if (r < 0)
		return r;
	r = open_dir_at(s->dirfd, "diffids", true, &s->diffidsfd, err);
	if (r < 0)
		return r;
	r = open_dir_at(s->dirfd, "snapshots", true, &snapshots, err);
	if (r < 0)
		return r;
	r = store_lock(s, &lock, err);
	if (r < 0)
		return r;
	r = write_if_missing(s, "oci-layout", OCI_LAYOUT_JSON, err);
	if (r < 0)
		return r;
	return write_if_missing(
	    s, "index.json",
	    "{\"schemaVersion\":2,\"mediaType\":\"" MT_OCI_INDEX "\",\"manifests\":[]}", err);
}

/* A root that others may enter exposes whatever inside is not 0700/0600 (stores made by older
 * versions, or a root made by hand): the caller is told, kiln never chmods a dir it did not
 * make. */
static void store_check_mode(Store *s)
{
	struct stat st;

	if (fstat(s->dirfd, &st) == 0 && (st.st_mode & 077))
		s->warning = xasprintf("store root '%s' is accessible to other users (mode %04o): "
				       "they may read its images; run chmod 700 '%s'",
				       s->path, (unsigned)(st.st_mode & 07777), s->path);
}

const char *store_warning(const Store *s)
{
	return s->warning;
}

int store_open(const char *root, Store **ret, KilnError **err)
{
	_cleanup_(store_freep) Store *s = xcalloc(1, sizeof(*s));
	int r;

	s->dirfd = s->blobsfd = s->tmpfd = s->gcfd = s->workfd = s->diffidsfd = -1;
	s->path = xstrdup(root);
	r = mkdir_p(root, 0700, err);
	if (r < 0)
		return kiln_error_wrap(err, r, "open store '%s'", root);
	s->dirfd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (s->dirfd < 0)
		return kiln_error_errno(err, errno, "open store '%s'", root);
	store_check_mode(s);
	r = store_init_layout(s, err);
	if (r >= 0)
		r = gc_lock_take(s, err);
	if (r < 0)
		return kiln_error_wrap(err, r, "open store '%s'", root);
	*ret = TAKE_PTR(s);
	return 0;
}

void store_free(Store *s)
{
	if (!s)
		return;
	store_work_release(s);
	closep(&s->gcfd);
	closep(&s->dirfd);
	closep(&s->blobsfd);
	closep(&s->tmpfd);
	closep(&s->diffidsfd);
	free(s->warning);
	free(s->path);
	free(s);
}

void store_set_scratch(Store *s)
{
	s->scratch = true;
}

const char *store_path(const Store *s)
{
	return s->path;
}

int store_dirfd(const Store *s)
{
	return s->dirfd;
}

/* Blobs */

int store_blob_writer_new(Store *s, BlobWriter **ret, KilnError **err)
{
	_cleanup_(blob_writer_freep) BlobWriter *w = xcalloc(1, sizeof(*w));
	uint64_t rnd[2];
	int r;

	w->store = s;
	w->fd = -1;
	r = sha256_new(&w->hash, err);
	if (r < 0)
		return r;
	for (int tries = 0; w->fd < 0; tries++) {
		if (getrandom(rnd, sizeof(rnd), 0) != sizeof(rnd))
			return kiln_error_errno(err, errno, "getrandom");
		snprintf(w->tmpname, sizeof(w->tmpname), "blob-%016llx%016llx",
			 (unsigned long long)rnd[0], (unsigned long long)rnd[1]);
		w->fd = openat(s->tmpfd, w->tmpname,
			       O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
		if (w->fd < 0 && (errno != EEXIST || tries > 8)) {
			w->tmpname[0] = 0;
			return kiln_error_errno(err, errno, "create temp file in '%s/tmp'",
						s->path);
		}
	}
	*ret = TAKE_PTR(w);
	return 0;
}

int blob_writer_write(BlobWriter *w, const void *buf, size_t len, KilnError **err)
{
	if (w->finished)
		return kiln_error(err, EINVAL, "blob writer already finished");
	int r = write_all(w->fd, buf, len);
	if (r < 0)
		return kiln_error_errno(err, r, "write '%s/tmp/%s'", w->store->path, w->tmpname);
	sha256_update(w->hash, buf, len);
	w->size += (int64_t)len;
	if (!w->store->scratch && w->size - w->flushed >= BLOB_WRITEBACK_STEP) {
		(void)sync_file_range(w->fd, w->flushed, w->size - w->flushed,
				      SYNC_FILE_RANGE_WRITE);
		w->flushed = w->size;
	}
	return 0;
}

static void blob_writer_discard(BlobWriter *w)
{
	closep(&w->fd);
	w->fd = -1;
	if (w->tmpname[0])
		unlinkat(w->store->tmpfd, w->tmpname, 0);
	w->tmpname[0] = 0;
}

int blob_writer_finish(BlobWriter *w, const char *expected_digest,
		       char ret_digest[DIGEST_STRING_MAX], int64_t *ret_size, KilnError **err)
{
	if (!w->finished) {
		if (!w->tmpname[0])
			return kiln_error(err, EINVAL, "blob writer failed earlier");
		sha256_final(w->hash, w->digest);
		w->finished = true;
		if (!w->store->scratch && fsync(w->fd) < 0) {
			int e = errno;
			blob_writer_discard(w);
			return kiln_error_errno(err, e, "fsync blob %s", w->digest);
		}
		closep(&w->fd);
		w->fd = -1;
	}
	if (!w->tmpname[0])
		return kiln_error(err, EINVAL, "blob writer failed earlier");
	if (expected_digest && strcmp(expected_digest, w->digest) != 0) {
		blob_writer_discard(w);
		return kiln_error(err, EIO, "digest mismatch: expected %s, content is %s",
				  expected_digest, w->digest);
	}
	if (ret_digest)
		memcpy(ret_digest, w->digest, DIGEST_STRING_MAX);
	if (ret_size)
		*ret_size = w->size;
	return 0;
}

int blob_writer_open_data(BlobWriter *w, int *ret_fd, KilnError **err)
{
	if (!w->finished || !w->tmpname[0])
		return kiln_error(err, EINVAL, "blob writer not finished");
	int fd = openat(w->store->tmpfd, w->tmpname, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return kiln_error_errno(err, errno, "open '%s/tmp/%s'", w->store->path, w->tmpname);
	*ret_fd = fd;
	return 0;
}

static int blob_publish(BlobWriter *w, KilnError **err)
{
	Store *s = w->store;
	const char *hex = digest_hex(w->digest);

	/* link(2) never replaces: an existing blob (same bytes, by its name) is kept, and a
	 * concurrent writer of the same content cannot observe a half-written file. */
	if (linkat(s->tmpfd, w->tmpname, s->blobsfd, hex, 0) < 0 && errno != EEXIST) {
		int e = errno;
		if (renameat2(s->tmpfd, w->tmpname, s->blobsfd, hex, RENAME_NOREPLACE) < 0 &&
		    errno != EEXIST)
			return kiln_error_errno(err, e, "store blob %s", w->digest);
	}
	blob_writer_discard(w);
	if (!s->scratch && fsync(s->blobsfd) < 0)
		return kiln_error_errno(err, errno, "fsync '%s/blobs/sha256'", s->path);
	return 0;
}

int blob_writer_commit(BlobWriter *w, const char *expected_digest,
		       char ret_digest[DIGEST_STRING_MAX], int64_t *ret_size, KilnError **err)
{
	char digest[DIGEST_STRING_MAX];
	int64_t size;
	int r;

	r = blob_writer_finish(w, expected_digest, digest, &size, err);
	if (r < 0)
		return r;
	r = blob_publish(w, err);
	if (r < 0)
		return r;
	if (ret_digest)
		memcpy(ret_digest, digest, DIGEST_STRING_MAX);
	if (ret_size)
		*ret_size = size;
	return 0;
}

void blob_writer_free(BlobWriter *w)
{
	if (!w)
		return;
	blob_writer_discard(w);
	sha256_free(w->hash);
	free(w);
}

int store_put_blob(Store *s, const void *data, size_t len, const char *expected_digest,
		   char ret_digest[DIGEST_STRING_MAX], KilnError **err)
{
	_cleanup_(blob_writer_freep) BlobWriter *w = NULL;
	int r;

	if (expected_digest && !digest_is_valid(expected_digest))
		return kiln_error(err, EINVAL, "invalid digest '%s'", expected_digest);
	r = store_blob_writer_new(s, &w, err);
	if (r < 0)
		return r;
	r = blob_writer_write(w, data, len, err);
	if (r < 0)
		return r;
	return blob_writer_commit(w, expected_digest, ret_digest, NULL, err);
}

bool store_has_blob(Store *s, const char *digest)
{
	struct stat st;

	if (!digest_is_valid(digest))
		return false;
	return fstatat(s->blobsfd, digest_hex(digest), &st, AT_SYMLINK_NOFOLLOW) == 0 &&
	       S_ISREG(st.st_mode);
}

int store_open_blob(Store *s, const char *digest, int *ret_fd, KilnError **err)
{
	if (!digest_is_valid(digest))
		return kiln_error(err, EINVAL, "invalid digest '%s'", digest ? digest : "");
	int fd = openat(s->blobsfd, digest_hex(digest), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0) {
		if (errno == ENOENT)
			return kiln_error(err, ENOENT, "blob %s not found in store", digest);
		return kiln_error_errno(err, errno, "open blob %s", digest);
	}
	*ret_fd = fd;
	return 0;
}

int store_read_blob(Store *s, const char *digest, size_t max, char **ret_data, size_t *ret_len,
		    KilnError **err)
{
	_cleanup_close_ int fd = -1;
	_cleanup_free_ char *data = NULL;
	char actual[DIGEST_STRING_MAX];
	size_t len = 0;
	struct stat st;
	int r;

	r = store_open_blob(s, digest, &fd, err);
	if (r < 0)
		return r;
	if (fstat(fd, &st) < 0)
		return kiln_error_errno(err, errno, "stat blob %s", digest);
	if (!S_ISREG(st.st_mode))
		return kiln_error(err, EIO, "blob %s is not a regular file", digest);
	if ((uint64_t)st.st_size > max)
		return kiln_error(err, EFBIG, "blob %s is larger than %zu bytes", digest, max);
	/* read_all_fd() refuses input of exactly `max` bytes: give it one byte of room. */
	r = read_all_fd(fd, (size_t)st.st_size + 1, &data, &len, err);
	if (r < 0)
		return kiln_error_wrap(err, r, "read blob %s", digest);
	if (len > max)
		return kiln_error(err, EFBIG, "blob %s is larger than %zu bytes", digest, max);
	digest_buffer(data, len, actual);
	if (strcmp(actual, digest) != 0)
		return kiln_error(err, EIO, "blob %s is corrupt: content digest is %s", digest,
				  actual);
	*ret_data = TAKE_PTR(data);
	if (ret_len)
		*ret_len = len;
	return 0;
}

/* Verified diff_ids */

int store_diffid_record(Store *s, const char *blob_digest, const char *diff_id, KilnError **err)
{
	if (!digest_is_valid(blob_digest) || !digest_is_valid(diff_id))
		return kiln_error(err, EINVAL, "invalid digest '%s' or '%s'", blob_digest, diff_id);
	int r = write_file_atomic_at(s->diffidsfd, digest_hex(blob_digest), diff_id,
				     strlen(diff_id), 0600, err);
	if (r < 0)
		return kiln_error_wrap(err, r, "record the diff_id of layer %s", blob_digest);
	return 0;
}

bool store_diffid_verified(Store *s, const char *blob_digest, const char *diff_id)
{
	_cleanup_free_ char *data = NULL;

	if (!digest_is_valid(blob_digest) || read_file_at(s->diffidsfd, digest_hex(blob_digest),
							  DIGEST_STRING_MAX, &data, NULL, NULL) < 0)
		return false;
	return strcmp(data, diff_id) == 0;
}

size_t store_diffid_prune(Store *s)
{
	_cleanup_strv_free_ char **names = NULL;
	size_t removed = 0;

	if (dir_list_sorted(s->diffidsfd, &names, NULL) < 0)
		return 0;
	for (size_t i = 0; names[i]; i++) {
		struct stat st;
		if (strlen(names[i]) != 64 || strchr(names[i], '.'))
			continue; /* temp files: removed with the others */
		if (fstatat(s->blobsfd, names[i], &st, AT_SYMLINK_NOFOLLOW) == 0 || errno != ENOENT)
			continue;
		removed += unlinkat(s->diffidsfd, names[i], 0) == 0;
	}
	return removed;
}

/* index.json */

static int index_load(Store *s, json_t **ret, KilnError **err)
{
	_cleanup_free_ char *data = NULL;
	json_error_t jerr;
	size_t len = 0;
	int r;

	r = read_file_at(s->dirfd, "index.json", INDEX_MAX, &data, &len, err);
	if (r < 0)
		return r;
	json_t *j = json_loadb(data, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!j)
		return kiln_error(err, EIO, "parse '%s/index.json': %s (line %d)", s->path,
				  jerr.text, jerr.line);
	json_t *m = json_object_get(j, "manifests");
	if (!json_is_object(j) || !json_is_array(m)) {
		json_decref(j);
		return kiln_error(err, EIO, "'%s/index.json' is not an image index", s->path);
	}
	*ret = j;
	return 0;
}

static int index_save(Store *s, json_t *index, KilnError **err)
{
	_cleanup_free_ char *text = oci_json_dump(index);

	return write_file_atomic_at(s->dirfd, "index.json", text, strlen(text), 0600, err);
}

static const char *entry_raw_name(json_t *entry)
{
	return json_string_value(
	    json_object_get(json_object_get(entry, "annotations"), OCI_ANNOTATION_REF_NAME));
}

/* The name of an entry in canonical form, or NULL (no name, or one that is not a reference).
 * Stores of kiln < 0.2 hold "app:1.0": read as "docker.io/library/app:1.0". */
static char *entry_name(json_t *entry)
{
	const char *raw = entry_raw_name(entry);
	char *canon = NULL;

	if (raw && ref_canonical_name(raw, &canon, NULL) < 0)
		return NULL;
	return canon;
}

/* Index of the entry named `canon`, or -1. */
static ssize_t index_find(json_t *manifests, const char *canon)
{
	size_t i;
	json_t *e;

	json_array_foreach (manifests, i, e) {
		_cleanup_free_ char *n = entry_name(e);
		if (n && !strcmp(n, canon))
			return (ssize_t)i;
	}
	return -1;
}

static int cmp_entries(const void *a, const void *b)
{
	const char *x = entry_raw_name(*(json_t *const *)a) ?: "";
	const char *y = entry_raw_name(*(json_t *const *)b) ?: "";

	return strcmp(x, y);
}

/* Writes every name in canonical form (one entry per name: of two spellings of one name from an
 * older store, the one already canonical, else the first, is kept) and sorts the entries by
 * name, so index.json depends neither on tagging order nor on how names were typed. */
static void index_normalize(json_t *index)
{
	json_t *manifests = json_object_get(index, "manifests");
	size_t n = json_array_size(manifests), m = 0;
	_cleanup_free_ json_t **v = xcalloc(n + 1, sizeof(*v));
	_cleanup_json_ json_t *seen = json_object();

	for (size_t i = 0; i < n; i++) {
		json_t *e = json_array_get(manifests, i);
		_cleanup_free_ char *canon = entry_name(e);
		const char *raw = entry_raw_name(e);
		if (canon) {
			json_t *prev = json_object_get(seen, canon);
			if (prev && strcmp(raw, canon) != 0)
				continue;
			json_object_set_new(json_object_get(e, "annotations"),
					    OCI_ANNOTATION_REF_NAME, json_string(canon));
			if (prev) {
				v[json_integer_value(prev)] = e;
				continue;
			}
			json_object_set_new(seen, canon, json_integer((json_int_t)m));
		}
		v[m++] = e;
	}
	if (m > 1)
		qsort(v, m, sizeof(*v), cmp_entries);
	json_t *out = json_array();
	for (size_t i = 0; i < m; i++)
		json_array_append(out, v[i]);
	json_object_set_new(index, "manifests", out);
}

int store_tag_set(Store *s, const char *name, const OciDescriptor *desc,
		  char ret_previous[DIGEST_STRING_MAX], KilnError **err)
{
	_cleanup_free_ char *canon = NULL;
	_cleanup_close_ int lock = -1;
	_cleanup_json_ json_t *index = NULL;
	int r;

	r = ref_canonical_name(name, &canon, err);
	if (r < 0)
		return r;
	if (!digest_is_valid(desc->digest))
		return kiln_error(err, EINVAL, "invalid digest '%s'", desc->digest);
	r = store_lock(s, &lock, err);
	if (r < 0)
		return r;
	r = index_load(s, &index, err);
	if (r < 0)
		return r;

	OciDescriptor d;
	oci_descriptor_copy(&d, desc);
	json_t *ann = json_object();
	if (d.annotations) {
		json_object_update(ann, d.annotations);
		json_decref(d.annotations);
	}
	json_object_set_new(ann, OCI_ANNOTATION_REF_NAME, json_string(canon));
	d.annotations = ann;
	json_t *entry = oci_descriptor_to_json(&d);
	oci_descriptor_done(&d);

	index_normalize(index);
	json_t *manifests = json_object_get(index, "manifests");
	ssize_t at = index_find(manifests, canon);
	const char *old = at >= 0 ? json_string_value(json_object_get(
					json_array_get(manifests, (size_t)at), "digest"))
				  : NULL;
	if (ret_previous)
		snprintf(ret_previous, DIGEST_STRING_MAX, "%s", old ?: "");
	if (at >= 0)
		json_array_set_new(manifests, (size_t)at, entry);
	else
		json_array_append_new(manifests, entry);
	index_normalize(index);
	r = index_save(s, index, err);
	if (r < 0)
		return kiln_error_wrap(err, r, "tag '%s'", canon);
	return 0;
}

/* Loads index.json and finds the entry of name (parsed as an image name): -ENOENT (error filled,
 * naming it in familiar form) if absent. */
static int index_lookup(Store *s, const char *name, json_t **ret_index, size_t *ret_at,
			KilnError **err)
{
	_cleanup_json_ json_t *index = NULL;
	Reference ref;
	int r;

	r = ref_parse_name(name, &ref, err);
	if (r < 0)
		return r;
	r = index_load(s, &index, err);
	if (r < 0)
		return r;
	_cleanup_free_ char *canon = ref_string(&ref);
	ssize_t at = index_find(json_object_get(index, "manifests"), canon);
	if (at < 0) {
		_cleanup_free_ char *fam = ref_familiar(&ref);
		return kiln_error(err, ENOENT, "image '%s' not found in store", fam);
	}
	*ret_index = TAKE_PTR(index);
	*ret_at = (size_t)at;
	return 0;
}

int store_tag_get(Store *s, const char *name, OciDescriptor *ret, KilnError **err)
{
	_cleanup_json_ json_t *index = NULL;
	size_t at;
	int r;

	r = index_lookup(s, name, &index, &at, err);
	if (r < 0)
		return r;
	json_t *manifests = json_object_get(index, "manifests");
	r = oci_descriptor_from_json(json_array_get(manifests, at), ret, err);
	if (r < 0)
		return kiln_error_wrap(err, r, "'%s/index.json' entry '%s'", s->path, name);
	return 0;
}

int store_tag_remove(Store *s, const char *name, KilnError **err)
{
	_cleanup_close_ int lock = -1;
	_cleanup_json_ json_t *index = NULL;
	size_t at;
	int r;

	r = store_lock(s, &lock, err);
	if (r < 0)
		return r;
	r = index_lookup(s, name, &index, &at, err);
	if (r < 0)
		return r;
	json_array_remove(json_object_get(index, "manifests"), at);
	index_normalize(index);
	return index_save(s, index, err);
}

int store_tag_list(Store *s, char ***ret_names, OciDescriptor **ret_descs, size_t *ret_n,
		   KilnError **err)
{
	_cleanup_json_ json_t *index = NULL;
	_cleanup_strv_free_ char **names = xcalloc(1, sizeof(char *));
	OciDescriptor *descs = NULL;
	size_t n = 0, i;
	json_t *e;
	int r;

	r = index_load(s, &index, err);
	if (r < 0)
		return r;
	json_t *manifests = json_object_get(index, "manifests");
	descs = xcalloc(json_array_size(manifests) + 1, sizeof(*descs));
	json_array_foreach (manifests, i, e) {
		char *name = entry_name(e);
		if (!name)
			continue;
		r = oci_descriptor_from_json(e, &descs[n], err);
		if (r < 0) {
			oci_descriptors_free(descs, n);
			r = kiln_error_wrap(err, r, "'%s/index.json' entry '%s'", s->path, name);
			free(name);
			return r;
		}
		n++;
		strv_consume(&names, name);
	}
	*ret_names = TAKE_PTR(names);
	*ret_descs = descs;
	*ret_n = n;
	return 0;
}

/* A name whose descriptor has the digest, else the stored blob of that digest when it is an
 * index or an image manifest. */
static int image_by_digest(Store *s, const Reference *ref, OciDescriptor *ret, KilnError **err)
{
	_cleanup_strv_free_ char **names = NULL;
	OciDescriptor *descs = NULL;
	size_t n = 0;
	int r = store_tag_list(s, &names, &descs, &n, err);

	if (r < 0)
		return r;
	for (size_t i = 0; i < n && r == 0; i++)
		if (!strcmp(descs[i].digest, ref->digest)) {
			oci_descriptor_copy(ret, &descs[i]);
			r = 1;
		}
	oci_descriptors_free(descs, n);
	if (r == 1)
		return 0;
	_cleanup_free_ char *fam = ref_familiar(ref);
	if (!store_has_blob(s, ref->digest))
		return kiln_error(err, ENOENT,
				  "image '%s' not found in store: no image has digest %s", fam,
				  ref->digest);
	r = oci_descriptor_from_blob(s, ref->digest, ret, err);
	if (r < 0)
		return kiln_error_wrap(err, r, "image '%s'", fam);
	return 0;
}

int store_image_lookup(Store *s, const Reference *ref, OciDescriptor *ret, KilnError **err)
{
	if (ref->digest[0])
		return image_by_digest(s, ref, ret, err);
	_cleanup_free_ char *canon = ref_string(ref);
	return store_tag_get(s, canon, ret, err);
}
