#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "common/cleanup.h"
#include "common/digest.h"
#include "common/error.h"
#include "common/fdutil.h"
#include "layers/oci.h"
#include "layers/store.h"

#define HEX64 "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
#include "tap.h"

/* Regular entries in a directory, "." and ".." excluded; -1 if it cannot be opened. */
static int count_entries(const char *path)
{
	_cleanup_closedir_ DIR *d = opendir(path);
	struct dirent *de;
	int n = 0;

	if (!d)
		return -1;
	while ((de = readdir(d)))
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
			n++;
	return n;
}

static Store *open_store(void)
{
	Store *s = NULL;
	_cleanup_error_ KilnError *e = NULL;

	if (store_open("root", &s, &e) < 0)
		printf("# store_open: %s\n", e->message);
	return s;
}

TEST(open_creates_layout)
{
	_cleanup_(store_freep) Store *s = open_store();
	_cleanup_free_ char *layout = NULL, *index = NULL;

	CHECK(s);
	if (!s)
		return;
	CHECK_EQ_STR(store_path(s), "root");
	CHECK(store_dirfd(s) >= 0);
	CHECK(read_file_at(AT_FDCWD, "root/oci-layout", 4096, &layout, NULL, NULL) == 0);
	CHECK_EQ_STR(layout, "{\"imageLayoutVersion\":\"1.0.0\"}");
	CHECK(read_file_at(AT_FDCWD, "root/index.json", 4096, &index, NULL, NULL) == 0);
	CHECK(index && strstr(index, "\"manifests\":[]"));
	CHECK_EQ_INT(count_entries("root/blobs/sha256"), 0);
	CHECK_EQ_INT(count_entries("root/tmp"), 0);
}

TEST(put_read_round_trip)
{
	_cleanup_(store_freep) Store *s = open_store();
	_cleanup_free_ char *data = NULL;
	char d[DIGEST_STRING_MAX], want[DIGEST_STRING_MAX];
	size_t len = 0;

	digest_buffer("hello", 5, want);
	CHECK(store_put_blob(s, "hello", 5, NULL, d, NULL) == 0);
	CHECK_EQ_STR(d, want);
	CHECK(store_has_blob(s, d));
	CHECK(store_read_blob(s, d, 100, &data, &len, NULL) == 0);
	CHECK_EQ_INT(len, 5);
	CHECK_EQ_STR(data, "hello");
	/* with the expected digest given */
	CHECK(store_put_blob(s, "hello", 5, want, NULL, NULL) == 0);
	CHECK_EQ_INT(count_entries("root/blobs/sha256"), 1);
	CHECK_EQ_INT(count_entries("root/tmp"), 0);
}

TEST(streaming_writer)
{
	_cleanup_(store_freep) Store *s = open_store();
	_cleanup_(blob_writer_freep) BlobWriter *w = NULL;
	char d[DIGEST_STRING_MAX], want[DIGEST_STRING_MAX];
	int64_t size = 0;

	digest_buffer("hello world", 11, want);
	CHECK(store_blob_writer_new(s, &w, NULL) == 0);
	CHECK(blob_writer_write(w, "hello ", 6, NULL) == 0);
	CHECK(blob_writer_write(w, "world", 5, NULL) == 0);
	CHECK_EQ_INT(count_entries("root/tmp"), 1);
	CHECK(!store_has_blob(s, want));
	CHECK(blob_writer_commit(w, want, d, &size, NULL) == 0);
	CHECK_EQ_STR(d, want);
	CHECK_EQ_INT(size, 11);
	CHECK(store_has_blob(s, want));
	CHECK_EQ_INT(count_entries("root/tmp"), 0);
}

