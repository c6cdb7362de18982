#include "oci.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "common/cleanup.h"
#include "common/fdutil.h"
#include "layers/store.h"

/* Distinct manifests of one root we look at; more is a hostile index. */
#define CANDIDATES_MAX 1024

void oci_descriptor_done(OciDescriptor *d)
{
	if (!d)
		return;
	if (d->annotations)
		json_decref(d->annotations);
	d->annotations = NULL;
}

void oci_descriptor_copy(OciDescriptor *dst, const OciDescriptor *src)
{
	*dst = *src;
	if (dst->annotations)
		json_incref(dst->annotations);
}

void oci_descriptors_free(OciDescriptor *v, size_t n)
{
	if (!v)
		return;
	for (size_t i = 0; i < n; i++)
		oci_descriptor_done(&v[i]);
	free(v);
}

/* RFC 6838 restricted-name: [A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126} */
static bool restricted_name_valid(const char *p, size_t n)
{
	if (n == 0 || n > 127)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = p[i];
		bool alnum =
		    (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
		if (!alnum && (i == 0 || !strchr("!#$&^_.+-", c)))
			return false;
	}
	return true;
}

static bool media_type_valid(const char *mt)
{
	const char *slash = strchr(mt, '/');

	if (!slash || strlen(mt) >= sizeof(((OciDescriptor *)0)->media_type))
		return false;
	return restricted_name_valid(mt, (size_t)(slash - mt)) &&
	       restricted_name_valid(slash + 1, strlen(slash + 1));
}

bool oci_media_type_is_index(const char *mt)
{
	return !strcmp(mt, MT_OCI_INDEX) || !strcmp(mt, MT_DOCKER_LIST);
}

bool oci_media_type_is_manifest(const char *mt)
{
	return !strcmp(mt, MT_OCI_MANIFEST) || !strcmp(mt, MT_DOCKER_MANIFEST);
}

bool oci_media_type_is_layer(const char *mt)
{
	return !strncmp(mt, "application/vnd.oci.image.layer.", 32) ||
	       !strncmp(mt, "application/vnd.docker.image.rootfs.", 36);
}

const char *oci_descriptor_annotation(const OciDescriptor *d, const char *key)
{
	return d->annotations ? json_string_value(json_object_get(d->annotations, key)) : NULL;
}

static int platform_from_json(json_t *p, Platform *ret, KilnError **err)
{
	json_t *os = json_object_get(p, "os"), *arch = json_object_get(p, "architecture");
	json_t *variant = json_object_get(p, "variant");

	if (!json_is_object(p))
		return kiln_error(err, EINVAL, "platform is not an object");
	if (!json_is_string(os) || !json_is_string(arch) || (variant && !json_is_string(variant)))
		return kiln_error(err, EINVAL, "platform needs string os and architecture");
	return platform_from_parts(json_string_value(os), json_string_value(arch),
				   json_string_value(variant), ret, err);
}

int oci_descriptor_from_json(json_t *j, OciDescriptor *ret, KilnError **err)
{
	OciDescriptor d = {0};

	if (!json_is_object(j))
		return kiln_error(err, EINVAL, "descriptor is not an object");
	const char *mt = json_string_value(json_object_get(j, "mediaType"));
	const char *digest = json_string_value(json_object_get(j, "digest"));
	json_t *size = json_object_get(j, "size");
	json_t *platform = json_object_get(j, "platform");
	json_t *ann = json_object_get(j, "annotations");

	if (!mt || !media_type_valid(mt))
		return kiln_error(err, EINVAL, "descriptor has an invalid mediaType '%s'",
				  mt ? mt : "");
	if (!digest_is_valid(digest))
		return kiln_error(err, EINVAL, "descriptor has an invalid digest '%s'",
				  digest ? digest : "");
	if (!json_is_integer(size) || json_integer_value(size) < 0)
		return kiln_error(err, EINVAL, "descriptor %s has an invalid size", digest);
	snprintf(d.media_type, sizeof(d.media_type), "%s", mt);
	snprintf(d.digest, sizeof(d.digest), "%s", digest);
	d.size = (int64_t)json_integer_value(size);
	if (platform && !json_is_null(platform)) {
		int r = platform_from_json(platform, &d.platform, err);
		if (r < 0)
			return kiln_error_wrap(err, r, "descriptor %s", digest);
		d.has_platform = true;
	}
	if (ann && !json_is_null(ann)) {
		const char *k;
		json_t *v;
		if (!json_is_object(ann))
			return kiln_error(err, EINVAL,
					  "descriptor %s: annotations is not an object", digest);
		json_object_foreach (ann, k, v)
			if (!json_is_string(v))
				return kiln_error(err, EINVAL,
						  "descriptor %s: annotation '%s' is not a string",
						  digest, k);
		d.annotations = json_incref(ann);
	}
	*ret = d;
	return 0;
}

