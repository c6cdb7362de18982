#include "cli-registry.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#include "builder/credhelper.h"
#include "common/cleanup.h"
#include "common/fdutil.h"
#include "layers/oci.h"
#include "layers/reference.h"
#include "layers/registry_creds.h"

#define PASSWORD_MAX (64u << 10)

enum {
	OPT_PASSWORD_STDIN = 2100,
	OPT_PUSH,
	OPT_MOUNT_FROM,
	OPT_SIZE,
	OPT_CHUNK_SIZE,
	OPT_OUTPUT,
};

static const RegistryHelper cli_helper = {credhelper_run, NULL};

void registry_cli_options_done(RegistryCliOptions *o)
{
	strv_free(o->mirrors);
	*o = (RegistryCliOptions){0};
}

int registry_cli_option(int opt, const char *arg, RegistryCliOptions *o)
{
	if (opt == OPT_TLS_CA) {
		o->tls_ca = arg;
		return 1;
	}
	if (opt == OPT_REGISTRY_MIRROR) {
		strv_push(&o->mirrors, arg);
		return 1;
	}
	return 0;
}

/* registry_cli_client with upload sizes (registry-debug's --chunk-size). */
static int cli_client(const RegistryCliOptions *o, uint64_t chunk, RegistryConfig **ret_config,
		      RegistryClient **ret_client, KilnError **err)
{
	_cleanup_(registry_config_freep) RegistryConfig *cfg = NULL;
	RegistryClientOptions co = {
	    .helper = cli_helper, .monolithic_max = chunk, .chunk_size = chunk};
	int r = registry_config_load(NULL, &cfg, err);

	for (size_t i = 0; r >= 0 && o->mirrors && o->mirrors[i]; i++)
		r = registry_config_add_mirror(cfg, o->mirrors[i], err);
	if (r >= 0 && o->tls_ca)
		r = registry_config_set_tls_ca(cfg, o->tls_ca, err);
	if (r < 0)
		return r;
	co.config = cfg;
	r = registry_client_new(&co, ret_client, err);
	if (r < 0)
		return r;
	*ret_config = TAKE_PTR(cfg);
	return 0;
}

int registry_cli_client(const RegistryCliOptions *o, RegistryConfig **ret_config,
			RegistryClient **ret_client, KilnError **err)
{
	return cli_client(o, o->chunk_size, ret_config, ret_client, err);
}

/* ---------- login, logout ---------- */

static char *strip_newlines(char *s)
{
	size_t n = strlen(s);

	while (n > 0 && (s[n - 1] == '\n' || s[n - 1] == '\r'))
		s[--n] = '\0';
	return s;
}

/* A line from the terminal on stdin; without echo for a password. */
static char *prompt_line(const char *prompt, bool echo)
{
	struct termios old, quiet;
	char *line = NULL;
	size_t cap = 0;
	bool hidden = !echo && tcgetattr(STDIN_FILENO, &old) == 0;

	/* Echo off before the prompt shows: nothing typed after it is echoed. */
	if (hidden) {
		quiet = old;
		quiet.c_lflag &= ~(tcflag_t)ECHO;
		tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet);
	}
	fputs(prompt, stderr);
	fflush(stderr);
	ssize_t n = getline(&line, &cap, stdin);
	if (hidden) {
		tcsetattr(STDIN_FILENO, TCSAFLUSH, &old);
		fputc('\n', stderr);
	}
	if (n < 0) {
		free(line);
		return NULL;
	}
	return strip_newlines(line);
}

static int login_secret(char *pass_arg, bool pass_stdin, const char *user, char **ret,
			KilnError **err)
{
	size_t len = 0;

	if (pass_arg && pass_stdin)
		return kiln_error(err, KILN_EUSAGE, "-p and --password-stdin exclude each other");
	if (pass_arg) {
		fputs("kiln login: WARNING! Using -p/--password on the command line is insecure "
		      "(it shows in the process list). Use --password-stdin.\n",
		      stderr);
		*ret = xstrdup(pass_arg);
		/* What /proc/PID/cmdline shows from now on. */
		explicit_bzero(pass_arg, strlen(pass_arg));
		return 0;
	}
	if (pass_stdin) {
		if (!user)
			return kiln_error(err, KILN_EUSAGE, "--password-stdin needs -u USER");
		int r = read_all_fd(STDIN_FILENO, PASSWORD_MAX, ret, &len, err);
		if (r >= 0 && strlen(*ret) != len)
			r = kiln_error(err, KILN_EUSAGE, "the password holds a NUL byte");
		if (r >= 0)
			strip_newlines(*ret);
		return r;
	}
	if (!isatty(STDIN_FILENO))
		return kiln_error(err, KILN_EUSAGE,
				  "no password: give it with --password-stdin (or -p)");
	*ret = prompt_line("Password: ", false);
	return *ret ? 0 : kiln_error(err, KILN_EUSAGE, "no password read");
}