TEST(writer_free_without_commit_removes_temp)
{
	_cleanup_(store_freep) Store *s = open_store();
	BlobWriter *w = NULL;

	CHECK(store_blob_writer_new(s, &w, NULL) == 0);
	CHECK(blob_writer_write(w, "x", 1, NULL) == 0);
	CHECK_EQ_INT(count_entries("root/tmp"), 1);
	blob_writer_free(w);
	CHECK_EQ_INT(count_entries("root/tmp"), 0);
	CHECK_EQ_INT(count_entries("root/blobs/sha256"), 0);
}

TEST(digest_mismatch_leaves_nothing)
{
	_cleanup_(store_freep) Store *s = open_store();
	_cleanup_error_ KilnError *e = NULL;
	char wrong[DIGEST_STRING_MAX], actual[DIGEST_STRING_MAX];

	digest_buffer("other", 5, wrong);
	digest_buffer("hello", 5, actual);
	CHECK(store_put_blob(s, "hello", 5, wrong, NULL, &e) < 0);
	CHECK(e && strstr(e->message, wrong) && strstr(e->message, actual));
	CHECK_EQ_INT(e ? e->code : 0, EIO);
	CHECK(!store_has_blob(s, wrong));
	CHECK(!store_has_blob(s, actual));
	CHECK_EQ_INT(count_entries("root/blobs/sha256"), 0);
	CHECK_EQ_INT(count_entries("root/tmp"), 0);
}

/* A scratch store skips fsync only: blobs are checked and published as in any store. */
TEST(scratch_store_checks_digests)
{
	_cleanup_(store_freep) Store *s = open_store();
	_cleanup_error_ KilnError *e = NULL;
	char wrong[DIGEST_STRING_MAX], actual[DIGEST_STRING_MAX], got[DIGEST_STRING_MAX];

	store_set_scratch(s);
	digest_buffer("other", 5, wrong);
	digest_buffer("hello", 5, actual);
	CHECK(store_put_blob(s, "hello", 5, wrong, NULL, &e) < 0);
	CHECK_EQ_INT(e ? e->code : 0, EIO);
	CHECK_EQ_INT(count_entries("root/blobs/sha256"), 0);
	CHECK_EQ_INT(count_entries("root/tmp"), 0);
	CHECK_EQ_INT(store_put_blob(s, "hello", 5, actual, got, NULL), 0);
	CHECK_EQ_STR(got, actual);
	CHECK(store_has_blob(s, actual));
	CHECK_EQ_INT(count_entries("root/tmp"), 0);
}

TEST(invalid_digests_refused)
{
	_cleanup_(store_freep) Store *s = open_store();
	_cleanup_error_ KilnError *e = NULL, *e2 = NULL, *e3 = NULL;
	int fd = -1;
	char *data = NULL;

	CHECK(store_open_blob(s, "sha256:../../x", &fd, &e) == -EINVAL);
	CHECK(e && strstr(e->message, "sha256:../../x"));
	CHECK(fd == -1);
	CHECK(!store_has_blob(s, "sha256:../../x"));
	CHECK(!store_has_blob(s, NULL));
	CHECK(store_put_blob(s, "x", 1, "sha256:../../x", NULL, &e2) < 0);
	CHECK(store_read_blob(s, "../oci-layout", 100, &data, NULL, &e3) < 0);
	CHECK(data == NULL);
	CHECK_EQ_INT(count_entries("root/blobs/sha256"), 0);
}

TEST(missing_blob_is_enoent)
{
	_cleanup_(store_freep) Store *s = open_store();
	_cleanup_error_ KilnError *e = NULL;
	char d[DIGEST_STRING_MAX];
	int fd = -1;

	digest_buffer("nope", 4, d);
	CHECK_EQ_INT(store_open_blob(s, d, &fd, &e), -ENOENT);
	CHECK(e && strstr(e->message, d));
}

