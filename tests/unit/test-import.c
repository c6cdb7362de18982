#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <zlib.h>

#include "common/cleanup.h"
#include "common/digest.h"
#include "common/error.h"
#include "common/fdutil.h"
#include "layers/export.h"
#include "layers/import.h"
#include "layers/oci.h"
#include "layers/store.h"
#include "tap.h"

/* ---- fixture helpers: everything is built here with libarchive, zlib and jansson ---- */

typedef struct Buf {
	char *data;
	size_t len;
	char digest[DIGEST_STRING_MAX];
} Buf;

static Buf buf_take(char *data, size_t len)
{
	Buf b = {.data = data, .len = len};

	digest_buffer(data, len, b.digest);
	return b;
}

static Buf buf_json(json_t *j)
{
	char *s = oci_json_dump(j);

	json_decref(j);
	return buf_take(s, strlen(s));
}

/* A one-file tar (a layer) in memory. */
static Buf layer_tar(const char *file, const char *content)
{
	struct archive *a = archive_write_new();
	size_t cap = 64 << 10, used = 0;
	char *mem = xcalloc(1, cap);

	archive_write_set_format_pax_restricted(a);
	archive_write_open_memory(a, mem, cap, &used);
	struct archive_entry *e = archive_entry_new();
	archive_entry_set_pathname(e, file);
	archive_entry_set_filetype(e, AE_IFREG);
	archive_entry_set_perm(e, 0644);
	archive_entry_set_size(e, (la_int64_t)strlen(content));
	archive_write_header(a, e);
	archive_write_data(a, content, strlen(content));
	archive_entry_free(e);
	archive_write_close(a);
	archive_write_free(a);
	return buf_take(mem, used);
}

static Buf gzip_buf(const Buf *in)
{
	z_stream z = {0};
	size_t cap = in->len + 1024;
	char *out = xcalloc(1, cap);

	deflateInit2(&z, 9, Z_DEFLATED, 31, 8, Z_DEFAULT_STRATEGY);
	z.next_in = (Bytef *)in->data;
	z.avail_in = (uInt)in->len;
	z.next_out = (Bytef *)out;
	z.avail_out = (uInt)cap;
	deflate(&z, Z_FINISH);
	size_t n = z.total_out;
	deflateEnd(&z);
	return buf_take(out, n);
}

static json_t *desc_json(const char *mt, const Buf *b)
{
	return json_pack("{s:s,s:s,s:I}", "mediaType", mt, "digest", b->digest, "size",
			 (json_int_t)b->len);
}

static Buf config_json(const char *arch, const char *variant, const Buf *diff_ids, size_t n)
{
	json_t *ids = json_array();

	for (size_t i = 0; i < n; i++)
		json_array_append_new(ids, json_string(diff_ids[i].digest));
	json_t *c = json_pack("{s:s,s:s}", "architecture", arch, "os", "linux");
	if (variant)
		json_object_set_new(c, "variant", json_string(variant));
	json_object_set_new(c, "rootfs", json_pack("{s:s,s:o}", "type", "layers", "diff_ids", ids));
	return buf_json(c);
}

static Buf manifest_json(const char *mt, const Buf *config, const char *config_mt,
			 const Buf *layers, size_t n, const char *layer_mt)
{
	json_t *l = json_array();

	for (size_t i = 0; i < n; i++)
		json_array_append_new(l, desc_json(layer_mt, &layers[i]));
	json_t *m = json_pack("{s:i}", "schemaVersion", 2);
	if (mt)
		json_object_set_new(m, "mediaType", json_string(mt));
	json_object_set_new(m, "config", desc_json(config_mt, config));
	json_object_set_new(m, "layers", l);
	return buf_json(m);
}

/* An image source being assembled: named files. */
typedef struct Fixture {
	char *names[64];
	Buf files[64];
	char *links[64]; /* symlink target, or hardlink target when hard[i] */
	bool hard[64];
	size_t n;
} Fixture;

static void fx_add(Fixture *f, const char *name, Buf b)
{
	f->names[f->n] = xstrdup(name);
	f->files[f->n++] = b;
}

static void fx_blob(Fixture *f, const Buf *b)
{
	char name[128];

	snprintf(name, sizeof(name), "blobs/sha256/%s", digest_hex(b->digest));
	Buf copy = *b;
	copy.data = xcalloc(1, b->len + 1);
	memcpy(copy.data, b->data, b->len);
	fx_add(f, name, copy);
}

static void fx_link(Fixture *f, const char *name, const char *target, bool hard)
{
	f->names[f->n] = xstrdup(name);
	f->links[f->n] = xstrdup(target);
	f->hard[f->n++] = hard;
}

static void fx_done(Fixture *f)
{
	for (size_t i = 0; i < f->n; i++) {
		free(f->names[i]);
		free(f->files[i].data);
		free(f->links[i]);
	}
	f->n = 0;
}

static void fx_write_tar(const Fixture *f, const char *path)
{
	struct archive *a = archive_write_new();

	archive_write_set_format_pax_restricted(a);
	archive_write_open_filename(a, path);
	for (size_t i = 0; i < f->n; i++) {
		struct archive_entry *e = archive_entry_new();
		archive_entry_set_pathname(e, f->names[i]);
		if (f->links[i] && f->hard[i]) {
			archive_entry_set_filetype(e, AE_IFREG);
			archive_entry_set_hardlink(e, f->links[i]);
		} else if (f->links[i]) {
			archive_entry_set_filetype(e, AE_IFLNK);
			archive_entry_set_symlink(e, f->links[i]);
		} else {
			archive_entry_set_filetype(e, AE_IFREG);
			archive_entry_set_size(e, (la_int64_t)f->files[i].len);
		}
		archive_entry_set_perm(e, 0644);
		archive_write_header(a, e);
		if (!f->links[i])
			archive_write_data(a, f->files[i].data, f->files[i].len);
		archive_entry_free(e);
	}
	archive_write_close(a);
	archive_write_free(a);
}

static void fx_write_dir(const Fixture *f, const char *dir)
{
	for (size_t i = 0; i < f->n; i++) {
		_cleanup_free_ char *p = xasprintf("%s/%s", dir, f->names[i]);
		_cleanup_free_ char *d = xstrdup(p);
		*strrchr(d, '/') = 0;
		mkdir_p(d, 0755, NULL);
		write_file_atomic_at(AT_FDCWD, p, f->files[i].data, f->files[i].len, 0644, NULL);
	}
}

#define LAYOUT "{\"imageLayoutVersion\":\"1.0.0\"}"

static void fx_layout(Fixture *f, json_t *index)
{
	fx_add(f, "oci-layout", buf_take(xstrdup(LAYOUT), strlen(LAYOUT)));
	fx_add(f, "index.json", buf_json(index));
}

static json_t *one_entry_index(json_t *entry)
{
	return json_pack("{s:i,s:s,s:[o]}", "schemaVersion", 2, "mediaType", MT_OCI_INDEX,
			 "manifests", entry);
}

/* A single-platform OCI image with one gzip layer; returns the manifest digest. */
typedef struct Image {
	Buf layer, gz, config, manifest;
} Image;

static void image_done(Image *im)
{
	free(im->layer.data);
	free(im->gz.data);
	free(im->config.data);
	free(im->manifest.data);
}

static Image make_image(const char *arch, const char *variant, const char *content)
{
	Image im;

	im.layer = layer_tar("hello.txt", content);
	im.gz = gzip_buf(&im.layer);
	im.config = config_json(arch, variant, &im.layer, 1);
	im.manifest =
	    manifest_json(MT_OCI_MANIFEST, &im.config, MT_OCI_CONFIG, &im.gz, 1, MT_OCI_LAYER_GZIP);
	return im;
}

static void fx_image_blobs(Fixture *f, const Image *im)
{
	fx_blob(f, &im->gz);
	fx_blob(f, &im->config);
	fx_blob(f, &im->manifest);
}

/* The simple fixture: oci-archive "simple.tar" with ref name 1.0; returns the image. */
static Image write_simple_archive(const char *path)
{
	Fixture f = {0};
	Image im = make_image("amd64", NULL, "hello\n");

	fx_image_blobs(&f, &im);
	json_t *entry = desc_json(MT_OCI_MANIFEST, &im.manifest);
	json_object_set_new(entry, "annotations",
			    json_pack("{s:s,s:s}", CONTAINERD_ANNOTATION_IMAGE_NAME,
				      "docker.io/library/app:1.0", OCI_ANNOTATION_REF_NAME, "1.0"));
	fx_layout(&f, one_entry_index(entry));
	fx_write_tar(&f, path);
	fx_done(&f);
	return im;
}

static Store *open_store(const char *root)
{
	Store *s = NULL;
	_cleanup_error_ KilnError *e = NULL;

	if (store_open(root, &s, &e) < 0)
		printf("# store_open: %s\n", e->message);
	return s;
}

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

static int import_one(Store *s, const char *spec, ImportedImage **v, size_t *n)
{
	_cleanup_error_ KilnError *e = NULL;
	int r = image_import(s, spec, v, n, &e);

	if (r < 0)
		printf("# import '%s': %s\n", spec, e->message);
	return r;
}

static OciImage *resolve(Store *s, const OciDescriptor *root, const char *platform)
{
	_cleanup_error_ KilnError *e = NULL;
	OciImage *img = NULL;
	Platform p;

	if (platform_parse(platform, &p, NULL) < 0 ||
	    oci_image_resolve(s, root, &p, NULL, &img, &e) < 0)
		printf("# resolve %s: %s\n", platform, e ? e->message : "bad platform");
	return img;
}

/* ---- tests ---- */