static int host_arg(int argc, char **argv, char **ret, KilnError **err)
{
	const char *host = optind < argc ? argv[optind] : REF_DEFAULT_DOMAIN;

	if (argc - optind > 1)
		return kiln_error(err, KILN_EUSAGE, "kiln %s takes one HOST", argv[0]);
	*ret = registry_domain_canonical(host);
	if (!*ret)
		return kiln_error(err, KILN_EUSAGE, "'%s' is not a registry HOST[:PORT]", host);
	return 0;
}

static int login_store(const char *domain, const char *user, const char *secret,
		       const RegistryCliOptions *ro, KilnError **err)
{
	_cleanup_(registry_config_freep) RegistryConfig *cfg = NULL;
	_cleanup_(registry_client_freep) RegistryClient *client = NULL;
	_cleanup_free_ char *where = NULL;
	int r = registry_cli_client(ro, &cfg, &client, err);

	if (r >= 0)
		r = registry_login_check(client, domain, user, secret, err);
	if (r < 0)
		return kiln_error_wrap(err, r, "login to '%s'", domain);
	if (r == 1)
		fprintf(stderr,
			"kiln login: warning: '%s' asks for no authentication: the credentials "
			"are kept unchecked\n",
			domain);
	r = registry_creds_store(domain, user, secret, &cli_helper, &where, err);
	if (r < 0)
		return r;
	printf("Login Succeeded\n");
	fprintf(stderr, "kiln login: credentials for '%s' kept in %s\n", domain, where);
	return 0;
}

int cmd_login(int argc, char **argv, KilnError **err)
{
	static const struct option opts[] = {
	    {"username", required_argument, NULL, 'u'},
	    {"password", required_argument, NULL, 'p'},
	    {"password-stdin", no_argument, NULL, OPT_PASSWORD_STDIN},
	    REGISTRY_CLI_OPTIONS,
	    {0},
	};
	_cleanup_(registry_cli_options_done) RegistryCliOptions ro = {0};
	_cleanup_free_ char *domain = NULL;
	_cleanup_free_ char *user = NULL;
	_cleanup_secret_ char *secret = NULL;
	char *pass_arg = NULL;
	bool pass_stdin = false;
	int c, r;

	optind = 1;
	while ((c = getopt_long(argc, argv, "u:p:", opts, NULL)) != -1) {
		if (c == 'u')
			user = xstrdup(optarg);
		else if (c == 'p')
			pass_arg = optarg;
		else if (c == OPT_PASSWORD_STDIN)
			pass_stdin = true;
		else if (!registry_cli_option(c, optarg, &ro))
			return kiln_error(err, KILN_EUSAGE,
					  "usage: kiln login [-u USER] [-p PASSWORD | "
					  "--password-stdin] [--tls-ca FILE] [HOST]");
	}
	r = host_arg(argc, argv, &domain, err);
	if (r < 0)
		return r;
	if (!user && !pass_stdin && isatty(STDIN_FILENO))
		user = prompt_line("Username: ", true);
	r = login_secret(pass_arg, pass_stdin, user, &secret, err);
	if (r < 0)
		return r;
	if (!user || !*user)
		return kiln_error(err, KILN_EUSAGE, "no user name: give it with -u USER");
	if (!*secret)
		return kiln_error(err, KILN_EUSAGE, "the password is empty");
	return login_store(domain, user, secret, &ro, err);
}

int cmd_logout(int argc, char **argv, KilnError **err)
{
	_cleanup_free_ char *domain = NULL;
	bool found = false;
	int r;

	optind = 1;
	if (getopt(argc, argv, "") != -1)
		return kiln_error(err, KILN_EUSAGE, "usage: kiln logout [HOST]");
	r = host_arg(argc, argv, &domain, err);
	if (r >= 0)
		r = registry_creds_erase(domain, &cli_helper, &found, err);
	if (r < 0)
		return r;
	if (found)
		printf("Removing login credentials for %s\n", registry_creds_server(domain));
	else
		printf("Not logged in to %s\n", registry_creds_server(domain));
	return 0;
}

/* ---------- registry-debug (for the tests) ---------- */