json_t *oci_descriptor_to_json(const OciDescriptor *d)
{
	json_t *j = json_object();

	json_object_set_new(j, "mediaType", json_string(d->media_type));
	json_object_set_new(j, "digest", json_string(d->digest));
	json_object_set_new(j, "size", json_integer(d->size));
	if (d->has_platform) {
		json_t *p = json_object();
		json_object_set_new(p, "architecture", json_string(d->platform.arch));
		json_object_set_new(p, "os", json_string(d->platform.os));
		if (d->platform.variant[0])
			json_object_set_new(p, "variant", json_string(d->platform.variant));
		json_object_set_new(j, "platform", p);
	}
	if (d->annotations && json_object_size(d->annotations) > 0)
		json_object_set(j, "annotations", d->annotations);
	return j;
}

char *oci_json_dump(json_t *j)
{
	char *s = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENCODE_ANY);

	if (!s)
		abort();
	return s;
}

void oci_image_free(OciImage *img)
{
	if (!img)
		return;
	if (img->config)
		json_decref(img->config);
	oci_descriptors_free(img->layers, img->n_layers);
	free(img->diff_ids);
	free(img);
}

static int json_parse_object(const char *data, size_t len, json_t **ret, KilnError **err)
{
	json_error_t jerr;
	json_t *j = json_loadb(data, len, JSON_REJECT_DUPLICATES, &jerr);

	/* jansson's jerr.text quotes the bytes near the error: never put those in a message. */
	if (!j)
		return kiln_error(err, EINVAL, "not valid JSON at line %d column %d", jerr.line,
				  jerr.column);
	if (!json_is_object(j)) {
		json_decref(j);
		return kiln_error(err, EINVAL, "JSON document is not an object");
	}
	*ret = j;
	return 0;
}

static int check_schema_version(json_t *doc, KilnError **err)
{
	json_t *v = json_object_get(doc, "schemaVersion");

	if (!json_is_integer(v) || json_integer_value(v) != 2)
		return kiln_error(err, EINVAL, "schemaVersion is not 2");
	return 0;
}

/* The common start of reading a manifest or an index: a JSON object, schemaVersion 2, and a
 * mediaType (optional in OCI) that is_type accepts. *ret_mt is the mediaType or NULL. */
static int doc_parse(const char *data, size_t len, bool (*is_type)(const char *), const char *what,
		     json_t **ret_doc, const char **ret_mt, KilnError **err)
{
	_cleanup_json_ json_t *doc = NULL;
	int r;

	r = json_parse_object(data, len, &doc, err);
	if (r < 0)
		return r;
	r = check_schema_version(doc, err);
	if (r < 0)
		return r;
	json_t *mt = json_object_get(doc, "mediaType");
	if (mt && !json_is_string(mt))
		return kiln_error(err, EINVAL, "mediaType is not a string");
	if (mt && !is_type(json_string_value(mt)))
		return kiln_error(err, EINVAL, "mediaType '%s' is not %s", json_string_value(mt),
				  what);
	*ret_mt = mt ? json_string_value(mt) : NULL;
	*ret_doc = TAKE_PTR(doc);
	return 0;
}