TEST(oci_archive_gzip_layer)
{
	_cleanup_(store_freep) Store *s = open_store("root");
	Image im = write_simple_archive("simple.tar");
	ImportedImage *v = NULL;
	size_t n = 0;

	CHECK(import_one(s, "oci-archive:simple.tar", &v, &n) == 0);
	CHECK_EQ_INT(n, 1);
	if (n == 1) {
		CHECK_EQ_STR(v[0].name, "docker.io/library/app:1.0");
		CHECK_EQ_STR(v[0].root.digest, im.manifest.digest);
		CHECK(store_has_blob(s, im.gz.digest));
		CHECK(store_has_blob(s, im.config.digest));
		_cleanup_(oci_image_freep) OciImage *img = resolve(s, &v[0].root, "linux/amd64");
		CHECK(img);
		if (img) {
			CHECK_EQ_INT(img->n_layers, 1);
			CHECK_EQ_STR(img->layers[0].media_type, MT_OCI_LAYER_GZIP);
			CHECK_EQ_STR(img->layers[0].digest, im.gz.digest);
			CHECK_EQ_STR(img->diff_ids[0], im.layer.digest);
			CHECK_EQ_STR(img->config_digest, im.config.digest);
			CHECK_EQ_STR(img->platform.arch, "amd64");
			CHECK_EQ_STR(img->manifest_media_type, MT_OCI_MANIFEST);
			CHECK(json_is_object(img->config));
		}
	}
	CHECK_EQ_INT(count_entries("root/tmp"), 0);
	imported_images_free(v, n);
	image_done(&im);
	/* importing again is a no-op that still succeeds */
	CHECK(import_one(s, "simple.tar", &v, &n) == 0);
	imported_images_free(v, n);
}

/* index.json -> index A -> index B -> {amd64, arm64, arm/v6} manifests */
static void write_nested(const char *path, Image im[3], Buf *outer)
{
	Fixture f = {0};

	im[0] = make_image("amd64", NULL, "a\n");
	im[1] = make_image("arm64", "v8", "b\n");
	im[2] = make_image("arm", "v6", "c\n");
	json_t *m = json_array();
	const char *plat[3][3] = {{"amd64", NULL}, {"arm64", "v8"}, {"arm", "v6"}};
	for (int i = 0; i < 3; i++) {
		fx_image_blobs(&f, &im[i]);
		json_t *d = desc_json(MT_OCI_MANIFEST, &im[i].manifest);
		json_t *p = json_pack("{s:s,s:s}", "architecture", plat[i][0], "os", "linux");
		if (plat[i][1])
			json_object_set_new(p, "variant", json_string(plat[i][1]));
		json_object_set_new(d, "platform", p);
		json_array_append_new(m, d);
	}
	/* a BuildKit attestation manifest must not count as a platform */
	json_t *att = desc_json(MT_OCI_MANIFEST, &im[0].manifest);
	json_object_set_new(att, "platform",
			    json_pack("{s:s,s:s}", "architecture", "unknown", "os", "unknown"));
	json_array_append_new(m, att);
	Buf inner = buf_json(json_pack("{s:i,s:s,s:o}", "schemaVersion", 2, "mediaType",
				       MT_OCI_INDEX, "manifests", m));
	*outer = buf_json(one_entry_index(desc_json(MT_OCI_INDEX, &inner)));
	fx_blob(&f, &inner);
	fx_blob(&f, outer);
	fx_layout(&f, one_entry_index(desc_json(MT_OCI_INDEX, outer)));
	fx_write_tar(&f, path);
	fx_done(&f);
	free(inner.data);
}

TEST(nested_index_resolves_platforms)
{
	_cleanup_(store_freep) Store *s = open_store("root");
	Image im[3];
	Buf outer;
	ImportedImage *v = NULL;
	size_t n = 0;

	write_nested("nested.tar", im, &outer);
	CHECK(import_one(s, "nested.tar", &v, &n) == 0);
	CHECK_EQ_INT(n, 1);
	if (n != 1)
		return;
	CHECK(v[0].name == NULL);
	CHECK_EQ_STR(v[0].root.digest, outer.digest);
	CHECK_EQ_STR(v[0].root.media_type, MT_OCI_INDEX);

	OciImage *img = resolve(s, &v[0].root, "linux/arm64");
	CHECK(img && !strcmp(img->manifest_digest, im[1].manifest.digest));
	CHECK(img && !strcmp(img->platform.arch, "arm64") && !img->platform.variant[0]);
	oci_image_free(img);
	img = resolve(s, &v[0].root, "linux/amd64");
	CHECK(img && !strcmp(img->manifest_digest, im[0].manifest.digest));
	oci_image_free(img);
	/* arm/v7 takes the v6 image */
	img = resolve(s, &v[0].root, "linux/arm/v7");
	CHECK(img && !strcmp(img->manifest_digest, im[2].manifest.digest));
	oci_image_free(img);

	Platform *ps = NULL;
	size_t np = 0;
	CHECK(oci_list_platforms(s, &v[0].root, &ps, &np, NULL) == 0);
	CHECK_EQ_INT(np, 3);
	free(ps);

	/* no match: the error lists what there is */
	_cleanup_error_ KilnError *e = NULL;
	Platform want;
	CHECK(platform_parse("linux/s390x", &want, NULL) == 0);
	CHECK_EQ_INT(oci_image_resolve(s, &v[0].root, &want, NULL, &img, &e), -ENOENT);
	CHECK(e && strstr(e->message, "linux/s390x"));
	CHECK(e && strstr(e->message, "linux/amd64, linux/arm64, linux/arm/v6"));
	if (e)
		printf("# %s\n", e->message);
	imported_images_free(v, n);
	for (int i = 0; i < 3; i++)
		image_done(&im[i]);
	free(outer.data);
}

TEST(oci_dir_import)
{
	_cleanup_(store_freep) Store *s = open_store("root");
	Fixture f = {0};
	Image im = make_image("arm64", NULL, "dir\n");
	ImportedImage *v = NULL;
	size_t n = 0;

	fx_image_blobs(&f, &im);
	json_t *entry = desc_json(MT_OCI_MANIFEST, &im.manifest);
	json_object_set_new(entry, "annotations",
			    json_pack("{s:s}", OCI_ANNOTATION_REF_NAME, "v2"));
	fx_layout(&f, one_entry_index(entry));
	fx_write_dir(&f, "layout");
	fx_done(&f);

	ImageSourceKind kind;
	_cleanup_free_ char *path = NULL;
	CHECK(image_source_parse("layout", &kind, &path, NULL) == 0);
	CHECK_EQ_INT(kind, IMAGE_SRC_OCI_DIR);
	CHECK(import_one(s, "oci:layout", &v, &n) == 0);
	CHECK_EQ_INT(n, 1);
	if (n == 1) {
		/* a bare tag in ref.name names no repository: kept apart, not a name */
		CHECK(v[0].name == NULL);
		CHECK_EQ_STR(v[0].tag_only, "v2");
		_cleanup_(oci_image_freep) OciImage *img = resolve(s, &v[0].root, "linux/arm64");
		CHECK(img != NULL);
		/* a single manifest without platform info is checked against its config */
		_cleanup_error_ KilnError *e = NULL;
		OciImage *none = NULL;
		Platform amd;
		CHECK(platform_parse("linux/amd64", &amd, NULL) == 0);
		CHECK(oci_image_resolve(s, &v[0].root, &amd, NULL, &none, &e) < 0);
		CHECK(e && strstr(e->message, "linux/arm64"));
	}
	imported_images_free(v, n);
	image_done(&im);
}

TEST(corrupted_blob_leaves_store_unchanged)
{
	_cleanup_(store_freep) Store *s = open_store("root");
	Fixture f = {0};
	Image im = make_image("amd64", NULL, "x\n");
	_cleanup_error_ KilnError *e = NULL;
	ImportedImage *v = NULL;
	size_t n = 0;

	fx_blob(&f, &im.config);
	fx_blob(&f, &im.manifest);
	fx_blob(&f, &im.gz);
	f.files[f.n - 1].data[f.files[f.n - 1].len / 2] ^= 1; /* last blob: bytes != name */
	fx_layout(&f, one_entry_index(desc_json(MT_OCI_MANIFEST, &im.manifest)));
	fx_write_tar(&f, "bad.tar");
	fx_done(&f);

	CHECK(image_import(s, "oci-archive:bad.tar", &v, &n, &e) < 0);
	CHECK(e && strstr(e->message, digest_hex(im.gz.digest)));
	if (e)
		printf("# %s\n", e->message);
	CHECK_EQ_INT(count_entries("root/blobs/sha256"), 0);
	CHECK_EQ_INT(count_entries("root/tmp"), 0);
	image_done(&im);
}

TEST(blob_name_traversal_refused)
{
	_cleanup_(store_freep) Store *s = open_store("root");
	static const char *const names[] = {"blobs/sha256/../../x", "blobs/sha256/abc",
					    "blobs/sha512/aa", "../oci-layout"};

	for (size_t i = 0; i < ELEMENTSOF(names); i++) {
		Fixture f = {0};
		_cleanup_error_ KilnError *e = NULL;
		ImportedImage *v = NULL;
		size_t n = 0;
		fx_layout(&f, json_pack("{s:i,s:[]}", "schemaVersion", 2, "manifests"));
		fx_add(&f, names[i], buf_take(xstrdup("evil"), 4));
		fx_write_tar(&f, "evil.tar");
		fx_done(&f);
		CHECK(image_import(s, "oci-archive:evil.tar", &v, &n, &e) < 0);
		CHECK(e && strstr(e->message, names[i]));
		CHECK_EQ_INT(count_entries("root/blobs/sha256"), 0);
	}
	CHECK(access("x", F_OK) < 0);
}