typedef struct DebugArgs {
	RegistryCliOptions ro;
	bool push;
	const char *mount_from;
	const char *output;
	int64_t size;
	uint64_t chunk;
} DebugArgs;

static int print_json(json_t *j)
{
	char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;

	if (s)
		printf("%s\n", s);
	free(s);
	json_decref(j);
	return 0;
}

static int debug_manifest(RegistryClient *c, const RegistryRepo *repo, char **args,
			  const DebugArgs *a, KilnError **err)
{
	_cleanup_registry_manifest_ RegistryManifest m = {0};
	int r = registry_manifest_get(c, repo, args[0], &m, err);

	if (r >= 0 && a->output)
		r = write_file_atomic_at(AT_FDCWD, a->output, m.data, m.len, 0644, err);
	if (r < 0)
		return r;
	return print_json(json_pack("{s:s, s:s, s:I, s:s}", "mediaType", m.media_type, "digest",
				    m.digest, "size", (json_int_t)m.len, "endpoint", m.endpoint));
}

static int debug_head(RegistryClient *c, const RegistryRepo *repo, char **args, const DebugArgs *a,
		      KilnError **err)
{
	RegistryDescriptor d;
	int r = registry_manifest_head(c, repo, args[0], &d, err);

	if (r < 0)
		return r;
	return print_json(json_pack("{s:s, s:s, s:I}", "mediaType", d.media_type, "digest",
				    d.digest, "size", (json_int_t)d.size));
}

static int file_write(void *userdata, const void *data, size_t len, KilnError **err)
{
	int r = write_all(*(int *)userdata, data, len);

	return r < 0 ? kiln_error_errno(err, -r, "write") : 0;
}

static int file_restart(void *userdata, KilnError **err)
{
	int fd = *(int *)userdata;

	if (ftruncate(fd, 0) < 0 || lseek(fd, 0, SEEK_SET) < 0)
		return kiln_error_errno(err, errno, "truncate");
	return 0;
}

static int debug_blob(RegistryClient *c, const RegistryRepo *repo, char **args, const DebugArgs *a,
		      KilnError **err)
{
	_cleanup_free_ char *tmp = NULL;
	_cleanup_close_ int fd = -1;
	RegistryBlobSink sink = {file_write, file_restart, &fd, NULL};
	int r;

	if (!a->output)
		return kiln_error(err, KILN_EUSAGE, "registry-debug blob needs -o FILE");
	/* Only verified bytes get the name. */
	tmp = xasprintf("%s.partial", a->output);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return kiln_error_errno(err, errno, "create '%s'", tmp);
	r = registry_blob_get(c, repo, args[0], a->size, &sink, err);
	if (r >= 0 && rename(tmp, a->output) < 0)
		r = kiln_error_errno(err, errno, "rename '%s'", tmp);
	if (r < 0) {
		unlink(tmp);
		return r;
	}
	return print_json(json_pack("{s:s}", "digest", args[0]));
}

static int debug_blob_head(RegistryClient *c, const RegistryRepo *repo, char **args,
			   const DebugArgs *a, KilnError **err)
{
	bool exists = false;
	int64_t size = -1;
	int r = registry_blob_head(c, repo, args[0], &exists, &size, err);

	if (r < 0)
		return r;
	return print_json(json_pack("{s:b, s:I}", "exists", exists, "size", (json_int_t)size));
}

static int file_digest(int fd, char out[DIGEST_STRING_MAX], uint64_t *ret_size, KilnError **err)
{
	_cleanup_(sha256_freep) Sha256 *h = NULL;
	char buf[65536];
	uint64_t total = 0;
	ssize_t n;
	int r = sha256_new(&h, err);

	if (r < 0)
		return r;
	while ((n = pread(fd, buf, sizeof(buf), (off_t)total)) > 0) {
		sha256_update(h, buf, (size_t)n);
		total += (uint64_t)n;
	}
	if (n < 0)
		return kiln_error_errno(err, errno, "read");
	sha256_final(h, out);
	*ret_size = total;
	return 0;
}

static int debug_push_blob(RegistryClient *c, const RegistryRepo *repo, char **args,
			   const DebugArgs *a, KilnError **err)
{
	_cleanup_close_ int fd = open(args[0], O_RDONLY | O_CLOEXEC);
	char digest[DIGEST_STRING_MAX];
	RegistryBlobPushed how = REGISTRY_BLOB_UPLOADED;
	uint64_t size = 0;
	bool exists = false;
	int r;

	if (fd < 0)
		return kiln_error_errno(err, errno, "open '%s'", args[0]);
	r = file_digest(fd, digest, &size, err);
	if (r >= 0)
		r = registry_blob_head(c, repo, digest, &exists, NULL, err);
	if (r >= 0 && !exists)
		r = registry_blob_push(c, repo, digest, fd, size, a->mount_from, &how, err);
	if (r < 0)
		return r;
	return print_json(json_pack("{s:s, s:s, s:I}", "digest", digest, "how",
				    exists			   ? "exists"
				    : how == REGISTRY_BLOB_MOUNTED ? "mounted"
								   : "uploaded",
				    "size", (json_int_t)size));
}

