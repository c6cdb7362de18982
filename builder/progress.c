#include "progress.h"

#include <jansson.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include "common/fdutil.h"

#define TAIL_LINES 8 /* output lines kept per step for the tty display and its error report */
/* Output without a newline is shown in pieces of at most this many bytes (BuildKit's progress
 * splits long lines too): what a step's output costs stays linear in time and bounded in
 * memory however long its lines are. */
#define LINE_MAX_BYTES 8192

typedef struct StepState {
	double start;
	char *name;
	char *partial; /* an output line not ended by '\n' yet, LINE_MAX_BYTES allocated */
	size_t partial_len;
	bool done;
	char *tail[TAIL_LINES]; /* the last output lines, a ring */
	unsigned n_tail;
} StepState;

typedef enum { OUT_PLAIN, OUT_JSON, OUT_QUIET, OUT_TTY } OutMode;

/* Platform passes run in threads: every entry point holds the lock. In tty mode a ticker thread
 * redraws the running steps' block at the bottom of the terminal; finished steps scroll above. */
struct Progress {
	pthread_mutex_t lock;
	OutMode mode;
	unsigned n_steps;
	StepState *steps;
	double start;
	unsigned drawn; /* lines of the live block currently on screen */
	pthread_t ticker;
	bool ticking, stop;
	bool failed; /* a step ended in error */
	pthread_cond_t wake;
};

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int progress_mode_parse(const char *s)
{
	static const char *const names[] = {"auto", "plain", "json", "quiet"};

	for (int i = 0; i < 4; i++)
		if (strcmp(s, names[i]) == 0)
			return i;
	return -1;
}

static int term_width(void)
{
	struct winsize ws;

	if (ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 20)
		return ws.ws_col;
	return 80;
}

/* One terminal line: never wraps, so the block's height is its line count. */
static void put_line(const char *prefix, const char *text, size_t len, const char *suffix)
{
	int w = term_width() - 1 - (int)strlen(prefix) - (int)strlen(suffix);

	if (w < 10)
		w = 10;
	if ((int)len > w)
		fprintf(stderr, "%s%.*s…%s\033[K\n", prefix, w - 1, text, suffix);
	else
		fprintf(stderr, "%s%.*s%s\033[K\n", prefix, (int)len, text, suffix);
}

static void tty_clear(Progress *p)
{
	if (p->drawn)
		fprintf(stderr, "\033[%uA\r\033[J", p->drawn);
	p->drawn = 0;
}

static void tty_draw(Progress *p)
{
	unsigned running = 0, done = 0;
	char head[96];

	tty_clear(p);
	for (unsigned i = 0; i < p->n_steps; i++)
		p->steps[i].done ? done++ : running++;
	snprintf(head, sizeof(head), "[+] Building %.1fs (%u/%u)", now_s() - p->start, done,
		 p->n_steps);
	put_line("", head, strlen(head), "");
	p->drawn = 1;
	for (unsigned i = 0; i < p->n_steps; i++) {
		StepState *s = &p->steps[i];
		if (s->done)
			continue;
		char pre[32], suf[32];
		snprintf(pre, sizeof(pre), " => #%u ", i + 1);
		snprintf(suf, sizeof(suf), "  %.1fs", now_s() - s->start);
		put_line(pre, s->name, strlen(s->name), suf);
		p->drawn++;
		if (s->n_tail) {
			const char *last = s->tail[(s->n_tail - 1) % TAIL_LINES];
			put_line("    ", last, strlen(last), "");
			p->drawn++;
		}
	}
	fflush(stderr);
}

static void *ticker_main(void *ud)
{
	Progress *p = ud;

	pthread_mutex_lock(&p->lock);
	while (!p->stop) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 200 * 1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&p->wake, &p->lock, &ts);
		if (!p->stop)
			tty_draw(p);
	}
	pthread_mutex_unlock(&p->lock);
	return NULL;
}

Progress *progress_new(ProgressMode mode)
{
	Progress *p = xcalloc(1, sizeof(*p));

	switch (mode) {
	case PROGRESS_AUTO:
		p->mode = isatty(STDERR_FILENO) && getenv("TERM") && strcmp(getenv("TERM"), "dumb")
			      ? OUT_TTY
			      : OUT_PLAIN;
		break;
	case PROGRESS_PLAIN:
		p->mode = OUT_PLAIN;
		break;
	case PROGRESS_JSON:
		p->mode = OUT_JSON;
		break;
	case PROGRESS_QUIET:
		p->mode = OUT_QUIET;
		break;
	}
	p->start = now_s();
	pthread_mutex_init(&p->lock, NULL);
	pthread_cond_init(&p->wake, NULL);
	if (p->mode == OUT_TTY)
		p->ticking = pthread_create(&p->ticker, NULL, ticker_main, p) == 0;
	return p;
}