TEST(read_detects_corruption_and_size)
{
	_cleanup_(store_freep) Store *s = open_store();
	_cleanup_error_ KilnError *e = NULL, *e2 = NULL;
	char d[DIGEST_STRING_MAX];
	char *data = NULL;

	CHECK(store_put_blob(s, "hello", 5, NULL, d, NULL) == 0);
	_cleanup_free_ char *path = xasprintf("root/blobs/sha256/%s", digest_hex(d));
	CHECK(store_read_blob(s, d, 4, &data, NULL, &e2) == -EFBIG);
	chmod(path, 0644);
	CHECK(write_file_atomic_at(AT_FDCWD, path, "HELLO", 5, 0644, NULL) == 0);
	CHECK(store_read_blob(s, d, 100, &data, NULL, &e) == -EIO);
	CHECK(e && strstr(e->message, d));
	CHECK(data == NULL);
}

TEST(existing_blob_is_kept)
{
	_cleanup_(store_freep) Store *s = open_store();
	char d[DIGEST_STRING_MAX];
	struct stat a, b;

	CHECK(store_put_blob(s, "same", 4, NULL, d, NULL) == 0);
	_cleanup_free_ char *path = xasprintf("root/blobs/sha256/%s", digest_hex(d));
	CHECK(stat(path, &a) == 0);
	CHECK(store_put_blob(s, "same", 4, d, NULL, NULL) == 0);
	CHECK(stat(path, &b) == 0);
	CHECK_EQ_INT(a.st_ino, b.st_ino);
	CHECK_EQ_INT(count_entries("root/tmp"), 0);
}

TEST(concurrent_writers_same_blob)
{
	_cleanup_(store_freep) Store *s = open_store();
	static char big[1 << 20];
	char d[DIGEST_STRING_MAX];
	pid_t pids[6];

	for (size_t i = 0; i < sizeof(big); i++)
		big[i] = (char)(i * 7);
	digest_buffer(big, sizeof(big), d);
	for (size_t i = 0; i < ELEMENTSOF(pids); i++) {
		pids[i] = fork();
		if (pids[i] == 0) {
			Store *cs = NULL;
			if (store_open("root", &cs, NULL) < 0)
				_exit(2);
			for (int k = 0; k < 5; k++)
				if (store_put_blob(cs, big, sizeof(big), d, NULL, NULL) < 0)
					_exit(1);
			store_free(cs);
			_exit(0);
		}
	}
	for (size_t i = 0; i < ELEMENTSOF(pids); i++) {
		int st = -1;
		CHECK(waitpid(pids[i], &st, 0) == pids[i]);
		CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	}
	_cleanup_free_ char *data = NULL;
	size_t len = 0;
	CHECK(store_read_blob(s, d, sizeof(big), &data, &len, NULL) == 0);
	CHECK_EQ_INT(len, sizeof(big));
	CHECK_EQ_INT(count_entries("root/blobs/sha256"), 1);
	CHECK_EQ_INT(count_entries("root/tmp"), 0);
}

static OciDescriptor make_desc(const char *content)
{
	OciDescriptor d = {.media_type = MT_OCI_MANIFEST, .size = (int64_t)strlen(content)};

	digest_buffer(content, strlen(content), d.digest);
	return d;
}

/* The store's names in list order as "NAME=DIGEST-HEX-PREFIX ...", for one comparison. */
static char *names_line(Store *s)
{
	char **names = NULL, *out = xstrdup("");
	OciDescriptor *descs = NULL;
	size_t n = 0;

	CHECK(store_tag_list(s, &names, &descs, &n, NULL) == 0);
	for (size_t i = 0; i < n; i++) {
		char *t = xasprintf("%s%s%s=%.8s", out, i ? " " : "", names[i],
				    digest_hex(descs[i].digest));
		free(out);
		out = t;
	}
	strv_free(names);
	oci_descriptors_free(descs, n);
	return out;
}

/* "NAME=DIGEST-HEX-PREFIX" for expectations. */
static char *name_eq(const char *name, const OciDescriptor *d)
{
	return xasprintf("%s=%.8s", name, digest_hex(d->digest));
}