static int debug_put_manifest(RegistryClient *c, const RegistryRepo *repo, char **args,
			      const DebugArgs *a, KilnError **err)
{
	_cleanup_free_ char *data = NULL;
	char digest[DIGEST_STRING_MAX];
	size_t len = 0;
	int r = read_file_at(AT_FDCWD, args[1], OCI_MANIFEST_MAX, &data, &len, err);

	if (r >= 0)
		r = registry_manifest_put(c, repo, args[0], args[2], data, len, digest, err);
	if (r < 0)
		return r;
	return print_json(json_pack("{s:s}", "digest", digest));
}

static const struct {
	const char *name;
	int n_args; /* after HOST REPO */
	int (*fn)(RegistryClient *, const RegistryRepo *, char **, const DebugArgs *, KilnError **);
} debug_cmds[] = {
    {"manifest", 1, debug_manifest},	     /* REF */
    {"head", 1, debug_head},		     /* REF */
    {"blob", 1, debug_blob},		     /* DIGEST (-o FILE, --size N) */
    {"blob-head", 1, debug_blob_head},	     /* DIGEST */
    {"push-blob", 1, debug_push_blob},	     /* FILE (--mount-from REPO) */
    {"put-manifest", 3, debug_put_manifest}, /* REF FILE MEDIATYPE */
};

static int debug_parse(int argc, char **argv, DebugArgs *a, KilnError **err)
{
	static const struct option opts[] = {
	    {"push", no_argument, NULL, OPT_PUSH},
	    {"mount-from", required_argument, NULL, OPT_MOUNT_FROM},
	    {"size", required_argument, NULL, OPT_SIZE},
	    {"chunk-size", required_argument, NULL, OPT_CHUNK_SIZE},
	    {"output", required_argument, NULL, 'o'},
	    REGISTRY_CLI_OPTIONS,
	    {0},
	};
	int c;

	optind = 1;
	while ((c = getopt_long(argc, argv, "o:", opts, NULL)) != -1) {
		if (c == OPT_PUSH)
			a->push = true;
		else if (c == OPT_MOUNT_FROM)
			a->mount_from = optarg;
		else if (c == OPT_SIZE)
			a->size = strtoll(optarg, NULL, 10);
		else if (c == OPT_CHUNK_SIZE)
			a->chunk = strtoull(optarg, NULL, 10);
		else if (c == 'o')
			a->output = optarg;
		else if (!registry_cli_option(c, optarg, &a->ro))
			return kiln_error(err, KILN_EUSAGE, "kiln registry-debug: unknown option");
	}
	return 0;
}

int cmd_registry_debug(int argc, char **argv, KilnError **err)
{
	DebugArgs a = {.size = -1};
	_cleanup_(registry_config_freep) RegistryConfig *cfg = NULL;
	_cleanup_(registry_client_freep) RegistryClient *client = NULL;
	int r = debug_parse(argc, argv, &a, err);

	for (size_t i = 0; r >= 0 && i < ELEMENTSOF(debug_cmds); i++) {
		char **rest = argv + optind;
		if (argc - optind < 1 || strcmp(rest[0], debug_cmds[i].name) != 0)
			continue;
		if (argc - optind != 3 + debug_cmds[i].n_args) {
			r = kiln_error(err, KILN_EUSAGE, "kiln registry-debug %s HOST REPO ARGS...",
				       rest[0]);
			break;
		}
		RegistryRepo repo = {.domain = rest[1], .repository = rest[2], .push = a.push};
		r = cli_client(&a.ro, a.chunk, &cfg, &client, err);
		if (r >= 0)
			r = debug_cmds[i].fn(client, &repo, rest + 3, &a, err);
		registry_cli_options_done(&a.ro);
		return r;
	}
	registry_cli_options_done(&a.ro);
	return r < 0 ? r
		     : kiln_error(err, KILN_EUSAGE,
				  "kiln registry-debug manifest|head|blob|blob-head|push-blob|"
				  "put-manifest HOST REPO ARGS...");
}