int oci_manifest_parse(const char *data, size_t len, OciImage **ret, KilnError **err)
{
	_cleanup_json_ json_t *doc = NULL;
	_cleanup_(oci_image_freep) OciImage *img = xcalloc(1, sizeof(*img));
	OciDescriptor config = {0};
	int r;

	const char *mt = NULL;
	r = doc_parse(data, len, oci_media_type_is_manifest, "an image manifest", &doc, &mt, err);
	if (r < 0)
		return r;
	/* Left empty when absent: OCI makes the field optional, the descriptor decides. */
	snprintf(img->manifest_media_type, sizeof(img->manifest_media_type), "%s", mt ? mt : "");
	if (json_object_get(doc, "manifests"))
		return kiln_error(err, EINVAL, "image manifest has a 'manifests' list (an index?)");

	r = oci_descriptor_from_json(json_object_get(doc, "config"), &config, err);
	if (r < 0)
		return kiln_error_wrap(err, r, "config");
	oci_descriptor_done(&config);
	if (strcmp(config.media_type, MT_OCI_CONFIG) != 0 &&
	    strcmp(config.media_type, MT_DOCKER_CONFIG) != 0)
		return kiln_error(err, EINVAL, "config has unsupported mediaType '%s'",
				  config.media_type);
	memcpy(img->config_digest, config.digest, sizeof(img->config_digest));
	memcpy(img->config_media_type, config.media_type, sizeof(img->config_media_type));
	img->config_size = config.size;

	json_t *layers = json_object_get(doc, "layers");
	if (!json_is_array(layers))
		return kiln_error(err, EINVAL, "manifest has no layers array");
	if (json_array_size(layers) > OCI_DESCRIPTORS_MAX)
		return kiln_error(err, E2BIG, "manifest lists %zu layers, more than %d",
				  json_array_size(layers), OCI_DESCRIPTORS_MAX);
	img->layers = xcalloc(json_array_size(layers) + 1, sizeof(OciDescriptor));
	size_t i;
	json_t *l;
	json_array_foreach (layers, i, l) {
		r = oci_descriptor_from_json(l, &img->layers[i], err);
		if (r < 0)
			return kiln_error_wrap(err, r, "layer %zu", i);
		img->n_layers++;
		if (!oci_media_type_is_layer(img->layers[i].media_type))
			return kiln_error(err, EINVAL, "layer %zu has unsupported mediaType '%s'",
					  i, img->layers[i].media_type);
	}
	*ret = TAKE_PTR(img);
	return 0;
}

int oci_index_parse(const char *data, size_t len, OciDescriptor **ret, size_t *ret_n,
		    KilnError **err)
{
	_cleanup_json_ json_t *doc = NULL;
	int r;

	const char *mt = NULL;
	r = doc_parse(data, len, oci_media_type_is_index, "an index", &doc, &mt, err);
	if (r < 0)
		return r;
	json_t *manifests = json_object_get(doc, "manifests");
	if (!json_is_array(manifests))
		return kiln_error(err, EINVAL, "index has no manifests array");
	if (json_object_get(doc, "layers") || json_object_get(doc, "config"))
		return kiln_error(err, EINVAL, "index has layers or config (a manifest?)");
	if (json_array_size(manifests) > OCI_DESCRIPTORS_MAX)
		return kiln_error(err, E2BIG, "index lists %zu descriptors, more than %d",
				  json_array_size(manifests), OCI_DESCRIPTORS_MAX);

	size_t n = 0, i;
	json_t *e;
	OciDescriptor *v = xcalloc(json_array_size(manifests) + 1, sizeof(*v));
	json_array_foreach (manifests, i, e) {
		r = oci_descriptor_from_json(e, &v[n], err);
		if (r < 0) {
			oci_descriptors_free(v, n);
			return kiln_error_wrap(err, r, "manifests[%zu]", i);
		}
		n++;
	}
	*ret = v;
	*ret_n = n;
	return 0;
}

int oci_config_parse(OciImage *img, const char *data, size_t len, bool keep_platform,
		     KilnError **err)
{
	_cleanup_json_ json_t *doc = NULL;
	int r;

	r = json_parse_object(data, len, &doc, err);
	if (r < 0)
		return r;
	json_t *rootfs = json_object_get(doc, "rootfs");
	json_t *diff_ids = json_object_get(rootfs, "diff_ids");
	if (!json_is_object(rootfs) ||
	    strcmp(json_string_value(json_object_get(rootfs, "type")) ?: "", "layers") != 0)
		return kiln_error(err, EINVAL, "config has no rootfs of type 'layers'");
	if (!json_is_array(diff_ids))
		return kiln_error(err, EINVAL, "config has no rootfs.diff_ids array");
	if (json_array_size(diff_ids) != img->n_layers)
		return kiln_error(err, EINVAL,
				  "manifest has %zu layers but config has %zu rootfs.diff_ids",
				  img->n_layers, json_array_size(diff_ids));
	if (!keep_platform) {
		Platform p;
		r = platform_from_json(doc, &p, err);
		if (r < 0)
			return kiln_error_wrap(err, r, "config");
		img->platform = p;
	}

	char(*ids)[DIGEST_STRING_MAX] = xcalloc(img->n_layers + 1, DIGEST_STRING_MAX);
	size_t i;
	json_t *d;
	json_array_foreach (diff_ids, i, d) {
		if (!digest_is_valid(json_string_value(d))) {
			free(ids);
			return kiln_error(err, EINVAL,
					  "config rootfs.diff_ids[%zu] is not a digest", i);
		}
		snprintf(ids[i], DIGEST_STRING_MAX, "%s", json_string_value(d));
	}
	free(img->diff_ids);
	img->diff_ids = ids;
	if (img->config)
		json_decref(img->config);
	img->config = TAKE_PTR(doc);
	return 0;
}