TEST(missing_index_and_missing_root_blob)
{
	_cleanup_(store_freep) Store *s = open_store("root");
	Image im = make_image("amd64", NULL, "x\n");
	_cleanup_error_ KilnError *e = NULL, *e2 = NULL;
	ImportedImage *v = NULL;
	size_t n = 0;
	Fixture f = {0};

	fx_add(&f, "oci-layout", buf_take(xstrdup(LAYOUT), strlen(LAYOUT)));
	fx_blob(&f, &im.gz);
	fx_write_tar(&f, "noindex.tar");
	fx_done(&f);
	CHECK(image_import(s, "oci-archive:noindex.tar", &v, &n, &e) < 0);
	CHECK(e && strstr(e->message, "index.json"));

	fx_blob(&f, &im.gz);
	fx_blob(&f, &im.config);
	fx_layout(&f, one_entry_index(desc_json(MT_OCI_MANIFEST, &im.manifest)));
	fx_write_tar(&f, "noroot.tar");
	fx_done(&f);
	CHECK(image_import(s, "oci-archive:noroot.tar", &v, &n, &e2) < 0);
	CHECK(e2 && strstr(e2->message, im.manifest.digest));
	CHECK_EQ_INT(count_entries("root/blobs/sha256"), 0);
	image_done(&im);
}

/* Imports a hand-made root manifest blob directly into the store. */
static OciDescriptor put_root(Store *s, const char *mt, const Buf *b)
{
	OciDescriptor d = {.size = (int64_t)b->len};

	snprintf(d.media_type, sizeof(d.media_type), "%s", mt);
	memcpy(d.digest, b->digest, sizeof(d.digest));
	store_put_blob(s, b->data, b->len, b->digest, NULL, NULL);
	return d;
}

TEST(manifest_whose_media_type_says_index)
{
	_cleanup_(store_freep) Store *s = open_store("root");
	Image im = make_image("amd64", NULL, "x\n");
	Buf bad =
	    manifest_json(MT_OCI_INDEX, &im.config, MT_OCI_CONFIG, &im.gz, 1, MT_OCI_LAYER_GZIP);
	_cleanup_error_ KilnError *e = NULL;
	OciImage *img = NULL;
	Platform p;

	store_put_blob(s, im.config.data, im.config.len, NULL, NULL, NULL);
	OciDescriptor root = put_root(s, MT_OCI_MANIFEST, &bad);
	CHECK(platform_parse("linux/amd64", &p, NULL) == 0);
	CHECK(oci_image_resolve(s, &root, &p, NULL, &img, &e) < 0);
	CHECK(e && strstr(e->message, "is not an image manifest"));
	CHECK(e && strstr(e->message, bad.digest));
	free(bad.data);
	image_done(&im);
}

TEST(diff_ids_count_mismatch)
{
	_cleanup_(store_freep) Store *s = open_store("root");
	Image im = make_image("amd64", NULL, "x\n");
	Buf layers[2] = {im.gz, im.gz};
	Buf m2 =
	    manifest_json(MT_OCI_MANIFEST, &im.config, MT_OCI_CONFIG, layers, 2, MT_OCI_LAYER_GZIP);
	_cleanup_error_ KilnError *e = NULL;
	OciImage *img = NULL;
	Platform p;

	store_put_blob(s, im.config.data, im.config.len, NULL, NULL, NULL);
	OciDescriptor root = put_root(s, MT_OCI_MANIFEST, &m2);
	CHECK(platform_parse("linux/amd64", &p, NULL) == 0);
	CHECK(oci_image_resolve(s, &root, &p, NULL, &img, &e) < 0);
	CHECK(e && strstr(e->message, "2 layers") && strstr(e->message, "1 rootfs.diff_ids"));
	free(m2.data);
	image_done(&im);
}

TEST(resolve_checks_sizes_and_corruption)
{
	_cleanup_(store_freep) Store *s = open_store("root");
	Image im = make_image("amd64", NULL, "x\n");
	_cleanup_error_ KilnError *e = NULL, *e2 = NULL;
	OciImage *img = NULL;
	Platform p;

	CHECK(platform_parse("linux/amd64", &p, NULL) == 0);
	store_put_blob(s, im.config.data, im.config.len, NULL, NULL, NULL);
	OciDescriptor root = put_root(s, MT_OCI_MANIFEST, &im.manifest);
	root.size++;
	CHECK(oci_image_resolve(s, &root, &p, NULL, &img, &e) < 0);
	CHECK(e && strstr(e->message, "descriptor says"));
	root.size--;
	_cleanup_free_ char *cp = xasprintf("root/blobs/sha256/%s", digest_hex(im.config.digest));
	im.config.data[3] ^= 1;
	CHECK(write_file_atomic_at(AT_FDCWD, cp, im.config.data, im.config.len, 0644, NULL) == 0);
	CHECK(oci_image_resolve(s, &root, &p, NULL, &img, &e2) < 0);
	CHECK(e2 && strstr(e2->message, "corrupt") && strstr(e2->message, im.config.digest));
	image_done(&im);
}

/* docker save, legacy layout: <id>/layer.tar, <hex>.json, manifest.json; a second identical
 * layer as a symlink or a hardlink. */
static void write_docker_legacy(const char *path, const char *link_kind, Buf *layer_out,
				Buf *config_out)
{
	Fixture f = {0};
	Buf layer = layer_tar("etc/hostname", "legacy\n");
	Buf ids[2] = {layer, layer};
	Buf config = config_json("arm", "v7", ids, 2);
	_cleanup_free_ char *config_name = xasprintf("%s.json", digest_hex(config.digest));

	fx_add(&f, "aaaa/VERSION", buf_take(xstrdup("1.0"), 3));
	fx_add(&f, "aaaa/layer.tar", layer);
	if (!strcmp(link_kind, "symlink"))
		fx_link(&f, "bbbb/layer.tar", "../aaaa/layer.tar", false);
	else if (!strcmp(link_kind, "hardlink"))
		fx_link(&f, "bbbb/layer.tar", "aaaa/layer.tar", true);
	else
		fx_link(&f, "bbbb/layer.tar", "../../etc/passwd", false);
	fx_add(&f, config_name, config);
	json_t *m = json_pack("[{s:s,s:[s],s:[s,s]}]", "Config", config_name, "RepoTags",
			      "app:legacy", "Layers", "aaaa/layer.tar", "bbbb/layer.tar");
	fx_add(&f, "manifest.json", buf_json(m));
	fx_write_tar(&f, path);
	*layer_out = layer;
	*config_out = config;
	layer_out->data = config_out->data = NULL; /* owned by the fixture */
	fx_done(&f);
}