TEST(tags_set_get_list_remove)
{
	_cleanup_(store_freep) Store *s = open_store();
	OciDescriptor a = make_desc("a"), b = make_desc("b"), got = {0};
	_cleanup_error_ KilnError *e = NULL, *e2 = NULL, *e3 = NULL, *e4 = NULL;
	char prev[DIGEST_STRING_MAX] = "x";

	CHECK(store_tag_set(s, "zeta", &a, prev, NULL) == 0);
	CHECK_EQ_STR(prev, "");
	CHECK(store_tag_set(s, "app:1.0", &a, NULL, NULL) == 0);
	CHECK(store_tag_set(s, "reg.io/x/y:t", &b, NULL, NULL) == 0);
	CHECK(store_tag_set(s, "app:1.0", &b, prev, NULL) == 0); /* retag replaces */
	CHECK_EQ_STR(prev, a.digest);
	CHECK(store_tag_set(s, "Bad Name", &b, NULL, &e) < 0);
	CHECK(store_tag_set(s, "app@sha256:" HEX64, &b, NULL, &e4) < 0);
	CHECK(e4 && e4->code == KILN_EUSAGE && strstr(e4->message, "cannot hold a digest"));

	CHECK(store_tag_get(s, "app:1.0", &got, NULL) == 0);
	CHECK_EQ_STR(got.digest, b.digest);
	CHECK_EQ_STR(got.media_type, MT_OCI_MANIFEST);
	CHECK_EQ_STR(oci_descriptor_annotation(&got, OCI_ANNOTATION_REF_NAME),
		     "docker.io/library/app:1.0");
	oci_descriptor_done(&got);
	CHECK(store_tag_get(s, "zeta", &got, NULL) == 0); /* "zeta" == "zeta:latest" */
	CHECK_EQ_STR(got.digest, a.digest);
	oci_descriptor_done(&got);
	CHECK_EQ_INT(store_tag_get(s, "nope", &got, &e2), -ENOENT);
	CHECK(e2 && strstr(e2->message, "'nope:latest'"));

	/* survives reopen */
	store_free(s);
	s = open_store();
	_cleanup_free_ char *l1 = names_line(s), *x1 = name_eq("docker.io/library/app:1.0", &b),
			    *x2 = name_eq("docker.io/library/zeta:latest", &a),
			    *x3 = name_eq("reg.io/x/y:t", &b);
	_cleanup_free_ char *want1 = xasprintf("%s %s %s", x1, x2, x3);
	CHECK_EQ_STR(l1, want1);

	CHECK(store_tag_remove(s, "zeta:latest", NULL) == 0);
	CHECK_EQ_INT(store_tag_remove(s, "zeta", &e3), -ENOENT);
	_cleanup_free_ char *l2 = names_line(s), *want2 = xasprintf("%s %s", x1, x3);
	CHECK_EQ_STR(l2, want2);
}

/* docker.io/library/busybox:1.36, busybox:1.36 and index.docker.io/library/busybox:1.36 are one
 * name: set through any, found through any, listed once. */
TEST(tag_names_are_one_name_in_any_spelling)
{
	_cleanup_(store_freep) Store *s = open_store();
	OciDescriptor a = make_desc("a"), b = make_desc("b"), got = {0};
	static const char *const spellings[] = {"busybox:1.36", "docker.io/library/busybox:1.36",
						"index.docker.io/library/busybox:1.36",
						"registry-1.docker.io/busybox:1.36",
						"docker.io/busybox:1.36"};
	char prev[DIGEST_STRING_MAX];

	CHECK(store_tag_set(s, "docker.io/library/busybox:1.36", &a, NULL, NULL) == 0);
	for (size_t i = 0; i < ELEMENTSOF(spellings); i++) {
		CHECK(store_tag_get(s, spellings[i], &got, NULL) == 0);
		CHECK_EQ_STR(got.digest, a.digest);
		oci_descriptor_done(&got);
	}
	CHECK(store_tag_set(s, "index.docker.io/library/busybox:1.36", &b, prev, NULL) == 0);
	CHECK_EQ_STR(prev, a.digest);
	_cleanup_free_ char *l = names_line(s),
			    *want = name_eq("docker.io/library/busybox:1.36", &b);
	CHECK_EQ_STR(l, want);
	CHECK(store_tag_remove(s, "busybox:1.36", NULL) == 0);
	CHECK_EQ_INT(store_tag_get(s, "docker.io/library/busybox:1.36", &got, NULL), -ENOENT);
}

