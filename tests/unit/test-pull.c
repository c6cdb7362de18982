/* The pull module (layers/registry_pull.h) against a small registry served by httpserver.h:
 * only the platforms asked for are fetched, blobs in the store are never fetched again, a blob
 * whose bytes are wrong never gets its name, several blobs download at once, and the store name
 * records which platforms of a partial pull are complete. The same flows against real
 * registries are in tests/integration/t-pull.sh. */
#include <dirent.h>

#include "httpserver.h"
#include "common/cleanup.h"
#include "common/digest.h"
#include "common/fdutil.h"
#include "layers/registry_config.h"
#include "layers/registry_pull.h"
#include "tap.h"

#define BLOBS_MAX 16

typedef struct Blob {
	char digest[DIGEST_STRING_MAX];
	char *data;
	size_t len;
	const char *media_type; /* a document's, or NULL */
} Blob;

typedef struct Reg {
	Blob blobs[BLOBS_MAX];
	size_t n;
	char index[DIGEST_STRING_MAX];
	char manifest[2][DIGEST_STRING_MAX]; /* amd64, arm64 */
	char layer[2][2][DIGEST_STRING_MAX]; /* per platform, two layers */
	const char *flip;		     /* a blob served with one byte changed ... */
	int flips;			     /* ... this many times (-1: always) */
} Reg;

static const char *reg_add(Reg *g, char *data, const char *media_type)
{
	Blob *b = &g->blobs[g->n++];

	b->data = data;
	b->len = strlen(data);
	b->media_type = media_type;
	digest_buffer(data, b->len, b->digest);
	return b->digest;
}

static void reg_free(Reg *g)
{
	for (size_t i = 0; i < g->n; i++)
		free(g->blobs[i].data);
}

/* Two platforms, each with a config and two layers (random bytes: a pull does not unpack). */
static void reg_init(Reg *g)
{
	static const char *const arch[] = {"amd64", "arm64"};
	char m[2][1024];

	memset(g, 0, sizeof(*g));
	for (int p = 0; p < 2; p++) {
		char dd[2][DIGEST_STRING_MAX];
		for (int l = 0; l < 2; l++) {
			char *data = xasprintf("layer %s %d %ld", arch[p], l, (long)random());
			digest_buffer(data, strlen(data), dd[l]); /* a stand-in for the diff_id */
			snprintf(g->layer[p][l], DIGEST_STRING_MAX, "%s", reg_add(g, data, NULL));
		}
		const char *cfg = reg_add(
		    g,
		    xasprintf("{\"architecture\":\"%s\",\"os\":\"linux\",\"rootfs\":{\"type\":"
			      "\"layers\",\"diff_ids\":[\"%s\",\"%s\"]}}",
			      arch[p], dd[0], dd[1]),
		    NULL);
		snprintf(m[p], sizeof(m[p]),
			 "{\"schemaVersion\":2,\"mediaType\":\"" MT_OCI_MANIFEST "\",\"config\":{"
			 "\"mediaType\":\"" MT_OCI_CONFIG
			 "\",\"digest\":\"%s\",\"size\":%zu},\"layers\":["
			 "{\"mediaType\":\"" MT_OCI_LAYER_GZIP "\",\"digest\":\"%s\",\"size\":%zu},"
			 "{\"mediaType\":\"" MT_OCI_LAYER_GZIP
			 "\",\"digest\":\"%s\",\"size\":%zu}]}",
			 cfg, g->blobs[g->n - 1].len, g->layer[p][0], g->blobs[g->n - 3].len,
			 g->layer[p][1], g->blobs[g->n - 2].len);
		snprintf(g->manifest[p], DIGEST_STRING_MAX, "%s",
			 reg_add(g, xstrdup(m[p]), MT_OCI_MANIFEST));
	}
	snprintf(g->index, DIGEST_STRING_MAX, "%s",
		 reg_add(g,
			 xasprintf("{\"schemaVersion\":2,\"mediaType\":\"" MT_OCI_INDEX
				   "\",\"manifests\":["
				   "{\"mediaType\":\"" MT_OCI_MANIFEST "\",\"digest\":\"%s\","
				   "\"size\":%zu,\"platform\":{\"architecture\":\"amd64\",\"os\":"
				   "\"linux\"}},"
				   "{\"mediaType\":\"" MT_OCI_MANIFEST "\",\"digest\":\"%s\","
				   "\"size\":%zu,\"platform\":{\"architecture\":\"arm64\",\"os\":"
				   "\"linux\"}}]}",
				   g->manifest[0], strlen(m[0]), g->manifest[1], strlen(m[1])),
			 MT_OCI_INDEX));
}