void progress_free(Progress *p)
{
	if (!p)
		return;
	if (p->ticking) {
		pthread_mutex_lock(&p->lock);
		p->stop = true;
		pthread_cond_signal(&p->wake);
		pthread_mutex_unlock(&p->lock);
		pthread_join(p->ticker, NULL);
		tty_clear(p);
		unsigned done = 0;
		for (unsigned i = 0; i < p->n_steps; i++)
			done += p->steps[i].done;
		fprintf(stderr, "[+] Building %.1fs (%u/%u) %s\n", now_s() - p->start, done,
			p->n_steps,
			p->failed	     ? "ERROR"
			: done == p->n_steps ? "FINISHED"
					     : "STOPPED");
		fflush(stderr);
	}
	for (unsigned i = 0; i < p->n_steps; i++) {
		free(p->steps[i].partial);
		free(p->steps[i].name);
		for (unsigned t = 0; t < TAIL_LINES; t++)
			free(p->steps[i].tail[t]);
	}
	free(p->steps);
	pthread_cond_destroy(&p->wake);
	pthread_mutex_destroy(&p->lock);
	free(p);
}

static void emit_json(const char *event, unsigned step, const char *key, const char *value,
		      double elapsed)
{
	json_t *o = json_object();

	json_object_set_new(o, "event", json_string(event));
	if (step)
		json_object_set_new(o, "step", json_integer(step));
	if (key && value)
		json_object_set_new(o, key, json_string(value));
	if (elapsed >= 0)
		json_object_set_new(o, "elapsed_s", json_real(elapsed));
	char *s = json_dumps(o, JSON_COMPACT);
	if (s)
		fprintf(stderr, "%s\n", s);
	free(s);
	json_decref(o);
}

unsigned progress_step_begin(Progress *p, const char *name)
{
	pthread_mutex_lock(&p->lock);
	unsigned n = ++p->n_steps;

	p->steps = xrealloc(p->steps, n * sizeof(StepState));
	p->steps[n - 1] = (StepState){.start = now_s(), .name = xstrdup(name)};
	if (p->mode == OUT_PLAIN)
		fprintf(stderr, "#%u %s\n", n, name);
	else if (p->mode == OUT_JSON)
		emit_json("step", n, "name", name, -1);
	else if (p->mode == OUT_TTY)
		tty_draw(p);
	pthread_mutex_unlock(&p->lock);
	return n;
}

static void emit_line(Progress *p, unsigned step, const char *line, size_t len)
{
	StepState *s = &p->steps[step - 1];
	double t = now_s() - s->start;

	if (p->mode == OUT_PLAIN) {
		fprintf(stderr, "#%u %.3f %.*s\n", step, t, (int)len, line);
	} else if (p->mode == OUT_JSON) {
		char *l = xasprintf("%.*s", (int)len, line);
		emit_json("output", step, "line", l, t);
		free(l);
	} else if (p->mode == OUT_TTY) {
		unsigned slot = s->n_tail++ % TAIL_LINES;
		free(s->tail[slot]);
		s->tail[slot] = xasprintf("%.*s", (int)len, line);
	}
}

/* Where a piece of the len bytes at s ends so that it does not split a UTF-8 sequence (JSON
 * needs whole characters): before a sequence the bytes do not complete, else len. */
static size_t utf8_cut(const char *s, size_t len)
{
	for (size_t back = 1; back <= 3 && back <= len; back++) {
		unsigned char c = (unsigned char)s[len - back];
		if ((c & 0xC0) == 0x80)
			continue;
		size_t need = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
		return need > back && back < len ? len - back : len;
	}
	return len;
}

/* Feeds output: each byte is looked at once or twice, and a step holds at most LINE_MAX_BYTES
 * of a line; a longer line is emitted in pieces. */