/* A store written when names were kept as typed ("app:1.0"): read as the same names, rewritten
 * canonical (one entry per name) by the next change; unnamed entries are kept. */
TEST(old_store_names_migrate)
{
	_cleanup_(store_freep) Store *s = open_store();
	OciDescriptor a = make_desc("a"), b = make_desc("b"), c = make_desc("c"), got = {0};
	_cleanup_free_ char *index =
	    xasprintf("{\"schemaVersion\":2,\"manifests\":["
		      "{\"mediaType\":\"%s\",\"digest\":\"%s\",\"size\":1,"
		      "\"annotations\":{\"org.opencontainers.image.ref.name\":\"app:1.0\"}},"
		      "{\"mediaType\":\"%s\",\"digest\":\"%s\",\"size\":1,"
		      "\"annotations\":{\"org.opencontainers.image.ref.name\":\"docker.io/library/"
		      "app:1.0\"}},"
		      "{\"mediaType\":\"%s\",\"digest\":\"%s\",\"size\":1},"
		      "{\"mediaType\":\"%s\",\"digest\":\"%s\",\"size\":1,"
		      "\"annotations\":{\"org.opencontainers.image.ref.name\":\"zeta\"}}]}",
		      MT_OCI_MANIFEST, a.digest, MT_OCI_MANIFEST, b.digest, MT_OCI_MANIFEST,
		      c.digest, MT_OCI_MANIFEST, c.digest);

	CHECK(write_file_atomic_at(AT_FDCWD, "root/index.json", index, strlen(index), 0600, NULL) ==
	      0);
	CHECK(store_tag_get(s, "zeta:latest", &got, NULL) == 0);
	CHECK_EQ_STR(got.digest, c.digest);
	oci_descriptor_done(&got);
	CHECK(store_tag_get(s, "docker.io/library/app:1.0", &got, NULL) == 0);
	oci_descriptor_done(&got);
	CHECK(store_tag_set(s, "other", &a, NULL, NULL) == 0);
	/* of the two spellings of app:1.0, the entry already canonical wins */
	_cleanup_free_ char *l = names_line(s), *x1 = name_eq("docker.io/library/app:1.0", &b),
			    *x2 = name_eq("docker.io/library/other:latest", &a),
			    *x3 = name_eq("docker.io/library/zeta:latest", &c);
	_cleanup_free_ char *want = xasprintf("%s %s %s", x1, x2, x3);
	CHECK_EQ_STR(l, want);
	_cleanup_free_ char *after = NULL;
	CHECK(read_file_at(AT_FDCWD, "root/index.json", 1 << 20, &after, NULL, NULL) == 0);
	CHECK(after && !strstr(after, "\"app:1.0\"") && !strstr(after, "\"zeta\""));
	CHECK(after && strstr(after, c.digest)); /* the unnamed entry stays */
}