int oci_blob_read(Store *s, const OciDescriptor *d, size_t max, char **ret_data, size_t *ret_len,
		  KilnError **err)
{
	_cleanup_free_ char *data = NULL;
	size_t len = 0;
	int r;

	if (d->size > (int64_t)max)
		return kiln_error(err, EFBIG, "blob %s is larger than %zu bytes", d->digest, max);
	r = store_read_blob(s, d->digest, max, &data, &len, err);
	if (r < 0)
		return r;
	if ((int64_t)len != d->size)
		return kiln_error(err, EIO, "blob %s has %zu bytes, its descriptor says %lld",
				  d->digest, len, (long long)d->size);
	*ret_data = TAKE_PTR(data);
	*ret_len = len;
	return 0;
}

int oci_blob_ensure(Store *s, const OciFetcher *f, const OciDescriptor *d, KilnError **err)
{
	if (store_has_blob(s, d->digest))
		return 0;
	if (!f || !f->fetch)
		return kiln_error(err, ENOENT, "blob %s not found in store", d->digest);
	int r = f->fetch(f->userdata, d, err);
	if (r < 0)
		return kiln_error_wrap(err, r, "fetch %s", d->digest);
	if (!store_has_blob(s, d->digest))
		return kiln_error(err, ENOENT, "fetch %s: the blob did not arrive in the store",
				  d->digest);
	return 0;
}

/* oci_blob_read() of a blob that is fetched first when missing. */
static int blob_read_fetch(Store *s, const OciFetcher *f, const OciDescriptor *d, size_t max,
			   char **ret_data, size_t *ret_len, KilnError **err)
{
	int r = oci_blob_ensure(s, f, d, err);

	return r < 0 ? r : oci_blob_read(s, d, max, ret_data, ret_len, err);
}

int oci_descriptor_from_blob(Store *s, const char *digest, OciDescriptor *ret, KilnError **err)
{
	_cleanup_free_ char *data = NULL;
	_cleanup_json_ json_t *doc = NULL;
	OciDescriptor d = {0};
	size_t len = 0;
	int r;

	r = store_read_blob(s, digest, OCI_MANIFEST_MAX, &data, &len, err);
	if (r < 0)
		return r;
	r = json_parse_object(data, len, &doc, err);
	if (r < 0)
		return kiln_error_wrap(err, r, "blob %s", digest);
	const char *mt = json_string_value(json_object_get(doc, "mediaType"));
	if (!mt)
		mt = json_object_get(doc, "manifests") ? MT_OCI_INDEX : MT_OCI_MANIFEST;
	if (oci_media_type_is_index(mt)) {
		OciDescriptor *v = NULL;
		size_t n = 0;
		r = oci_index_parse(data, len, &v, &n, err);
		oci_descriptors_free(v, n);
	} else if (oci_media_type_is_manifest(mt)) {
		_cleanup_(oci_image_freep) OciImage *img = NULL;
		r = oci_manifest_parse(data, len, &img, err);
	} else {
		r = kiln_error(err, EINVAL, "mediaType '%s' is neither an index nor a manifest",
			       mt);
	}
	if (r < 0)
		return kiln_error_wrap(err, r, "blob %s is not an image index or manifest", digest);
	snprintf(d.media_type, sizeof(d.media_type), "%s", mt);
	snprintf(d.digest, sizeof(d.digest), "%s", digest);
	d.size = (int64_t)len;
	*ret = d;
	return 0;
}

/* A layer blob already in the store must have the size its descriptor says (containerd refuses
 * a mismatch too); one not there yet is checked when it arrives. */
static int layer_check_size(Store *s, const OciDescriptor *d, KilnError **err)
{
	_cleanup_close_ int fd = -1;
	struct stat st;
	int r;

	if (!store_has_blob(s, d->digest))
		return 0;
	r = store_open_blob(s, d->digest, &fd, err);
	if (r < 0)
		return r;
	if (fstat(fd, &st) < 0)
		return kiln_error_errno(err, errno, "stat blob %s", d->digest);
	if (st.st_size != d->size)
		return kiln_error(err, EIO, "layer %s has %lld bytes, its descriptor says %lld",
				  d->digest, (long long)st.st_size, (long long)d->size);
	return 0;
}