static const Blob *reg_find(Reg *g, const char *ref)
{
	if (strcmp(ref, "1") == 0)
		ref = g->index;
	for (size_t i = 0; i < g->n; i++)
		if (strcmp(g->blobs[i].digest, ref) == 0)
			return &g->blobs[i];
	return NULL;
}

static void reg_handler(Srv *s, const SrvReq *rq, int fd, unsigned n)
{
	Reg *g = s->data;
	const char *mp = "/v2/test/img/manifests/", *bp = "/v2/test/img/blobs/";
	bool manifest = strncmp(rq->target, mp, strlen(mp)) == 0;
	bool blob = strncmp(rq->target, bp, strlen(bp)) == 0;
	const Blob *b = manifest ? reg_find(g, rq->target + strlen(mp))
			: blob	 ? reg_find(g, rq->target + strlen(bp))
				 : NULL;
	char head[512];

	(void)n;
	if (strcmp(rq->target, "/v2/") == 0) {
		srv_respond(fd, 200, NULL, "{}", 2);
		return;
	}
	if (!b || (manifest && !b->media_type) || (blob && b->media_type)) {
		static const char nf[] = "{\"errors\":[{\"code\":\"NOT_FOUND\"}]}";
		srv_respond(fd, 404, "Content-Type: application/json\r\n", nf, strlen(nf));
		return;
	}
	snprintf(head, sizeof(head),
		 "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\nContent-Type: %s\r\n"
		 "Docker-Content-Digest: %s\r\nConnection: close\r\n\r\n",
		 b->len, b->media_type ? b->media_type : "application/octet-stream", b->digest);
	srv_write(fd, head, strlen(head));
	if (strcmp(rq->method, "HEAD") == 0)
		return;
	char *body = xstrdup(b->data);
	pthread_mutex_lock(&s->mu);
	if (g->flip && strcmp(g->flip, b->digest) == 0 && g->flips != 0) {
		body[b->len / 2] ^= 1;
		if (g->flips > 0)
			g->flips--;
	}
	pthread_mutex_unlock(&s->mu);
	srv_write(fd, body, b->len);
	free(body);
}

/* Whether any request of the server's log asked for digest. */
static bool srv_asked(Srv *s, const char *digest)
{
	for (unsigned i = 0; i < srv_count(s) && i < SRV_LOG_MAX; i++)
		if (strstr(srv_log(s, i), digest))
			return true;
	return false;
}

typedef struct Fixture {
	Reg reg;
	Srv srv;
	RegistryConfig *cfg;
	RegistryClient *client;
	Store *store;
	Reference ref;
} Fixture;

static const HttpRetry fast_retry = {.tries = 2, .base_ms = 1, .max_ms = 2, .retry_after_max_s = 1};

static bool fixture_init(Fixture *f)
{
	RegistryClientOptions co = {.retry = &fast_retry};
	char name[128];

	memset(f, 0, sizeof(*f));
	reg_init(&f->reg);
	if (srv_start(&f->srv, reg_handler, &f->reg) < 0)
		return false;
	f->cfg = registry_config_new();
	co.config = f->cfg;
	snprintf(name, sizeof(name), "127.0.0.1:%d/test/img:1", f->srv.port);
	return registry_client_new(&co, &f->client, NULL) >= 0 &&
	       store_open("root", &f->store, NULL) >= 0 && ref_parse(name, &f->ref, NULL) >= 0;
}