/* FROM name@sha256:...: a name's descriptor with that digest, else a stored index or manifest. */
TEST(image_lookup_by_digest)
{
	_cleanup_(store_freep) Store *s = open_store();
	const char *manifest = "{\"schemaVersion\":2,\"mediaType\":\"" MT_OCI_MANIFEST "\","
			       "\"config\":{\"mediaType\":\"" MT_OCI_CONFIG "\",\"digest\":"
			       "\"sha256:" HEX64 "\",\"size\":2},\"layers\":[]}";
	const char *index = "{\"schemaVersion\":2,\"manifests\":[]}";
	const char *config = "{\"architecture\":\"amd64\",\"os\":\"linux\"}";
	char md[DIGEST_STRING_MAX], id[DIGEST_STRING_MAX], cd[DIGEST_STRING_MAX];
	OciDescriptor named = make_desc("named"), got = {0};
	Reference ref;
	_cleanup_error_ KilnError *e1 = NULL, *e2 = NULL, *e3 = NULL;

	CHECK(store_put_blob(s, manifest, strlen(manifest), NULL, md, NULL) == 0);
	CHECK(store_put_blob(s, index, strlen(index), NULL, id, NULL) == 0);
	CHECK(store_put_blob(s, config, strlen(config), NULL, cd, NULL) == 0);
	named.annotations = json_pack("{s:s}", "k", "v");
	CHECK(store_tag_set(s, "other/name:t", &named, NULL, NULL) == 0);
	oci_descriptor_done(&named);

	/* a name points at it: its descriptor, whatever the repository and tag */
	_cleanup_free_ char *r1 = xasprintf("busybox:wrongtag@%s", named.digest);
	CHECK(ref_parse(r1, &ref, NULL) == 0 && store_image_lookup(s, &ref, &got, NULL) == 0);
	CHECK_EQ_STR(got.digest, named.digest);
	CHECK_EQ_STR(oci_descriptor_annotation(&got, "k"), "v");
	oci_descriptor_done(&got);
	/* a stored manifest, and an index without mediaType */
	_cleanup_free_ char *r2 = xasprintf("busybox@%s", md);
	CHECK(ref_parse(r2, &ref, NULL) == 0 && store_image_lookup(s, &ref, &got, NULL) == 0);
	CHECK_EQ_STR(got.media_type, MT_OCI_MANIFEST);
	CHECK_EQ_INT(got.size, strlen(manifest));
	oci_descriptor_done(&got);
	_cleanup_free_ char *r3 = xasprintf("x@%s", id);
	CHECK(ref_parse(r3, &ref, NULL) == 0 && store_image_lookup(s, &ref, &got, NULL) == 0);
	CHECK_EQ_STR(got.media_type, MT_OCI_INDEX);
	oci_descriptor_done(&got);
	/* a config is no image; an unknown digest is ENOENT naming it */
	_cleanup_free_ char *r4 = xasprintf("x@%s", cd);
	CHECK(ref_parse(r4, &ref, NULL) == 0 && store_image_lookup(s, &ref, &got, &e1) == -EINVAL);
	CHECK(e1 && strstr(e1->message, "not an image index or manifest"));
	CHECK(ref_parse("x@sha256:" HEX64, &ref, NULL) == 0);
	CHECK_EQ_INT(store_image_lookup(s, &ref, &got, &e2), -ENOENT);
	CHECK(e2 && strstr(e2->message, "sha256:" HEX64));
	/* without a digest: the name */
	CHECK(ref_parse("other/name:t", &ref, NULL) == 0 &&
	      store_image_lookup(s, &ref, &got, NULL) == 0);
	CHECK_EQ_STR(got.digest, named.digest);
	oci_descriptor_done(&got);
	CHECK(ref_parse("other/name:u", &ref, NULL) == 0);
	CHECK_EQ_INT(store_image_lookup(s, &ref, &got, &e3), -ENOENT);
}

TEST(tag_keeps_descriptor_annotations_and_platform)
{
	_cleanup_(store_freep) Store *s = open_store();
	OciDescriptor a = make_desc("a"), got = {0};

	a.annotations = json_pack("{s:s}", "org.example", "v");
	a.has_platform = true;
	CHECK(platform_parse("linux/arm/v7", &a.platform, NULL) == 0);
	CHECK(store_tag_set(s, "app", &a, NULL, NULL) == 0);
	CHECK(store_tag_get(s, "app", &got, NULL) == 0);
	CHECK_EQ_STR(oci_descriptor_annotation(&got, "org.example"), "v");
	CHECK(got.has_platform && platform_equal(&got.platform, &a.platform));
	/* the caller's descriptor is not modified */
	CHECK(!oci_descriptor_annotation(&a, OCI_ANNOTATION_REF_NAME));
	oci_descriptor_done(&got);
	oci_descriptor_done(&a);
}