/* An index listing `child` n times (with a platform, so nothing else is read). */
static Buf fan_out_index(const char *child_mt, const Buf *child, size_t n)
{
	json_t *m = json_array();

	for (size_t i = 0; i < n; i++) {
		json_t *d = desc_json(child_mt, child);
		json_object_set_new(d, "platform",
				    json_pack("{s:s,s:s}", "architecture", "amd64", "os", "linux"));
		json_array_append_new(m, d);
	}
	return buf_json(json_pack("{s:i,s:s,s:o}", "schemaVersion", 2, "mediaType", MT_OCI_INDEX,
				  "manifests", m));
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void put_image(Store *s, const Image *im)
{
	store_put_blob(s, im->gz.data, im->gz.len, NULL, NULL, NULL);
	store_put_blob(s, im->config.data, im->config.len, NULL, NULL, NULL);
	store_put_blob(s, im->manifest.data, im->manifest.len, NULL, NULL, NULL);
}

/* Issue 8: an index listing one child index thousands of times was read once per listing. */
TEST(index_fan_out_reads_each_digest_once)
{
	_cleanup_(store_freep) Store *s = open_store("root");
	Image im = make_image("amd64", NULL, "x\n");
	Buf child = fan_out_index(MT_OCI_MANIFEST, &im.manifest, 4000);
	Buf top = fan_out_index(MT_OCI_INDEX, &child, 4000);
	_cleanup_error_ KilnError *e = NULL;
	Platform *plats = NULL;
	size_t n = 0;

	put_image(s, &im);
	store_put_blob(s, child.data, child.len, NULL, NULL, NULL);
	OciDescriptor root = put_root(s, MT_OCI_INDEX, &top);
	double t0 = now_s();
	_cleanup_(oci_image_freep) OciImage *img = resolve(s, &root, "linux/amd64");
	CHECK(img && !strcmp(img->manifest_digest, im.manifest.digest));
	CHECK(oci_list_platforms(s, &root, &plats, &n, NULL) == 0 && n == 1);
	CHECK(export_oci_archive(s, &root, NULL, "out.tar", &e) == 0);
	double dt = now_s() - t0;
	printf("# 4000 x 4000 fan-out: resolve, list and export in %.2f s\n", dt);
	CHECK(dt < 5);
	free(plats);
	free(child.data);
	free(top.data);
	image_done(&im);
}

TEST(index_fan_out_past_the_cap_refused)
{
	_cleanup_(store_freep) Store *s = open_store("root");
	Image im = make_image("amd64", NULL, "x\n");
	Buf child = fan_out_index(MT_OCI_MANIFEST, &im.manifest, 6000);
	Buf top = fan_out_index(MT_OCI_INDEX, &child, 6000);
	Buf wide = fan_out_index(MT_OCI_MANIFEST, &im.manifest, OCI_DESCRIPTORS_MAX + 1);
	_cleanup_error_ KilnError *e = NULL, *e2 = NULL, *e3 = NULL;
	OciImage *img = NULL;
	Platform p;

	CHECK(platform_parse("linux/amd64", &p, NULL) == 0);
	put_image(s, &im);
	store_put_blob(s, child.data, child.len, NULL, NULL, NULL);
	OciDescriptor root = put_root(s, MT_OCI_INDEX, &top);
	CHECK(oci_image_resolve(s, &root, &p, NULL, &img, &e) == -E2BIG);
	CHECK(e && strstr(e->message, child.digest) && strstr(e->message, top.digest) &&
	      strstr(e->message, "more than 10000 descriptors"));
	CHECK(export_oci_archive(s, &root, NULL, "out.tar", &e2) == -E2BIG);
	CHECK(access("out.tar", F_OK) < 0);
	OciDescriptor wroot = put_root(s, MT_OCI_INDEX, &wide);
	CHECK(oci_image_resolve(s, &wroot, &p, NULL, &img, &e3) == -E2BIG);
	CHECK(e3 && strstr(e3->message, wide.digest) && strstr(e3->message, "lists 10001"));
	free(child.data);
	free(top.data);
	free(wide.data);
	image_done(&im);
}

TEST(index_nesting_depth_capped)
{
	_cleanup_(store_freep) Store *s = open_store("root");
	Image im = make_image("amd64", NULL, "x\n");
	Buf level[OCI_INDEX_DEPTH_MAX + 1];
	_cleanup_error_ KilnError *e = NULL;
	OciImage *img = NULL;
	Platform p;

	CHECK(platform_parse("linux/amd64", &p, NULL) == 0);
	put_image(s, &im);
	level[0] = fan_out_index(MT_OCI_MANIFEST, &im.manifest, 1);
	for (int i = 1; i <= OCI_INDEX_DEPTH_MAX; i++)
		level[i] = fan_out_index(MT_OCI_INDEX, &level[i - 1], 1);
	for (int i = 0; i <= OCI_INDEX_DEPTH_MAX; i++)
		store_put_blob(s, level[i].data, level[i].len, NULL, NULL, NULL);
	OciDescriptor ok = put_root(s, MT_OCI_INDEX, &level[OCI_INDEX_DEPTH_MAX - 1]);
	_cleanup_(oci_image_freep) OciImage *good = resolve(s, &ok, "linux/amd64");
	CHECK(good != NULL);
	OciDescriptor deep = put_root(s, MT_OCI_INDEX, &level[OCI_INDEX_DEPTH_MAX]);
	CHECK(oci_image_resolve(s, &deep, &p, NULL, &img, &e) == -ELOOP);
	CHECK(e && strstr(e->message, level[0].digest) && strstr(e->message, "nested too deeply"));
	for (int i = 0; i <= OCI_INDEX_DEPTH_MAX; i++)
		free(level[i].data);
	image_done(&im);
}

/* Issue 8 15c: a layer descriptor's size must be the blob's. */
TEST(layer_size_checked_against_descriptor)
{
	_cleanup_(store_freep) Store *s = open_store("root");
	Image im = make_image("amd64", NULL, "x\n");
	_cleanup_error_ KilnError *e = NULL;
	OciImage *img = NULL;
	Platform p;

	CHECK(platform_parse("linux/amd64", &p, NULL) == 0);
	Buf lied = im.gz;
	lied.len++;
	Buf bad =
	    manifest_json(MT_OCI_MANIFEST, &im.config, MT_OCI_CONFIG, &lied, 1, MT_OCI_LAYER_GZIP);
	put_image(s, &im);
	OciDescriptor root = put_root(s, MT_OCI_MANIFEST, &bad);
	CHECK(oci_image_resolve(s, &root, &p, NULL, &img, &e) == -EIO);
	_cleanup_free_ char *want = xasprintf("layer %s has %zu bytes, its descriptor says %zu",
					      im.gz.digest, im.gz.len, im.gz.len + 1);
	CHECK(e && strstr(e->message, want));
	if (e && !strstr(e->message, want))
		printf("# %s\n", e->message);
	free(bad.data);
	image_done(&im);
}

/* Issue 8 5b: a document that is not JSON is reported by position, never by its bytes. */
TEST(json_errors_quote_no_bytes)
{
	static const char passwd[] = "root:x:0:0:root:/root:/bin/bash\nsecret-line\n";
	_cleanup_error_ KilnError *e = NULL, *e2 = NULL;
	OciDescriptor *v = NULL;
	OciImage *img = NULL;
	size_t n = 0;

	CHECK(oci_index_parse(passwd, strlen(passwd), &v, &n, &e) < 0);
	CHECK(e && strstr(e->message, "not valid JSON at line 1 column"));
	CHECK(e && !strstr(e->message, "root") && !strstr(e->message, "secret"));
	CHECK(oci_manifest_parse("{\"a\": secret}", 13, &img, &e2) < 0);
	CHECK(e2 && !strstr(e2->message, "secret"));
}

/* A valid layout dir "layout" for im, plus a secret file beside it (outside the layout). */
static void write_layout_dir(const Image *im)
{
	Fixture f = {0};

	fx_image_blobs(&f, im);
	fx_layout(&f, one_entry_index(desc_json(MT_OCI_MANIFEST, &im->manifest)));
	fx_write_dir(&f, "layout");
	fx_done(&f);
	CHECK(write_file_atomic_at(AT_FDCWD, "secret", "{\"SECRET-BYTES\"\n", 16, 0600, NULL) == 0);
}

static void expect_import_error(Store *s, const char *spec, const char *want)
{
	_cleanup_error_ KilnError *e = NULL;
	ImportedImage *v = NULL;
	size_t n = 0;

	alarm(30); /* a FIFO that is waited on fails the test instead of hanging it */
	CHECK(image_import(s, spec, &v, &n, &e) < 0);
	alarm(0);
	CHECK(e && strstr(e->message, want) && !strstr(e->message, "SECRET"));
	if (e && (!strstr(e->message, want) || strstr(e->message, "SECRET")))
		printf("# %s: %s\n", spec, e->message);
}

/* Issue 8 5b: index.json, oci-layout or a blob that is a symlink leading out of the dir. */
TEST(oci_dir_symlinks_resolve_inside)
{
	_cleanup_(store_freep) Store *s = open_store("root");
	Image im = make_image("amd64", NULL, "x\n");
	ImportedImage *v = NULL;
	size_t n = 0;
	_cleanup_free_ char *cwd = getcwd(NULL, 0);
	_cleanup_free_ char *secret = xasprintf("%s/secret", cwd ? cwd : ".");
	_cleanup_free_ char *blob = xasprintf("layout/blobs/sha256/%s", digest_hex(im.gz.digest));

	write_layout_dir(&im);
	CHECK(rename("layout/index.json", "layout/index2.json") == 0);
	CHECK(symlink("index2.json", "layout/index.json") == 0);
	CHECK(import_one(s, "oci:layout", &v, &n) == 0 && n == 1); /* inside: followed */
	imported_images_free(v, n);
	CHECK(unlink("layout/index.json") == 0 && symlink(secret, "layout/index.json") == 0);
	expect_import_error(s, "oci:layout", "'layout/index.json' is a symlink to nothing inside");
	CHECK(unlink("layout/index.json") == 0 && symlink("../secret", "layout/index.json") == 0);
	expect_import_error(s, "layout", "'layout/index.json' is a symlink to nothing inside");
	CHECK(rename("layout/index2.json", "layout/index.json") == 0);
	CHECK(unlink("layout/oci-layout") == 0 &&
	      symlink("../../secret", "layout/oci-layout") == 0);
	expect_import_error(s, "oci:layout", "oci-layout");
	image_done(&im);

	_cleanup_(store_freep) Store *s2 = open_store("root2");
	im = make_image("amd64", NULL, "y\n");
	rm_rf_at(AT_FDCWD, "layout", NULL);
	write_layout_dir(&im);
	free(blob);
	blob = xasprintf("layout/blobs/sha256/%s", digest_hex(im.gz.digest));
	CHECK(rename(blob, "gz-outside") == 0 && symlink("../../../gz-outside", blob) == 0);
	expect_import_error(s2, "oci:layout", "is a symlink to nothing inside");
	CHECK_EQ_INT(count_entries("root2/blobs/sha256"), 0);
	image_done(&im);
}

/* Issue 8 9b: FIFOs in an oci: dir and as the archive path are refused, never waited on. */
TEST(fifos_refused_without_waiting)
{
	_cleanup_(store_freep) Store *s = open_store("root");
	Image im = make_image("amd64", NULL, "x\n");
	_cleanup_free_ char *blob = xasprintf("layout/blobs/sha256/%s", digest_hex(im.gz.digest));

	write_layout_dir(&im);
	CHECK(unlink(blob) == 0 && mkfifo(blob, 0644) == 0);
	expect_import_error(s, "oci:layout", "is a FIFO, not a regular file");
	CHECK(unlink("layout/index.json") == 0 && mkfifo("layout/index.json", 0644) == 0);
	expect_import_error(s, "oci:layout", "'layout/index.json' is a FIFO");
	CHECK(mkfifo("pipe.tar", 0644) == 0);
	expect_import_error(s, "oci-archive:pipe.tar", "'pipe.tar' is a FIFO");
	expect_import_error(s, "docker-archive:pipe.tar", "'pipe.tar' is a FIFO");
	expect_import_error(s, "pipe.tar", "'pipe.tar' is a FIFO");
	CHECK_EQ_INT(count_entries("root/blobs/sha256"), 0);
	image_done(&im);
}

/* Issue 8 10: index.json and manifest.json are capped; a load of many roots sharing one big
 * child index reads it once. */
TEST(import_lists_capped_and_roots_walked_as_one_graph)
{
	_cleanup_(store_freep) Store *s = open_store("root");
	Image im = make_image("amd64", NULL, "x\n");
	Buf child = fan_out_index(MT_OCI_MANIFEST, &im.manifest, 2000);
	Fixture f = {0};
	ImportedImage *v = NULL;
	size_t n = 0;

	fx_image_blobs(&f, &im);
	fx_blob(&f, &child);
	fx_write_dir(&f, "many");
	fx_done(&f);
	f = (Fixture){0};
	json_t *roots = json_array();
	for (int i = 0; i < 2000; i++) {
		/* distinct tiny roots, each an index naming the big child */
		json_t *d = desc_json(MT_OCI_INDEX, &child);
		_cleanup_free_ char *num = xasprintf("%d", i);
		json_object_set_new(d, "annotations", json_pack("{s:s}", "n", num));
		Buf r = buf_json(one_entry_index(d));
		_cleanup_free_ char *p = xasprintf("many/blobs/sha256/%s", digest_hex(r.digest));
		CHECK(write_file_atomic_at(AT_FDCWD, p, r.data, r.len, 0644, NULL) == 0);
		json_array_append_new(roots, desc_json(MT_OCI_INDEX, &r));
		free(r.data);
	}
	fx_layout(&f, json_pack("{s:i,s:s,s:o}", "schemaVersion", 2, "mediaType", MT_OCI_INDEX,
				"manifests", roots));
	fx_write_dir(&f, "many");
	fx_done(&f);
	f = (Fixture){0};
	CHECK(import_one(s, "oci:many", &v, &n) == 0 && n == 2000);
	OciDescriptor *rv = xcalloc(n + 1, sizeof(*rv));
	for (size_t i = 0; i < n; i++)
		rv[i] = v[i].root;
	OciImage **imgs = NULL;
	size_t ni = 0;
	_cleanup_error_ KilnError *e = NULL, *e2 = NULL;
	double t0 = now_s();
	CHECK(oci_images_load(s, rv, n, &imgs, &ni, &e) == 0 && ni == 1);
	if (e)
		printf("# %s\n", e->message);
	CHECK(now_s() - t0 < 5);
	oci_images_free(imgs, ni);
	/* each root five times: 10000 roots + 2000 listings of the child + its 2000 entries */
	rv = xrealloc(rv, 5 * n * sizeof(*rv));
	for (int k = 1; k < 5; k++)
		memcpy(rv + k * n, rv, n * sizeof(*rv));
	CHECK(oci_images_load(s, rv, 5 * n, &imgs, &ni, &e2) == -E2BIG);
	CHECK(e2 && strstr(e2->message, "more than 10000 descriptors"));
	free(rv);
	imported_images_free(v, n);

	fx_image_blobs(&f, &im);
	fx_add(&f, "oci-layout", buf_take(xstrdup(LAYOUT), strlen(LAYOUT)));
	fx_add(&f, "index.json",
	       fan_out_index(MT_OCI_MANIFEST, &im.manifest, OCI_DESCRIPTORS_MAX + 1));
	fx_write_tar(&f, "wide.tar");
	fx_done(&f);
	f = (Fixture){0};
	expect_import_error(s, "wide.tar", "index.json: index lists 10001 descriptors");

	json_t *layers = json_array();
	for (int i = 0; i <= OCI_DESCRIPTORS_MAX; i++)
		json_array_append_new(layers, json_string("l.tar"));
	fx_add(&f, "manifest.json",
	       buf_json(json_pack("[{s:s,s:o}]", "Config", "c.json", "Layers", layers)));
	fx_write_tar(&f, "docker-wide.tar");
	fx_done(&f);
	f = (Fixture){0};
	expect_import_error(s, "docker-archive:docker-wide.tar", "more than 10000");
	fx_add(&f, "manifest.json", buf_take(xstrdup("[{\"SECRET\"]"), 12));
	fx_write_tar(&f, "docker-bad.tar");
	fx_done(&f);
	expect_import_error(s, "docker-archive:docker-bad.tar",
			    "manifest.json: not valid JSON at line 1 column");
	free(child.data);
	image_done(&im);
}

TEST(docker_archive_legacy_symlink_and_hardlink)
{
	static const char *const kinds[] = {"symlink", "hardlink"};

	for (size_t k = 0; k < ELEMENTSOF(kinds); k++) {
		_cleanup_free_ char *root = xasprintf("root-%zu", k);
		_cleanup_(store_freep) Store *s = open_store(root);
		Buf layer, config;
		ImportedImage *v = NULL;
		size_t n = 0;
		ImageSourceKind kind;
		_cleanup_free_ char *path = NULL;

		write_docker_legacy("legacy.tar", kinds[k], &layer, &config);
		CHECK(image_source_parse("legacy.tar", &kind, &path, NULL) == 0);
		CHECK_EQ_INT(kind, IMAGE_SRC_DOCKER_ARCHIVE);
		CHECK(import_one(s, "legacy.tar", &v, &n) == 0);
		CHECK_EQ_INT(n, 1);
		if (n != 1)
			continue;
		CHECK_EQ_STR(v[0].name, "app:legacy");
		CHECK_EQ_STR(v[0].root.media_type, MT_OCI_MANIFEST);
		CHECK(v[0].root.has_platform);
		CHECK_EQ_STR(v[0].root.platform.arch, "arm");
		CHECK_EQ_STR(v[0].root.platform.variant, "v7");
		_cleanup_(oci_image_freep) OciImage *img = resolve(s, &v[0].root, "linux/arm/v7");
		CHECK(img && img->n_layers == 2);
		if (img && img->n_layers == 2) {
			CHECK_EQ_STR(img->layers[0].media_type, MT_OCI_LAYER);
			CHECK_EQ_STR(img->layers[1].digest, layer.digest);
			CHECK_EQ_STR(img->config_digest, config.digest);
			CHECK_EQ_STR(img->config_media_type, MT_OCI_CONFIG);
		}
		CHECK(store_has_blob(s, layer.digest));
		/* only the config, the layer and the generated manifest are stored */
		_cleanup_free_ char *blobs = xasprintf("%s/blobs/sha256", root);
		CHECK_EQ_INT(count_entries(blobs), 3);
		imported_images_free(v, n);
	}
}

TEST(docker_archive_escaping_symlink_refused)
{
	_cleanup_(store_freep) Store *s = open_store("root");
	_cleanup_error_ KilnError *e = NULL;
	Buf layer, config;
	ImportedImage *v = NULL;
	size_t n = 0;

	write_docker_legacy("evil.tar", "escape", &layer, &config);
	CHECK(image_import(s, "docker-archive:evil.tar", &v, &n, &e) < 0);
	CHECK(e && strstr(e->message, "escapes"));
	CHECK_EQ_INT(count_entries("root/blobs/sha256"), 0);
	CHECK_EQ_INT(count_entries("root/tmp"), 0);
}

TEST(docker_archive_new_layout)
{
	_cleanup_(store_freep) Store *s = open_store("root");
	Fixture f = {0};
	Image im = make_image("amd64", NULL, "new\n");
	ImportedImage *v = NULL;
	size_t n = 0;

	fx_blob(&f, &im.gz);
	fx_blob(&f, &im.config);
	_cleanup_free_ char *cfg = xasprintf("blobs/sha256/%s", digest_hex(im.config.digest));
	_cleanup_free_ char *lay = xasprintf("blobs/sha256/%s", digest_hex(im.gz.digest));
	fx_add(&f, "manifest.json",
	       buf_json(json_pack("[{s:s,s:[s],s:[s]}]", "Config", cfg, "RepoTags",
				  "reg.io/x/app:2", "Layers", lay)));
	fx_write_tar(&f, "new.tar");
	fx_done(&f);

	CHECK(import_one(s, "docker-archive:new.tar", &v, &n) == 0);
	CHECK_EQ_INT(n, 1);
	if (n == 1) {
		CHECK_EQ_STR(v[0].name, "reg.io/x/app:2");
		_cleanup_(oci_image_freep) OciImage *img = resolve(s, &v[0].root, "linux/amd64");
		CHECK(img && img->n_layers == 1 &&
		      !strcmp(img->layers[0].media_type, MT_OCI_LAYER_GZIP));
		CHECK(img && !strcmp(img->diff_ids[0], im.layer.digest));
	}
	imported_images_free(v, n);
	image_done(&im);
}

TEST(docker_archive_layer_not_matching_diff_id)
{
	_cleanup_(store_freep) Store *s = open_store("root");
	Fixture f = {0};
	Buf layer = layer_tar("a", "a\n"), other = layer_tar("b", "b\n");
	Buf config = config_json("amd64", NULL, &other, 1);
	_cleanup_error_ KilnError *e = NULL;
	ImportedImage *v = NULL;
	size_t n = 0;

	fx_add(&f, "l/layer.tar", layer);
	fx_add(&f, "c.json", config);
	fx_add(&f, "manifest.json",
	       buf_json(json_pack("[{s:s,s:n,s:[s]}]", "Config", "c.json", "RepoTags", "Layers",
				  "l/layer.tar")));
	fx_write_tar(&f, "d.tar");
	CHECK(image_import(s, "d.tar", &v, &n, &e) < 0);
	CHECK(e && strstr(e->message, "diff_ids"));
	CHECK_EQ_INT(count_entries("root/blobs/sha256"), 0);
	fx_done(&f);
	free(other.data);
}

TEST(source_parse)
{
	ImageSourceKind kind;
	char *path = NULL;
	_cleanup_error_ KilnError *e = NULL, *e2 = NULL, *e3 = NULL, *e4 = NULL;

	CHECK(image_source_parse("oci-archive:/x/y.tar", &kind, &path, NULL) == 0);
	CHECK_EQ_INT(kind, IMAGE_SRC_OCI_ARCHIVE);
	CHECK_EQ_STR(path, "/x/y.tar");
	free(path);
	CHECK(image_source_parse("docker-archive:d.tar", &kind, &path, NULL) == 0);
	CHECK_EQ_INT(kind, IMAGE_SRC_DOCKER_ARCHIVE);
	free(path);
	CHECK(image_source_parse("oci:dir", &kind, &path, NULL) == 0);
	CHECK_EQ_INT(kind, IMAGE_SRC_OCI_DIR);
	free(path);
	CHECK(image_source_parse("oci:", &kind, &path, &e) < 0);
	CHECK(e && e->code == KILN_EUSAGE);
	CHECK_EQ_INT(image_source_parse("missing.tar", &kind, &path, &e2), -ENOENT);
	CHECK(write_file_atomic_at(AT_FDCWD, "junk", "not a tar", 9, 0644, NULL) == 0);
	CHECK(image_source_parse("junk", &kind, &path, &e3) < 0);
	CHECK(e3 && strstr(e3->message, "junk"));
	CHECK(mkdir("emptydir", 0755) == 0);
	CHECK(image_source_parse("emptydir", &kind, &path, &e4) < 0);
	Image im = write_simple_archive("simple.tar");
	CHECK(image_source_parse("simple.tar", &kind, &path, NULL) == 0);
	CHECK_EQ_INT(kind, IMAGE_SRC_OCI_ARCHIVE);
	free(path);
	image_done(&im);
}

static bool files_equal(const char *a, const char *b)
{
	_cleanup_free_ char *da = NULL, *db = NULL;
	size_t la = 0, lb = 0;

	if (read_file_at(AT_FDCWD, a, 64 << 20, &da, &la, NULL) < 0 ||
	    read_file_at(AT_FDCWD, b, 64 << 20, &db, &lb, NULL) < 0)
		return false;
	return la == lb && memcmp(da, db, la) == 0;
}

TEST(export_oci_archive_round_trip)
{
	_cleanup_(store_freep) Store *s = open_store("root");
	_cleanup_(store_freep) Store *s2 = open_store("root2");
	Image im[3];
	Buf outer;
	ImportedImage *v = NULL, *v2 = NULL;
	size_t n = 0, n2 = 0;

	write_nested("nested.tar", im, &outer);
	CHECK(import_one(s, "nested.tar", &v, &n) == 0);
	if (n != 1)
		return;
	_cleanup_error_ KilnError *e = NULL;
	CHECK(export_oci_archive(s, &v[0].root, "app:1.0", "out1.tar", &e) == 0);
	if (e)
		printf("# %s\n", e->message);
	CHECK(export_oci_archive(s, &v[0].root, "app:1.0", "out2.tar", NULL) == 0);
	CHECK(files_equal("out1.tar", "out2.tar"));
	CHECK(import_one(s2, "out1.tar", &v2, &n2) == 0);
	CHECK_EQ_INT(n2, 1);
	if (n2 == 1) {
		CHECK_EQ_STR(v2[0].root.digest, outer.digest);
		CHECK_EQ_STR(v2[0].name, "docker.io/library/app:1.0");
		CHECK_EQ_STR(oci_descriptor_annotation(&v2[0].root, OCI_ANNOTATION_REF_NAME),
			     "1.0");
		OciImage *img = resolve(s2, &v2[0].root, "linux/arm64");
		CHECK(img && !strcmp(img->manifest_digest, im[1].manifest.digest));
		CHECK(img && store_has_blob(s2, img->layers[0].digest));
		oci_image_free(img);
	}
	/* exact tar layout: sorted, deterministic headers */
	struct archive *a = archive_read_new();
	struct archive_entry *ae;
	archive_read_support_format_tar(a);
	CHECK(archive_read_open_filename(a, "out1.tar", 10240) == ARCHIVE_OK);
	char prev[256] = "";
	int entries = 0;
	while (archive_read_next_header(a, &ae) == ARCHIVE_OK) {
		const char *name = archive_entry_pathname(ae);
		CHECK(strcmp(prev, name) < 0);
		snprintf(prev, sizeof(prev), "%s", name);
		CHECK_EQ_INT(archive_entry_mtime(ae), 0);
		CHECK_EQ_INT(archive_entry_uid(ae), 0);
		CHECK(archive_entry_uname(ae) == NULL || !*archive_entry_uname(ae));
		CHECK_EQ_INT(archive_entry_perm(ae),
			     archive_entry_filetype(ae) == AE_IFDIR ? 0755 : 0644);
		entries++;
	}
	archive_read_free(a);
	/* blobs/, blobs/sha256/, 2 indexes, 3 x (manifest, config, layer), index.json, oci-layout
	 */
	CHECK_EQ_INT(entries, 2 + 2 + 9 + 2);

	/* a source without a name: no name annotations (the store's own ref name is dropped) */
	OciDescriptor tagged = {0};
	CHECK(store_tag_set(s, "kept", &v[0].root, NULL, NULL) == 0);
	CHECK(store_tag_get(s, "kept", &tagged, NULL) == 0);
	CHECK(export_oci_archive(s, &tagged, NULL, "noname.tar", NULL) == 0);
	oci_descriptor_done(&tagged);
	imported_images_free(v2, n2);
	CHECK(import_one(s2, "noname.tar", &v2, &n2) == 0);
	CHECK(n2 == 1 && v2[0].name == NULL);
	imported_images_free(v2, n2);
	imported_images_free(v, n);
	for (int i = 0; i < 3; i++)
		image_done(&im[i]);
	free(outer.data);
}

TEST(export_refuses_missing_blob_and_bad_name)
{
	_cleanup_(store_freep) Store *s = open_store("root");
	Image im = write_simple_archive("simple.tar");
	_cleanup_error_ KilnError *e = NULL, *e2 = NULL;
	ImportedImage *v = NULL;
	size_t n = 0;

	CHECK(import_one(s, "simple.tar", &v, &n) == 0);
	if (n != 1)
		return;
	CHECK(export_oci_archive(s, &v[0].root, "Bad Name", "x.tar", &e) < 0);
	CHECK(e && e->code == KILN_EUSAGE);
	_cleanup_free_ char *lp = xasprintf("root/blobs/sha256/%s", digest_hex(im.gz.digest));
	CHECK(unlink(lp) == 0);
	CHECK(export_oci_archive(s, &v[0].root, "app", "x.tar", &e2) < 0);
	CHECK(e2 && strstr(e2->message, im.gz.digest));
	CHECK(access("x.tar", F_OK) < 0);
	CHECK_EQ_INT(count_entries("."), 2); /* root, simple.tar: no temp file left */
	imported_images_free(v, n);
	image_done(&im);
}

TEST(export_oci_dir_round_trip)
{
	_cleanup_(store_freep) Store *s = open_store("root");
	_cleanup_(store_freep) Store *s2 = open_store("root2");
	Image im = write_simple_archive("simple.tar");
	ImportedImage *v = NULL, *v2 = NULL;
	size_t n = 0, n2 = 0;

	CHECK(import_one(s, "simple.tar", &v, &n) == 0);
	if (n != 1)
		return;
	CHECK(export_oci_dir(s, &v[0].root, "reg.io:5000/team/app:3", "outdir", NULL) == 0);
	CHECK_EQ_INT(count_entries("outdir/blobs/sha256"), 3);
	CHECK(import_one(s2, "outdir", &v2, &n2) == 0);
	CHECK(n2 == 1 && !strcmp(v2[0].name, "reg.io:5000/team/app:3"));
	CHECK(n2 == 1 && !strcmp(v2[0].root.digest, im.manifest.digest));
	imported_images_free(v, n);
	imported_images_free(v2, n2);
	image_done(&im);
}

TEST(export_docker_archive_round_trip)
{
	_cleanup_(store_freep) Store *s = open_store("root");
	_cleanup_(store_freep) Store *s2 = open_store("root2");
	Image im = write_simple_archive("simple.tar");
	ImportedImage *v = NULL, *v2 = NULL;
	size_t n = 0, n2 = 0;
	char *tags[] = {"app:1.0", "app", NULL};

	CHECK(import_one(s, "simple.tar", &v, &n) == 0);
	if (n != 1)
		return;
	_cleanup_(oci_image_freep) OciImage *img = resolve(s, &v[0].root, "linux/amd64");
	if (!img)
		return;
	_cleanup_error_ KilnError *e = NULL;
	CHECK(export_docker_archive(s, img, tags, "docker.tar", &e) == 0);
	CHECK(export_docker_archive(s, img, tags, "docker2.tar", NULL) == 0);
	CHECK(files_equal("docker.tar", "docker2.tar"));
	/* read as a docker-archive explicitly (auto-detection prefers its OCI index) */
	CHECK(import_one(s2, "docker-archive:docker.tar", &v2, &n2) == 0);
	CHECK_EQ_INT(n2, 1);
	if (n2 == 1) {
		CHECK_EQ_STR(v2[0].name, "app:1.0");
		_cleanup_(oci_image_freep) OciImage *img2 = resolve(s2, &v2[0].root, "linux/amd64");
		CHECK(img2 && !strcmp(img2->config_digest, img->config_digest));
		CHECK(img2 && img2->n_layers == 1 &&
		      !strcmp(img2->layers[0].digest, img->layers[0].digest) &&
		      !strcmp(img2->layers[0].media_type, MT_OCI_LAYER_GZIP));
	}
	imported_images_free(v2, n2);
	/* and as an OCI archive: one index entry per tag, the same manifest */
	CHECK(import_one(s2, "docker.tar", &v2, &n2) == 0);
	CHECK_EQ_INT(n2, 2);
	if (n2 == 2) {
		CHECK_EQ_STR(v2[0].root.digest, im.manifest.digest);
		CHECK_EQ_STR(v2[1].name, "docker.io/library/app:latest");
	}
	imported_images_free(v2, n2);
	imported_images_free(v, n);
	image_done(&im);
}

static bool is_symlink(const char *path)
{
	struct stat st;

	return lstat(path, &st) == 0 && S_ISLNK(st.st_mode);
}

/* Issue 8 4: an OCI layout dir export never writes through a symlink in DEST; archives replace
 * a symlink at their path instead of following it. */
TEST(export_never_writes_through_symlinks)
{
	_cleanup_(store_freep) Store *s = open_store("root");
	Image im = write_simple_archive("simple.tar");
	_cleanup_error_ KilnError *e = NULL, *e2 = NULL;
	ImportedImage *v = NULL;
	size_t n = 0;

	CHECK(import_one(s, "simple.tar", &v, &n) == 0);
	if (n != 1)
		return;
	CHECK(mkdir("outside", 0755) == 0 && mkdir("d1", 0755) == 0 && mkdir("d2", 0755) == 0);
	CHECK(write_file_atomic_at(AT_FDCWD, "outside/keep", "keep\n", 5, 0644, NULL) == 0);
	CHECK(symlink("../outside", "d1/blobs") == 0);
	CHECK(export_oci_dir(s, &v[0].root, NULL, "d1", &e) == -ELOOP);
	CHECK(e && strstr(e->message, "'d1/blobs' is a symlink"));
	CHECK(mkdir("d2/blobs", 0755) == 0 && symlink("../../outside", "d2/blobs/sha256") == 0);
	CHECK(export_oci_dir(s, &v[0].root, NULL, "d2", &e2) == -ELOOP);
	CHECK(e2 && strstr(e2->message, "'d2/blobs/sha256' is a symlink"));
	CHECK_EQ_INT(count_entries("outside"), 1);

	/* a symlink at a name kiln writes is replaced, its target untouched */
	_cleanup_free_ char *blob = xasprintf("d3/blobs/sha256/%s", digest_hex(im.gz.digest));
	CHECK(mkdir("d3", 0755) == 0 && mkdir("d3/blobs", 0755) == 0);
	CHECK(mkdir("d3/blobs/sha256", 0755) == 0 && symlink("../../../outside/keep", blob) == 0);
	CHECK(symlink("../outside/keep", "d3/index.json") == 0);
	CHECK(export_oci_dir(s, &v[0].root, NULL, "d3", NULL) == 0);
	CHECK(!is_symlink(blob) && !is_symlink("d3/index.json"));
	CHECK(symlink("outside/keep", "out.tar") == 0 &&
	      symlink("outside/keep", "docker.tar") == 0);
	CHECK(export_oci_archive(s, &v[0].root, NULL, "out.tar", NULL) == 0);
	_cleanup_(oci_image_freep) OciImage *img = resolve(s, &v[0].root, "linux/amd64");
	CHECK(img && export_docker_archive(s, img, NULL, "docker.tar", NULL) == 0);
	CHECK(!is_symlink("out.tar") && !is_symlink("docker.tar"));
	_cleanup_free_ char *keep = NULL;
	CHECK(read_file_at(AT_FDCWD, "outside/keep", 100, &keep, NULL, NULL) == 0);
	CHECK(keep && !strcmp(keep, "keep\n"));
	CHECK_EQ_INT(count_entries("outside"), 1);
	imported_images_free(v, n);
	image_done(&im);
}

static int run(const char *cmd)
{
	int st = system(cmd);

	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

TEST(skopeo_reads_export)
{
	_cleanup_(store_freep) Store *s = open_store("root");
	Image im[3];
	Buf outer;
	ImportedImage *v = NULL;
	size_t n = 0;

	if (access("/usr/bin/skopeo", X_OK) < 0) {
		printf("# skopeo not installed: skipped\n");
		if (getenv("KILN_MUST_WORK"))
			tap_cur_failed = 1;
		return;
	}
	write_nested("nested.tar", im, &outer);
	CHECK(import_one(s, "nested.tar", &v, &n) == 0);
	if (n != 1)
		return;
	CHECK(export_oci_archive(s, &v[0].root, "app:1.0", "out.tar", NULL) == 0);
	CHECK_EQ_INT(run("skopeo inspect --raw oci-archive:out.tar >raw.json 2>err.txt"), 0);
	CHECK_EQ_INT(run("skopeo inspect --raw oci-archive:out.tar:1.0 >/dev/null 2>>err.txt"), 0);
	/* skopeo copy follows one index level only: copy an export of the inner index */
	_cleanup_free_ char *data = NULL;
	OciDescriptor *inner = NULL;
	size_t dlen = 0, ni = 0;
	CHECK(store_read_blob(s, outer.digest, 1 << 20, &data, &dlen, NULL) == 0);
	CHECK(data && oci_index_parse(data, dlen, &inner, &ni, NULL) == 0 && ni == 1);
	CHECK(ni == 1 && export_oci_archive(s, &inner[0], "app:2", "inner.tar", NULL) == 0);
	oci_descriptors_free(inner, ni);
	CHECK_EQ_INT(run("skopeo copy -q --override-arch arm64 oci-archive:inner.tar:2 oci:copy:x "
			 ">/dev/null 2>>err.txt"),
		     0);
	CHECK_EQ_INT(run("grep -q arm64 copy/blobs/sha256/* 2>>err.txt"), 0);
	if (access("/usr/bin/umoci", X_OK) == 0) {
		CHECK_EQ_INT(
		    run("umoci unpack --rootless --image copy:x bundle >/dev/null 2>>err.txt"), 0);
		CHECK_EQ_INT(run("grep -q b bundle/rootfs/hello.txt"), 0);
	}
	OciImage *img = resolve(s, &v[0].root, "linux/amd64");
	char *tags[] = {"app:1.0", NULL};
	CHECK(img && export_docker_archive(s, img, tags, "docker.tar", NULL) == 0);
	oci_image_free(img);
	CHECK_EQ_INT(run("skopeo inspect --raw docker-archive:docker.tar >/dev/null 2>>err.txt"),
		     0);
	CHECK_EQ_INT(run("skopeo copy -q docker-archive:docker.tar oci:copy2:y >/dev/null "
			 "2>>err.txt"),
		     0);
	_cleanup_free_ char *raw = NULL;
	size_t len = 0;
	CHECK(read_file_at(AT_FDCWD, "raw.json", 1 << 20, &raw, &len, NULL) == 0);
	char d[DIGEST_STRING_MAX];
	digest_buffer(raw ? raw : "", len, d);
	CHECK_EQ_STR(d, outer.digest);
	if (tap_cur_failed)
		run("sed 's/^/# /' err.txt");
	imported_images_free(v, n);
	for (int i = 0; i < 3; i++)
		image_done(&im[i]);
	free(outer.data);
}

/* ---- the graph walker and image resolution with a fetch callback (issue 9 item 1) ---- */

static void put_buf(Store *s, const Buf *b)
{
	CHECK(store_put_blob(s, b->data, b->len, b->digest, NULL, NULL) == 0);
}

typedef struct WalkLog {
	json_t *visits, *leaves, *problems;
	const char *skip; /* digest the visitor answers OCI_WALK_SKIP for */
} WalkLog;

static json_t *walk_entry(const OciDescriptor *d, unsigned depth)
{
	return json_sprintf("%u %s", depth, d->digest);
}

static int log_visit(const OciDescriptor *d, unsigned depth, void *userdata, KilnError **err)
{
	WalkLog *l = userdata;

	json_array_append_new(l->visits, walk_entry(d, depth));
	return l->skip && !strcmp(l->skip, d->digest) ? OCI_WALK_SKIP : 0;
}

static int log_leave(const OciDescriptor *d, unsigned depth, void *userdata, KilnError **err)
{
	json_array_append_new(((WalkLog *)userdata)->leaves, walk_entry(d, depth));
	return 0;
}

static int log_problem(const OciDescriptor *d, const KilnError *problem, void *userdata,
		       KilnError **err)
{
	json_array_append_new(((WalkLog *)userdata)->problems,
			      json_sprintf("%s: %s", d->digest, problem->message));
	return 0;
}

/* "0 sha256:..,1 sha256:.." of a log array, for comparing orders */
static char *log_line(json_t *a)
{
	char *out = xstrdup("");
	size_t i;
	json_t *v;

	json_array_foreach (a, i, v) {
		char *t = xasprintf("%s%s%s", out, i ? "," : "", json_string_value(v));
		free(out);
		out = t;
	}
	return out;
}

static char *expect_line(const char *const *items, size_t n)
{
	char *out = xstrdup("");

	for (size_t i = 0; i < n; i++) {
		char *t = xasprintf("%s%s%s", out, i ? "," : "", items[i]);
		free(out);
		out = t;
	}
	return out;
}

/* An index of an image and an artifact that refers to it (OCI 1.1 subject; an in-toto layer, the
 * empty config): the walker reads both manifests whatever their media types, visits parents
 * before children and leaves children before parents. */
TEST(walker_order_skip_subject_and_problems)
{
	_cleanup_(store_freep) Store *s = open_store("root");
	Image im = make_image("amd64", NULL, "walk\n");
	Buf empty = buf_take(xstrdup("{}"), 2);
	Buf statement = buf_take(xstrdup("{\"_type\":\"x\"}"), 13);
	json_t *am =
	    json_pack("{s:i,s:s,s:o,s:[o],s:o}", "schemaVersion", 2, "mediaType", MT_OCI_MANIFEST,
		      "config", desc_json("application/vnd.oci.empty.v1+json", &empty), "layers",
		      desc_json("application/vnd.in-toto+json", &statement), "subject",
		      desc_json(MT_OCI_MANIFEST, &im.manifest));
	Buf art = buf_json(am);
	json_t *m1 = desc_json(MT_OCI_MANIFEST, &im.manifest);
	json_object_set_new(m1, "platform",
			    json_pack("{s:s,s:s}", "architecture", "amd64", "os", "linux"));
	Buf index =
	    buf_json(json_pack("{s:i,s:s,s:[o,o]}", "schemaVersion", 2, "mediaType", MT_OCI_INDEX,
			       "manifests", m1, desc_json(MT_OCI_MANIFEST, &art)));
	const Buf *all[] = {&im.gz, &im.config, &im.manifest, &empty, &statement, &art, &index};
	for (size_t i = 0; i < ELEMENTSOF(all); i++)
		put_buf(s, all[i]);
	OciDescriptor root = {.media_type = MT_OCI_INDEX, .size = (int64_t)index.len};
	memcpy(root.digest, index.digest, DIGEST_STRING_MAX);

	WalkLog l = {json_array(), json_array(), json_array(), NULL};
	OciWalkOptions wo = {.flags = OCI_WALK_MANIFESTS,
			     .visit = log_visit,
			     .leave = log_leave,
			     .problem = log_problem,
			     .userdata = &l};
	CHECK(oci_walk(s, &root, 1, &wo, NULL) == 0);
	_cleanup_free_ char *i0 = xasprintf("0 %s", index.digest),
			    *m_1 = xasprintf("1 %s", im.manifest.digest),
			    *c2 = xasprintf("2 %s", im.config.digest),
			    *l2 = xasprintf("2 %s", im.gz.digest),
			    *a1 = xasprintf("1 %s", art.digest),
			    *e2 = xasprintf("2 %s", empty.digest),
			    *s2 = xasprintf("2 %s", statement.digest),
			    *sub2 = xasprintf("2 %s", im.manifest.digest);
	const char *const visits[] = {i0, m_1, c2, l2, a1, e2, s2};
	const char *const leaves[] = {c2, l2, m_1, e2, s2, a1, i0};
	_cleanup_free_ char *v = log_line(l.visits), *lv = log_line(l.leaves);
	_cleanup_free_ char *want_v = expect_line(visits, ELEMENTSOF(visits));
	_cleanup_free_ char *want_l = expect_line(leaves, ELEMENTSOF(leaves));
	CHECK_EQ_STR(v, want_v);
	CHECK_EQ_STR(lv, want_l);

	/* OCI_WALK_SUBJECTS: the subject is visited too (its document is not read again) */
	json_array_clear(l.visits);
	json_array_clear(l.leaves);
	wo.flags |= OCI_WALK_SUBJECTS;
	CHECK(oci_walk(s, &root, 1, &wo, NULL) == 0);
	const char *const visits_sub[] = {i0, m_1, c2, l2, a1, e2, s2, sub2};
	_cleanup_free_ char *vs = log_line(l.visits);
	_cleanup_free_ char *want_vs = expect_line(visits_sub, ELEMENTSOF(visits_sub));
	CHECK_EQ_STR(vs, want_vs);

	/* OCI_WALK_SKIP: the image manifest is not read, nor left */
	json_array_clear(l.visits);
	json_array_clear(l.leaves);
	wo.flags = OCI_WALK_MANIFESTS;
	l.skip = im.manifest.digest;
	CHECK(oci_walk(s, &root, 1, &wo, NULL) == 0);
	const char *const visits_skip[] = {i0, m_1, a1, e2, s2};
	_cleanup_free_ char *vk = log_line(l.visits), *lk = log_line(l.leaves);
	_cleanup_free_ char *want_vk = expect_line(visits_skip, ELEMENTSOF(visits_skip));
	CHECK_EQ_STR(vk, want_vk);
	CHECK(!strstr(lk, m_1));
	l.skip = NULL;

	/* a document that cannot be read: to the problem callback (the walk goes on), else the
	 * walk's error */
	_cleanup_free_ char *ap = xasprintf("root/blobs/sha256/%s", digest_hex(art.digest));
	CHECK(unlink(ap) == 0);
	json_array_clear(l.visits);
	CHECK(oci_walk(s, &root, 1, &wo, NULL) == 0);
	CHECK_EQ_INT(json_array_size(l.problems), 1);
	CHECK(strstr(json_string_value(json_array_get(l.problems, 0)), art.digest) &&
	      strstr(json_string_value(json_array_get(l.problems, 0)), "not found"));
	CHECK_EQ_INT(json_array_size(l.visits), 5); /* index, image (3), artifact */
	_cleanup_error_ KilnError *e = NULL;
	wo.problem = NULL;
	CHECK_EQ_INT(oci_walk(s, &root, 1, &wo, &e), -ENOENT);
	CHECK(e && strstr(e->message, art.digest));

	json_decref(l.visits);
	json_decref(l.leaves);
	json_decref(l.problems);
	free(empty.data);
	free(statement.data);
	free(art.data);
	free(index.data);
	image_done(&im);
}

typedef struct Remote {
	Store *from, *to;
	json_t *fetched; /* digests asked for, in order */
	int mode;	 /* 0 copy, 1 store nothing, 2 fail, 3 store other bytes */
} Remote;

/* A fetch callback that copies blobs from a second store, digest-verified on the way in. */
static int remote_fetch(void *userdata, const OciDescriptor *d, KilnError **err)
{
	Remote *rm = userdata;
	_cleanup_free_ char *data = NULL;
	size_t len = 0;

	json_array_append_new(rm->fetched, json_string(d->digest));
	if (rm->mode == 1)
		return 0;
	if (rm->mode == 2)
		return kiln_error(err, ECONNRESET, "registry went away");
	if (rm->mode == 3)
		return store_put_blob(rm->to, "other", 5, d->digest, NULL, err);
	int r = store_read_blob(rm->from, d->digest, 64 << 20, &data, &len, err);
	return r < 0 ? r : store_put_blob(rm->to, data, len, d->digest, NULL, err);
}

static bool fetched(const Remote *rm, const char *digest)
{
	size_t i;
	json_t *v;

	json_array_foreach (rm->fetched, i, v)
		if (!strcmp(json_string_value(v), digest))
			return true;
	return false;
}

/* Resolution asks the callback for what it reads and lacks: the index, the wanted platform's
 * manifest and config, nothing of the other platform; layers come with oci_image_fetch_layers;
 * a blob already there is never asked for. */
TEST(resolve_fetches_only_what_the_platform_needs)
{
	_cleanup_(store_freep) Store *remote = open_store("remote");
	_cleanup_(store_freep) Store *local = open_store("local");
	Image amd = make_image("amd64", NULL, "amd\n"), arm = make_image("arm64", NULL, "arm\n");
	json_t *ma = desc_json(MT_OCI_MANIFEST, &amd.manifest);
	json_t *mr = desc_json(MT_OCI_MANIFEST, &arm.manifest);
	json_object_set_new(ma, "platform",
			    json_pack("{s:s,s:s}", "architecture", "amd64", "os", "linux"));
	json_object_set_new(mr, "platform",
			    json_pack("{s:s,s:s}", "architecture", "arm64", "os", "linux"));
	Buf index = buf_json(json_pack("{s:i,s:s,s:[o,o]}", "schemaVersion", 2, "mediaType",
				       MT_OCI_INDEX, "manifests", ma, mr));
	const Buf *all[] = {&amd.gz,	 &amd.config,	&amd.manifest, &arm.gz,
			    &arm.config, &arm.manifest, &index};
	for (size_t i = 0; i < ELEMENTSOF(all); i++)
		put_buf(remote, all[i]);
	OciDescriptor root = {.media_type = MT_OCI_INDEX, .size = (int64_t)index.len};
	memcpy(root.digest, index.digest, DIGEST_STRING_MAX);
	Platform want;
	CHECK(platform_parse("linux/arm64", &want, NULL) == 0);
	Remote rm = {.from = remote, .to = local, .fetched = json_array()};
	OciFetcher f = {.fetch = remote_fetch, .userdata = &rm};

	/* no callback: the missing root is an error naming it, as before */
	_cleanup_error_ KilnError *e0 = NULL;
	OciImage *none = NULL;
	CHECK_EQ_INT(oci_image_resolve(local, &root, &want, NULL, &none, &e0), -ENOENT);
	CHECK(e0 && strstr(e0->message, index.digest));

	_cleanup_error_ KilnError *e = NULL;
	_cleanup_(oci_image_freep) OciImage *img = NULL;
	CHECK(oci_image_resolve(local, &root, &want, &f, &img, &e) == 0);
	if (!img) {
		printf("# %s\n", e ? e->message : "?");
		return;
	}
	CHECK_EQ_STR(img->manifest_digest, arm.manifest.digest);
	CHECK_EQ_INT(json_array_size(rm.fetched), 3);
	CHECK(fetched(&rm, index.digest) && fetched(&rm, arm.manifest.digest) &&
	      fetched(&rm, arm.config.digest));
	CHECK(!store_has_blob(local, amd.manifest.digest) &&
	      !store_has_blob(local, amd.config.digest) && !store_has_blob(local, arm.gz.digest));
	CHECK(oci_image_fetch_layers(local, img, &f, NULL) == 0);
	CHECK_EQ_INT(json_array_size(rm.fetched), 4);
	CHECK(store_has_blob(local, arm.gz.digest) && !store_has_blob(local, amd.gz.digest));
	/* everything there now: no more asking */
	_cleanup_(oci_image_freep) OciImage *again = NULL;
	CHECK(oci_image_resolve(local, &root, &want, &f, &again, NULL) == 0);
	CHECK(oci_image_fetch_layers(local, again, &f, NULL) == 0);
	CHECK_EQ_INT(json_array_size(rm.fetched), 4);

	/* a callback that stores nothing, fails, or brings other bytes: an error naming the blob,
	 * and nothing under that name in the store */
	static const char *const why[] = {"", "did not arrive", "registry went away",
					  "digest mismatch"};
	for (int mode = 1; mode <= 3; mode++) {
		_cleanup_(store_freep) Store *other = NULL;
		_cleanup_free_ char *dir = xasprintf("other%d", mode);
		_cleanup_error_ KilnError *em = NULL;
		OciImage *bad = NULL;
		other = open_store(dir);
		rm.to = other;
		rm.mode = mode;
		CHECK(oci_image_resolve(other, &root, &want, &f, &bad, &em) < 0);
		CHECK(em && strstr(em->message, index.digest) && strstr(em->message, why[mode]));
		CHECK(!store_has_blob(other, index.digest));
	}
	json_decref(rm.fetched);
	free(index.data);
	image_done(&amd);
	image_done(&arm);
}

int main(void)
{
	RUN(oci_archive_gzip_layer);
	RUN(nested_index_resolves_platforms);
	RUN(oci_dir_import);
	RUN(corrupted_blob_leaves_store_unchanged);
	RUN(blob_name_traversal_refused);
	RUN(missing_index_and_missing_root_blob);
	RUN(manifest_whose_media_type_says_index);
	RUN(diff_ids_count_mismatch);
	RUN(resolve_checks_sizes_and_corruption);
	RUN(index_fan_out_reads_each_digest_once);
	RUN(index_fan_out_past_the_cap_refused);
	RUN(index_nesting_depth_capped);
	RUN(layer_size_checked_against_descriptor);
	RUN(json_errors_quote_no_bytes);
	RUN(oci_dir_symlinks_resolve_inside);
	RUN(fifos_refused_without_waiting);
	RUN(import_lists_capped_and_roots_walked_as_one_graph);
	RUN(docker_archive_legacy_symlink_and_hardlink);
	RUN(docker_archive_escaping_symlink_refused);
	RUN(docker_archive_new_layout);
	RUN(docker_archive_layer_not_matching_diff_id);
	RUN(source_parse);
	RUN(export_oci_archive_round_trip);
	RUN(export_refuses_missing_blob_and_bad_name);
	RUN(export_oci_dir_round_trip);
	RUN(export_docker_archive_round_trip);
	RUN(export_never_writes_through_symlinks);
	RUN(skopeo_reads_export);
	RUN(walker_order_skip_subject_and_problems);
	RUN(resolve_fetches_only_what_the_platform_needs);
	return tap_done();
}