/* Loads and validates one manifest and its config (fetched first when missing and f is set). */
static int image_load(Store *s, const OciFetcher *f, const OciDescriptor *m, OciImage **ret,
		      KilnError **err)
{
	_cleanup_free_ char *data = NULL, *config = NULL;
	_cleanup_(oci_image_freep) OciImage *img = NULL;
	size_t len = 0, config_len = 0;
	int r;

	if (!oci_media_type_is_manifest(m->media_type))
		return kiln_error(err, EINVAL, "%s has unsupported mediaType '%s'", m->digest,
				  m->media_type);
	r = blob_read_fetch(s, f, m, OCI_MANIFEST_MAX, &data, &len, err);
	if (r < 0)
		return r;
	r = oci_manifest_parse(data, len, &img, err);
	if (r < 0)
		return kiln_error_wrap(err, r, "manifest %s", m->digest);
	if (!img->manifest_media_type[0])
		memcpy(img->manifest_media_type, m->media_type, sizeof(img->manifest_media_type));
	if (strcmp(img->manifest_media_type, m->media_type) != 0)
		return kiln_error(err, EINVAL, "manifest %s: mediaType '%s' differs from '%s'",
				  m->digest, img->manifest_media_type, m->media_type);
	memcpy(img->manifest_digest, m->digest, sizeof(img->manifest_digest));
	img->manifest_size = m->size;

	OciDescriptor cd = {.size = img->config_size};
	memcpy(cd.media_type, img->config_media_type, sizeof(cd.media_type));
	memcpy(cd.digest, img->config_digest, sizeof(cd.digest));
	r = blob_read_fetch(s, f, &cd, OCI_CONFIG_MAX, &config, &config_len, err);
	if (r < 0)
		return kiln_error_wrap(err, r, "manifest %s: config", m->digest);
	if (m->has_platform)
		img->platform = m->platform;
	r = oci_config_parse(img, config, config_len, m->has_platform, err);
	if (r < 0)
		return kiln_error_wrap(err, r, "manifest %s: config %s", m->digest,
				       img->config_digest);
	for (size_t i = 0; i < img->n_layers; i++) {
		r = layer_check_size(s, &img->layers[i], err);
		if (r < 0)
			return kiln_error_wrap(err, r, "manifest %s", m->digest);
	}
	*ret = TAKE_PTR(img);
	return 0;
}

typedef struct Candidates {
	OciDescriptor *v;
	size_t n;
	json_t *seen; /* "digest platform" of each candidate */
} Candidates;

static void candidates_done(Candidates *c)
{
	oci_descriptors_free(c->v, c->n);
	if (c->seen)
		json_decref(c->seen);
}

static bool is_attestation(const OciDescriptor *d)
{
	const char *t = oci_descriptor_annotation(d, "vnd.docker.reference.type");

	return (t && !strcmp(t, "attestation-manifest")) ||
	       (d->has_platform && !strcmp(d->platform.os, "unknown") &&
		!strcmp(d->platform.arch, "unknown"));
}

/* ---------- the graph walker ---------- */

typedef struct Walk {
	Store *s;
	const OciWalkOptions *o;
	const char *root;
	json_t *seen; /* digests of the documents read so far */
	size_t n;     /* descriptors visited */
} Walk;

/* Counts n more descriptors listed by the document `where`. */
static int walk_count(Walk *w, const char *where, size_t n, KilnError **err)
{
	if (n > OCI_DESCRIPTORS_MAX - w->n)
		return kiln_error(err, E2BIG, "%s: image %s has more than %d descriptors", where,
				  w->root, OCI_DESCRIPTORS_MAX);
	w->n += n;
	return 0;
}

/* A document that could not be read or parsed (r, *problem): handed to the caller's problem
 * callback when there is one (the walk goes on without what is below it), else the walk's
 * error. */
static int walk_problem(Walk *w, const OciDescriptor *d, int r, KilnError **problem,
			KilnError **err)
{
	if (!w->o->problem) {
		if (err && !*err)
			*err = TAKE_PTR(*problem);
		return r;
	}
	r = w->o->problem(d, *problem, w->o->userdata, err);
	return r < 0 ? r : 0;
}

/* What a manifest refers to: config and layers; with OCI_WALK_SUBJECTS also its subject and the
 * "blobs" of the withdrawn OCI artifact manifest draft. Media types are not checked: artifacts
 * (attestations, signatures) are walked like images. */