static void step_feed(Progress *p, unsigned step, const char *buf, size_t len)
{
	StepState *s = &p->steps[step - 1];

	while (len > 0) {
		const char *nl = memchr(buf, '\n', len);
		size_t n = nl ? (size_t)(nl - buf) : len;
		if (!s->partial_len && nl && n <= LINE_MAX_BYTES) {
			emit_line(p, step, buf, n);
			buf += n + 1;
			len -= n + 1;
			continue;
		}
		if (!s->partial)
			s->partial = xcalloc(1, LINE_MAX_BYTES);
		size_t take = LINE_MAX_BYTES - s->partial_len;
		take = n < take ? n : take;
		memcpy(s->partial + s->partial_len, buf, take);
		s->partial_len += take;
		buf += take;
		len -= take;
		if (take == n && nl) {
			emit_line(p, step, s->partial, s->partial_len);
			s->partial_len = 0;
			buf++;
			len--;
		} else if (s->partial_len == LINE_MAX_BYTES && len > 0) {
			size_t cut = utf8_cut(s->partial, s->partial_len);
			emit_line(p, step, s->partial, cut);
			memmove(s->partial, s->partial + cut, s->partial_len - cut);
			s->partial_len -= cut;
		}
	}
}

void progress_step_output(Progress *p, unsigned step, const char *buf, size_t len)
{
	pthread_mutex_lock(&p->lock);
	if (step >= 1 && step <= p->n_steps && p->mode != OUT_QUIET)
		step_feed(p, step, buf, len);
	pthread_mutex_unlock(&p->lock);
}

/* A finished step scrolls above the live block: one line, plus its last output on error. */
static void tty_finish(Progress *p, unsigned step, bool ok, bool cached, const char *error,
		       double t)
{
	StepState *s = &p->steps[step - 1];
	char pre[48], suf[48];

	tty_clear(p);
	snprintf(pre, sizeof(pre), "%s#%u ",
		 cached ? "=> CACHED "
		 : ok	? "=> "
			: "=> ERROR ",
		 step);
	suf[0] = 0;
	if (!cached)
		snprintf(suf, sizeof(suf), "  %.1fs", t);
	put_line(pre, s->name, strlen(s->name), suf);
	if (!ok) {
		unsigned first = s->n_tail > TAIL_LINES ? s->n_tail - TAIL_LINES : 0;
		for (unsigned i = first; i < s->n_tail; i++) {
			const char *l = s->tail[i % TAIL_LINES];
			put_line("    ", l, strlen(l), "");
		}
		if (error)
			fprintf(stderr, "    %s\n", error);
	}
	tty_draw(p);
}

void progress_step_end(Progress *p, unsigned step, bool ok, bool cached, const char *error)
{
	pthread_mutex_lock(&p->lock);
	if (step == 0 || step > p->n_steps) {
		pthread_mutex_unlock(&p->lock);
		return;
	}
	StepState *s = &p->steps[step - 1];
	double t = now_s() - s->start;
	if (s->partial_len) {
		emit_line(p, step, s->partial, s->partial_len);
		s->partial_len = 0;
	}
	s->done = true;
	p->failed |= !ok;
	if (p->mode == OUT_PLAIN) {
		if (cached)
			fprintf(stderr, "#%u CACHED\n", step);
		else if (ok)
			fprintf(stderr, "#%u DONE %.1fs\n", step, t);
		else
			fprintf(stderr, "#%u ERROR: %s\n", step, error ? error : "failed");
	} else if (p->mode == OUT_JSON) {
		emit_json(cached ? "cached"
			  : ok	 ? "done"
				 : "error",
			  step, "error", ok ? NULL : error, t);
	} else if (p->mode == OUT_TTY) {
		tty_finish(p, step, ok, cached, error, t);
	}
	pthread_mutex_unlock(&p->lock);
}

void progress_note(Progress *p, const char *fmt, ...)
{
	va_list ap;

	if (p->mode == OUT_QUIET)
		return;
	va_start(ap, fmt);
	char *s = NULL;
	if (vasprintf(&s, fmt, ap) < 0)
		s = NULL;
	va_end(ap);
	if (!s)
		return;
	pthread_mutex_lock(&p->lock);
	if (p->mode == OUT_JSON) {
		emit_json("note", 0, "message", s, -1);
	} else if (p->mode == OUT_TTY) {
		tty_clear(p);
		fprintf(stderr, "%s\n", s);
		tty_draw(p);
	} else {
		fprintf(stderr, "%s\n", s);
	}
	pthread_mutex_unlock(&p->lock);
	free(s);
}