static void fixture_done(Fixture *f)
{
	store_free(f->store);
	registry_client_free(f->client);
	registry_config_free(f->cfg);
	srv_stop(&f->srv);
	reg_free(&f->reg);
}

/* The number of files in root/tmp (blob writers' temp files). */
static int tmp_files(void)
{
	DIR *d = opendir("root/tmp");
	int n = 0;

	for (struct dirent *e; d && (e = readdir(d));)
		n += e->d_name[0] != '.';
	if (d)
		closedir(d);
	return n;
}

TEST(one_platform_fetches_only_its_blobs)
{
	Fixture f;
	RegistryPull *p = NULL;
	OciDescriptor root = {0};
	PullResult res = {0};
	Platform amd64;

	CHECK(fixture_init(&f));
	CHECK(platform_parse("linux/amd64", &amd64, NULL) == 0);
	CHECK(registry_pull_new(f.client, f.store, &f.ref, &p, NULL) == 0);
	CHECK(registry_pull_root(p, &root, NULL) == 0);
	CHECK_EQ_STR(root.digest, f.reg.index);
	CHECK_EQ_STR(root.media_type, MT_OCI_INDEX);
	PullOptions o = {.platforms = &amd64, .n_platforms = 1, .jobs = 2};
	KilnError *e = NULL;
	CHECK(registry_pull_images(p, &root, &o, &res, &e) == 0);
	if (e)
		printf("# %s\n", e->message);
	kiln_error_free(e);
	CHECK_EQ_INT(res.n_images, 1);
	CHECK(!res.complete);
	CHECK_EQ_STR(res.images[0]->manifest_digest, f.reg.manifest[0]);
	CHECK(store_has_blob(f.store, f.reg.layer[0][0]) &&
	      store_has_blob(f.store, f.reg.layer[0][1]));
	CHECK(!store_has_blob(f.store, f.reg.manifest[1]));
	CHECK(!srv_asked(&f.srv, f.reg.manifest[1]));
	CHECK(!srv_asked(&f.srv, f.reg.layer[1][0]) && !srv_asked(&f.srv, f.reg.layer[1][1]));
	PullStats st = registry_pull_stats(p);
	CHECK_EQ_INT(st.fetched, 5); /* index, manifest, config, two layers */
	CHECK_EQ_INT(tmp_files(), 0);

	/* Again: a HEAD, and nothing fetched. */
	unsigned before = srv_count(&f.srv);
	RegistryPull *p2 = NULL;
	PullResult res2 = {0};
	OciDescriptor root2 = {0};
	CHECK(registry_pull_new(f.client, f.store, &f.ref, &p2, NULL) == 0);
	CHECK(registry_pull_root(p2, &root2, NULL) == 0);
	CHECK(registry_pull_images(p2, &root2, &o, &res2, NULL) == 0);
	CHECK_EQ_INT(registry_pull_stats(p2).fetched, 0);
	CHECK_EQ_INT(srv_count(&f.srv) - before, 1);
	CHECK(strncmp(srv_log(&f.srv, before), "HEAD ", 5) == 0);

	pull_result_done(&res);
	pull_result_done(&res2);
	oci_descriptor_done(&root);
	oci_descriptor_done(&root2);
	registry_pull_free(p);
	registry_pull_free(p2);
	fixture_done(&f);
}