static int manifest_refs(const char *data, size_t len, unsigned flags, OciDescriptor **ret,
			 size_t *ret_n, KilnError **err)
{
	_cleanup_json_ json_t *doc = NULL;
	const char *mt = NULL;
	int r =
	    doc_parse(data, len, oci_media_type_is_manifest, "an image manifest", &doc, &mt, err);

	if (r < 0)
		return r;
	json_t *layers = json_object_get(doc, "layers"), *blobs = json_object_get(doc, "blobs");
	json_t *subject = json_object_get(doc, "subject");
	if (!json_is_array(layers))
		return kiln_error(err, EINVAL, "manifest has no layers array");
	bool extra = flags & OCI_WALK_SUBJECTS;
	size_t max = 1 + json_array_size(layers) + (extra ? json_array_size(blobs) + 1 : 0);
	if (max > OCI_DESCRIPTORS_MAX)
		return kiln_error(err, E2BIG, "manifest lists more than %d descriptors",
				  OCI_DESCRIPTORS_MAX);
	OciDescriptor *v = xcalloc(max + 1, sizeof(*v));
	size_t n = 0, i;
	json_t *e;
	r = oci_descriptor_from_json(json_object_get(doc, "config"), &v[n++], err);
	json_array_foreach (layers, i, e)
		if (r >= 0 && (r = oci_descriptor_from_json(e, &v[n], err)) >= 0)
			n++;
	json_array_foreach (extra ? blobs : NULL, i, e)
		if (r >= 0 && (r = oci_descriptor_from_json(e, &v[n], err)) >= 0)
			n++;
	if (r >= 0 && extra && subject && (r = oci_descriptor_from_json(subject, &v[n], err)) >= 0)
		n++;
	if (r < 0) {
		oci_descriptors_free(v, n);
		return r;
	}
	*ret = v;
	*ret_n = n;
	return 0;
}

static int walk_desc(Walk *w, const OciDescriptor *d, unsigned depth, KilnError **err);

/* Reads an index or manifest document and walks what it lists. */
static int walk_document(Walk *w, const OciDescriptor *d, unsigned depth, KilnError **err)
{
	_cleanup_error_ KilnError *e = NULL;
	_cleanup_free_ char *data = NULL;
	bool index = oci_media_type_is_index(d->media_type);
	OciDescriptor *v = NULL;
	size_t len = 0, n = 0;
	int r;

	if (depth >= (unsigned)OCI_INDEX_DEPTH_MAX + !index)
		r = kiln_error(&e, ELOOP, "%s %s: nested too deeply", index ? "index" : "manifest",
			       d->digest);
	else if (w->o->flags & OCI_WALK_ANY_SIZE)
		r = store_read_blob(w->s, d->digest, OCI_MANIFEST_MAX, &data, &len, &e);
	else
		r = blob_read_fetch(w->s, w->o->fetch, d, OCI_MANIFEST_MAX, &data, &len, &e);
	if (r >= 0)
		r = index ? oci_index_parse(data, len, &v, &n, &e)
			  : manifest_refs(data, len, w->o->flags, &v, &n, &e);
	if (r < 0 && !data)
		return walk_problem(w, d, r, &e, err);
	if (r < 0) {
		kiln_error_wrap(&e, r, "%s %s", index ? "index" : "manifest", d->digest);
		return walk_problem(w, d, r, &e, err);
	}
	r = walk_count(w, d->digest, n, err);
	for (size_t i = 0; i < n && r >= 0; i++)
		r = walk_desc(w, &v[i], depth + 1, err);
	oci_descriptors_free(v, n);
	return r;
}

static int walk_desc(Walk *w, const OciDescriptor *d, unsigned depth, KilnError **err)
{
	int r = w->o->visit ? w->o->visit(d, depth, w->o->userdata, err) : 0;

	if (r < 0 || r == OCI_WALK_SKIP)
		return r < 0 ? r : 0;
	bool doc =
	    oci_media_type_is_index(d->media_type) ||
	    ((w->o->flags & OCI_WALK_MANIFESTS) && oci_media_type_is_manifest(d->media_type));
	if (doc && !json_object_get(w->seen, d->digest)) {
		json_object_set_new(w->seen, d->digest, json_true());
		r = walk_document(w, d, depth, err);
		if (r < 0)
			return r;
	}
	r = w->o->leave ? w->o->leave(d, depth, w->o->userdata, err) : 0;
	return r < 0 ? r : 0;
}