TEST(corrupt_index_is_an_error)
{
	_cleanup_(store_freep) Store *s = open_store();
	_cleanup_error_ KilnError *e = NULL;
	OciDescriptor a = make_desc("a");

	CHECK(write_file_atomic_at(AT_FDCWD, "root/index.json", "{nope", 5, 0644, NULL) == 0);
	CHECK(store_tag_set(s, "app", &a, NULL, &e) < 0);
	CHECK(e && strstr(e->message, "index.json"));
	_cleanup_free_ char *index = NULL;
	CHECK(read_file_at(AT_FDCWD, "root/index.json", 100, &index, NULL, NULL) == 0);
	CHECK_EQ_STR(index, "{nope"); /* not overwritten */
}

TEST(descriptor_json_round_trip)
{
	_cleanup_json_ json_t *j =
	    json_loads("{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\","
		       "\"digest\":\"sha256:"
		       "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\","
		       "\"size\":7,\"platform\":{\"architecture\":\"arm\",\"os\":\"linux\","
		       "\"variant\":\"v7\"},"
		       "\"annotations\":{\"k\":\"v\"}}",
		       0, NULL);
	OciDescriptor d = {0};

	CHECK(oci_descriptor_from_json(j, &d, NULL) == 0);
	_cleanup_json_ json_t *back = oci_descriptor_to_json(&d);
	_cleanup_free_ char *a = oci_json_dump(j), *b = oci_json_dump(back);
	CHECK_EQ_STR(a, b);
	oci_descriptor_done(&d);

	static const char *const bad[] = {
	    "{\"mediaType\":\"x\",\"digest\":\"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649"
	    "b934ca495991b7852b855\",\"size\":1}",
	    "{\"mediaType\":\"a/b\",\"digest\":\"sha256:../../x\",\"size\":1}",
	    "{\"mediaType\":\"a/b\",\"digest\":\"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e464"
	    "9b934ca495991b7852b855\",\"size\":-1}",
	    "{\"mediaType\":\"a/b\",\"digest\":\"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e464"
	    "9b934ca495991b7852b855\",\"size\":1,\"annotations\":{\"k\":1}}",
	    "{\"mediaType\":\"a/b\",\"digest\":\"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e464"
	    "9b934ca495991b7852b855\",\"size\":1,\"platform\":{\"os\":\"linux\"}}",
	    "[]",
	};
	for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
		_cleanup_json_ json_t *bj = json_loads(bad[i], 0, NULL);
		_cleanup_error_ KilnError *e = NULL;
		CHECK(bj != NULL);
		CHECK(oci_descriptor_from_json(bj, &d, &e) < 0);
	}
}

/* The mode bits of path, or -1. */
static int mode_of(const char *path)
{
	struct stat st;

	return lstat(path, &st) < 0 ? -1 : (int)(st.st_mode & 07777);
}

/* Other local users must not read the images: 0700 dirs, 0600 files, whatever the umask. */
TEST(layout_is_private)
{
	static const char *const dirs[] = {"root",     "root/blobs",	 "root/blobs/sha256",
					   "root/tmp", "root/snapshots", "root/diffids",
					   "root/work"};
	static const char *const files[] = {"root/oci-layout", "root/index.json", "root/lock",
					    "root/gc.lock"};
	mode_t old = umask(0);
	_cleanup_(store_freep) Store *s = open_store();
	_cleanup_free_ char *work = NULL, *blob = NULL;
	char d[DIGEST_STRING_MAX];
	int fd = -1;

	umask(old);
	if (!s)
		return;
	CHECK(store_put_blob(s, "x", 1, NULL, d, NULL) == 0);
	CHECK(store_diffid_record(s, d, d, NULL) == 0);
	CHECK(store_work_acquire(s, &work, NULL) == 0);
	CHECK(store_lock(s, &fd, NULL) == 0);
	close(fd);
	for (size_t i = 0; i < ELEMENTSOF(dirs); i++)
		CHECK_EQ_INT(mode_of(dirs[i]), 0700);
	for (size_t i = 0; i < ELEMENTSOF(files); i++)
		CHECK_EQ_INT(mode_of(files[i]), 0600);
	blob = xasprintf("root/blobs/sha256/%s", digest_hex(d));
	CHECK_EQ_INT(mode_of(blob), 0600);
	free(blob);
	blob = xasprintf("root/diffids/%s", digest_hex(d));
	CHECK_EQ_INT(mode_of(blob), 0600);
	CHECK_EQ_INT(mode_of(work), 0700);
	CHECK(store_warning(s) == NULL);
}