TEST(all_platforms_is_complete)
{
	Fixture f;
	RegistryPull *p = NULL;
	OciDescriptor root = {0};
	PullResult res = {0};
	PullOptions o = {.jobs = 4};

	CHECK(fixture_init(&f));
	CHECK(registry_pull_new(f.client, f.store, &f.ref, &p, NULL) == 0);
	CHECK(registry_pull_root(p, &root, NULL) == 0);
	CHECK(registry_pull_images(p, &root, &o, &res, NULL) == 0);
	CHECK(res.complete);
	CHECK_EQ_INT(res.n_images, 2);
	CHECK_EQ_INT(registry_pull_stats(p).fetched, f.reg.n);
	for (size_t i = 0; i < f.reg.n; i++)
		CHECK(store_has_blob(f.store, f.reg.blobs[i].digest));
	pull_result_done(&res);
	oci_descriptor_done(&root);
	registry_pull_free(p);
	fixture_done(&f);
}

TEST(wrong_bytes_never_get_the_name)
{
	Fixture f;
	RegistryPull *p = NULL;
	OciDescriptor root = {0};
	PullResult res = {0};
	Platform arm64;
	KilnError *e = NULL;

	CHECK(fixture_init(&f));
	CHECK(platform_parse("linux/arm64", &arm64, NULL) == 0);
	PullOptions o = {.platforms = &arm64, .n_platforms = 1, .jobs = 4};
	CHECK(registry_pull_new(f.client, f.store, &f.ref, &p, NULL) == 0);
	CHECK(registry_pull_root(p, &root, NULL) == 0);
	/* Always wrong: an error naming the digest, nothing stored under it, no temp file. */
	f.reg.flip = f.reg.layer[1][1];
	f.reg.flips = -1;
	CHECK(registry_pull_images(p, &root, &o, &res, &e) < 0);
	CHECK(e && strstr(e->message, f.reg.layer[1][1]));
	CHECK(!store_has_blob(f.store, f.reg.layer[1][1]));
	CHECK_EQ_INT(tmp_files(), 0);
	kiln_error_free(e);
	e = NULL;
	pull_result_done(&res);
	/* Wrong once: the client downloads it again, and the pull succeeds. */
	f.reg.flips = 1;
	CHECK(registry_pull_images(p, &root, &o, &res, &e) == 0);
	CHECK(store_has_blob(f.store, f.reg.layer[1][1]));
	kiln_error_free(e);
	pull_result_done(&res);
	oci_descriptor_done(&root);
	registry_pull_free(p);
	fixture_done(&f);
}

TEST(missing_platform_lists_the_others)
{
	Fixture f;
	RegistryPull *p = NULL;
	OciDescriptor root = {0};
	PullResult res = {0};
	Platform s390x;
	KilnError *e = NULL;

	CHECK(fixture_init(&f));
	CHECK(platform_parse("linux/s390x", &s390x, NULL) == 0);
	PullOptions o = {.platforms = &s390x, .n_platforms = 1};
	CHECK(registry_pull_new(f.client, f.store, &f.ref, &p, NULL) == 0);
	CHECK(registry_pull_root(p, &root, NULL) == 0);
	CHECK(registry_pull_images(p, &root, &o, &res, &e) == -ENOENT);
	CHECK(e && strstr(e->message, "linux/amd64") && strstr(e->message, "linux/arm64"));
	kiln_error_free(e);
	oci_descriptor_done(&root);
	registry_pull_free(p);
	fixture_done(&f);
}