int oci_walk(Store *s, const OciDescriptor *roots, size_t n, const OciWalkOptions *o,
	     KilnError **err)
{
	_cleanup_json_ json_t *seen = json_object();
	Walk w = {.s = s, .o = o, .seen = seen};
	int r = 0;

	for (size_t i = 0; i < n && r >= 0; i++) {
		w.root = roots[i].digest;
		r = walk_count(&w, roots[i].digest, 1, err);
		if (r >= 0)
			r = walk_desc(&w, &roots[i], 0, err);
	}
	return r < 0 ? r : 0;
}

/* ---------- resolving images ---------- */

/* oci_walk visitor: collects the image manifests below the root, each (digest, platform) once. */
static int collect_fn(const OciDescriptor *d, unsigned depth, void *userdata, KilnError **err)
{
	Candidates *c = userdata;
	char key[DIGEST_STRING_MAX + PLATFORM_STRING_MAX + 1];

	if (!oci_media_type_is_manifest(d->media_type)) {
		if (depth == 0 && !oci_media_type_is_index(d->media_type))
			return kiln_error(err, EINVAL, "%s has unsupported mediaType '%s'",
					  d->digest, d->media_type);
		return 0; /* an index (walked on), or an artifact listed in one: not an image */
	}
	if (is_attestation(d))
		return 0;
	snprintf(key, sizeof(key), "%s ", d->digest);
	if (d->has_platform)
		platform_format(&d->platform, key + strlen(key), sizeof(key) - strlen(key));
	if (json_object_get(c->seen, key))
		return 0;
	if (c->n >= CANDIDATES_MAX)
		return kiln_error(err, E2BIG, "more than %d manifests", CANDIDATES_MAX);
	json_object_set_new(c->seen, key, json_true());
	c->v = xrealloc(c->v, (c->n + 1) * sizeof(*c->v));
	oci_descriptor_copy(&c->v[c->n++], d);
	return 0;
}

static void platform_list_add(Platform **v, size_t *n, const Platform *p)
{
	for (size_t i = 0; i < *n; i++)
		if (platform_equal(&(*v)[i], p))
			return;
	*v = xrealloc(*v, (*n + 1) * sizeof(**v));
	(*v)[(*n)++] = *p;
}

/* The platform of a candidate: from its descriptor, else from its config. */
static int candidate_platform(Store *s, const OciFetcher *f, const OciDescriptor *d, Platform *ret,
			      KilnError **err)
{
	_cleanup_(oci_image_freep) OciImage *img = NULL;

	if (d->has_platform) {
		*ret = d->platform;
		return 0;
	}
	int r = image_load(s, f, d, &img, err);
	if (r < 0)
		return r;
	*ret = img->platform;
	return 0;
}

/* Every manifest reachable from the roots (c) and its platform (*ret_each, aligned with c->v). */
static int candidates_load(Store *s, const OciFetcher *f, const OciDescriptor *roots,
			   size_t n_roots, Candidates *c, Platform **ret_each, KilnError **err)
{
	_cleanup_free_ Platform *each = NULL;
	OciWalkOptions wo = {.visit = collect_fn, .fetch = f, .userdata = c};
	int r;

	c->seen = json_object();
	r = oci_walk(s, roots, n_roots, &wo, err);
	if (r < 0)
		return r;
	each = xcalloc(c->n + 1, sizeof(Platform));
	for (size_t i = 0; i < c->n; i++) {
		r = candidate_platform(s, f, &c->v[i], &each[i], err);
		if (r < 0)
			return r;
	}
	*ret_each = TAKE_PTR(each);
	return 0;
}

int oci_list_platforms(Store *s, const OciDescriptor *root, Platform **ret, size_t *ret_n,
		       KilnError **err)
{
	_cleanup_(candidates_done) Candidates c = {0};
	_cleanup_free_ Platform *each = NULL, *v = NULL;
	size_t n = 0;
	int r = candidates_load(s, NULL, root, 1, &c, &each, err);

	if (r < 0)
		return r;
	for (size_t i = 0; i < c.n; i++)
		platform_list_add(&v, &n, &each[i]);
	*ret = TAKE_PTR(v);
	*ret_n = n;
	return 0;
}

static char *platforms_join(const Platform *v, size_t n)
{
	char *s = xstrdup("");

	for (size_t i = 0; i < n; i++) {
		char buf[PLATFORM_STRING_MAX];
		platform_format(&v[i], buf, sizeof(buf));
		char *t = xasprintf("%s%s%s", s, i ? ", " : "", buf);
		free(s);
		s = t;
	}
	return s;
}