TEST(warning_for_a_root_others_can_enter)
{
	Store *s = NULL;

	CHECK(mkdir("open", 0755) == 0 && chmod("open", 0755) == 0);
	CHECK(store_open("open", &s, NULL) == 0);
	CHECK(s && store_warning(s) && strstr(store_warning(s), "store root 'open'") &&
	      strstr(store_warning(s), "mode 0755"));
	/* kiln never widens or narrows a root it did not make */
	CHECK_EQ_INT(mode_of("open"), 0755);
	store_free(s);
	CHECK(chmod("open", 0700) == 0);
	CHECK(store_open("open", &s, NULL) == 0);
	CHECK(s && store_warning(s) == NULL);
	store_free(s);
}

TEST(diffid_records)
{
	_cleanup_(store_freep) Store *s = open_store();
	char blob[DIGEST_STRING_MAX], other[DIGEST_STRING_MAX], diff[DIGEST_STRING_MAX];
	_cleanup_error_ KilnError *e = NULL;

	if (!s)
		return;
	CHECK(store_put_blob(s, "layer", 5, NULL, blob, NULL) == 0);
	digest_buffer("tar", 3, diff);
	digest_buffer("other", 5, other);
	CHECK(!store_diffid_verified(s, blob, diff));
	CHECK(store_diffid_record(s, blob, diff, NULL) == 0);
	CHECK(store_diffid_verified(s, blob, diff));
	/* only that blob, only that diff_id */
	CHECK(!store_diffid_verified(s, blob, other));
	CHECK(!store_diffid_verified(s, other, diff));
	CHECK(store_diffid_record(s, "sha256:../../x", diff, &e) == -EINVAL);
	CHECK(!store_diffid_verified(s, "sha256:../../x", diff));
	/* a record outlives nothing: gone with its blob */
	CHECK(store_diffid_record(s, other, diff, NULL) == 0);
	CHECK_EQ_INT(store_diffid_prune(s), 1);
	CHECK(store_diffid_verified(s, blob, diff));
	CHECK(!store_diffid_verified(s, other, diff));
}

int main(void)
{
	RUN(open_creates_layout);
	RUN(put_read_round_trip);
	RUN(streaming_writer);
	RUN(writer_free_without_commit_removes_temp);
	RUN(digest_mismatch_leaves_nothing);
	RUN(scratch_store_checks_digests);
	RUN(invalid_digests_refused);
	RUN(missing_blob_is_enoent);
	RUN(read_detects_corruption_and_size);
	RUN(existing_blob_is_kept);
	RUN(concurrent_writers_same_blob);
	RUN(tags_set_get_list_remove);
	RUN(tag_names_are_one_name_in_any_spelling);
	RUN(old_store_names_migrate);
	RUN(image_lookup_by_digest);
	RUN(tag_keeps_descriptor_annotations_and_platform);
	RUN(corrupt_index_is_an_error);
	RUN(descriptor_json_round_trip);
	RUN(layout_is_private);
	RUN(warning_for_a_root_others_can_enter);
	RUN(diffid_records);
	return tap_done();
}