TEST(blobs_several_at_once_each_once)
{
	Fixture f;
	RegistryPull *p = NULL;
	OciDescriptor v[5] = {0};

	CHECK(fixture_init(&f));
	CHECK(registry_pull_new(f.client, f.store, &f.ref, &p, NULL) == 0);
	for (int i = 0; i < 4; i++) {
		const Blob *b = reg_find(&f.reg, f.reg.layer[i / 2][i % 2]);
		snprintf(v[i].media_type, sizeof(v[i].media_type), "%s", MT_OCI_LAYER_GZIP);
		memcpy(v[i].digest, b->digest, DIGEST_STRING_MAX);
		v[i].size = (int64_t)b->len;
	}
	v[4] = v[0]; /* listed twice, fetched once */
	CHECK(store_put_blob(f.store, reg_find(&f.reg, v[3].digest)->data,
			     reg_find(&f.reg, v[3].digest)->len, v[3].digest, NULL, NULL) == 0);
	CHECK(registry_pull_blobs(p, v, 5, 3, NULL) == 0);
	PullStats st = registry_pull_stats(p);
	CHECK_EQ_INT(st.fetched, 3);
	CHECK_EQ_INT(st.present, 1);
	CHECK(!srv_asked(&f.srv, v[3].digest));
	for (int i = 0; i < 4; i++)
		CHECK(store_has_blob(f.store, v[i].digest));
	registry_pull_free(p);
	fixture_done(&f);
}

TEST(tag_records_the_platforms_pulled)
{
	Fixture f;
	RegistryPull *p = NULL;
	OciDescriptor root = {0}, got = {0};
	char prev[DIGEST_STRING_MAX];

	CHECK(fixture_init(&f));
	char *m0[] = {f.reg.manifest[0], NULL}, *m1[] = {f.reg.manifest[1], NULL};
	CHECK(registry_pull_new(f.client, f.store, &f.ref, &p, NULL) == 0);
	CHECK(registry_pull_root(p, &root, NULL) == 0);
	CHECK(registry_pull_tag(f.store, &f.ref, &root, false, m0, prev, NULL) == 0);
	CHECK_EQ_STR(prev, "");
	CHECK(store_image_lookup(f.store, &f.ref, &got, NULL) == 0);
	CHECK_EQ_STR(oci_descriptor_annotation(&got, PULL_ANNOTATION_MANIFESTS), f.reg.manifest[0]);
	CHECK(!pull_entry_not_pulled(&got, f.reg.manifest[0]));
	CHECK(pull_entry_not_pulled(&got, f.reg.manifest[1]));
	oci_descriptor_done(&got);
	/* A second platform joins the first. */
	CHECK(registry_pull_tag(f.store, &f.ref, &root, false, m1, prev, NULL) == 0);
	CHECK_EQ_STR(prev, f.reg.index);
	CHECK(store_image_lookup(f.store, &f.ref, &got, NULL) == 0);
	CHECK(!pull_entry_not_pulled(&got, f.reg.manifest[0]));
	CHECK(!pull_entry_not_pulled(&got, f.reg.manifest[1]));
	oci_descriptor_done(&got);
	/* Complete: no annotation, and it stays complete. */
	CHECK(registry_pull_tag(f.store, &f.ref, &root, true, NULL, NULL, NULL) == 0);
	CHECK(registry_pull_tag(f.store, &f.ref, &root, false, m0, NULL, NULL) == 0);
	CHECK(store_image_lookup(f.store, &f.ref, &got, NULL) == 0);
	CHECK(oci_descriptor_annotation(&got, PULL_ANNOTATION_MANIFESTS) == NULL);
	CHECK(!pull_entry_not_pulled(&got, f.reg.manifest[1]));
	oci_descriptor_done(&got);
	/* By digest only: no name. */
	Reference by_digest = f.ref;
	by_digest.tag[0] = '\0';
	memcpy(by_digest.digest, f.reg.index, DIGEST_STRING_MAX);
	CHECK(registry_pull_tag(f.store, &by_digest, &root, true, NULL, prev, NULL) == 0);
	CHECK_EQ_STR(prev, "");
	oci_descriptor_done(&root);
	registry_pull_free(p);
	fixture_done(&f);
}

int main(void)
{
	srandom((unsigned)getpid());
	RUN(one_platform_fetches_only_its_blobs);
	RUN(all_platforms_is_complete);
	RUN(wrong_bytes_never_get_the_name);
	RUN(missing_platform_lists_the_others);
	RUN(blobs_several_at_once_each_once);
	RUN(tag_records_the_platforms_pulled);
	return tap_done();
}