int oci_image_resolve(Store *s, const OciDescriptor *root, const Platform *want,
		      const OciFetcher *fetch, OciImage **ret, KilnError **err)
{
	_cleanup_(candidates_done) Candidates c = {0};
	_cleanup_free_ Platform *each = NULL, *seen = NULL;
	size_t n_seen = 0, best = 0;
	int best_score = -1, r;

	r = candidates_load(s, fetch, root, 1, &c, &each, err);
	if (r < 0)
		return r;
	for (size_t i = 0; i < c.n; i++) {
		platform_list_add(&seen, &n_seen, &each[i]);
		int score = platform_match_score(want, &each[i]);
		if (score > best_score) {
			best_score = score;
			best = i;
		}
	}
	if (best_score < 0) {
		char w[PLATFORM_STRING_MAX];
		_cleanup_free_ char *list = platforms_join(seen, n_seen);
		platform_format(want, w, sizeof(w));
		return kiln_error(err, ENOENT, "image %s has no manifest for %s (available: %s)",
				  root->digest, w, n_seen ? list : "none");
	}
	OciDescriptor chosen;
	oci_descriptor_copy(&chosen, &c.v[best]);
	r = image_load(s, fetch, &chosen, ret, err);
	oci_descriptor_done(&chosen);
	return r;
}

int oci_image_fetch_layers(Store *s, const OciImage *img, const OciFetcher *fetch, KilnError **err)
{
	for (size_t i = 0; i < img->n_layers; i++) {
		int r = oci_blob_ensure(s, fetch, &img->layers[i], err);
		if (r >= 0)
			r = layer_check_size(s, &img->layers[i], err);
		if (r < 0)
			return kiln_error_wrap(err, r, "image %s", img->manifest_digest);
	}
	return 0;
}

void oci_images_free(OciImage **v, size_t n)
{
	for (size_t i = 0; v && i < n; i++)
		oci_image_free(v[i]);
	free(v);
}

int oci_images_load(Store *s, const OciDescriptor *roots, size_t n_roots, OciImage ***ret,
		    size_t *ret_n, KilnError **err)
{
	_cleanup_(candidates_done) Candidates c = {0};
	_cleanup_free_ Platform *each = NULL;
	int r = candidates_load(s, NULL, roots, n_roots, &c, &each, err);

	if (r < 0)
		return r;
	OciImage **v = xcalloc(c.n + 1, sizeof(*v));
	for (size_t i = 0; i < c.n && r >= 0; i++)
		r = image_load(s, NULL, &c.v[i], &v[i], err);
	if (r < 0) {
		oci_images_free(v, c.n);
		return r;
	}
	*ret = v;
	*ret_n = c.n;
	return 0;
}

static int cmp_descriptor_platform(const void *a, const void *b)
{
	char pa[PLATFORM_STRING_MAX], pb[PLATFORM_STRING_MAX];

	platform_format(&((const OciDescriptor *)a)->platform, pa, sizeof(pa));
	platform_format(&((const OciDescriptor *)b)->platform, pb, sizeof(pb));
	return strcmp(pa, pb);
}

int oci_index_put(Store *s, OciDescriptor *manifests, size_t n, OciDescriptor *ret, KilnError **err)
{
	json_t *idx, *arr;
	char *data;
	int r;

	if (n > 1)
		qsort(manifests, n, sizeof(OciDescriptor), cmp_descriptor_platform);
	for (size_t i = 0; i < n; i++) {
		if (!manifests[i].has_platform)
			return kiln_error(err, EINVAL, "manifest %s has no platform",
					  manifests[i].digest);
		if (i > 0 && cmp_descriptor_platform(&manifests[i - 1], &manifests[i]) == 0) {
			char pl[PLATFORM_STRING_MAX];
			platform_format(&manifests[i].platform, pl, sizeof(pl));
			return kiln_error(err, EEXIST, "two images for platform '%s'", pl);
		}
	}
	idx = json_object();
	arr = json_array();
	json_object_set_new(idx, "schemaVersion", json_integer(2));
	json_object_set_new(idx, "mediaType", json_string(MT_OCI_INDEX));
	for (size_t i = 0; i < n; i++) {
		OciDescriptor d = manifests[i];
		d.annotations = NULL;
		json_array_append_new(arr, oci_descriptor_to_json(&d));
	}
	json_object_set_new(idx, "manifests", arr);
	data = oci_json_dump(idx);
	json_decref(idx);
	*ret = (OciDescriptor){0};
	snprintf(ret->media_type, sizeof(ret->media_type), "%s", MT_OCI_INDEX);
	ret->size = (int64_t)strlen(data);
	r = store_put_blob(s, data, strlen(data), NULL, ret->digest, err);
	free(data);
	return r < 0 ? r : 0;
}
