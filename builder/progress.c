#include "progress.h"

#include <jansson.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/fdutil.h"

typedef struct StepState {
	double start;
	char *partial; /* an output line not ended by '\n' yet */
	size_t partial_len;
} StepState;

/* Platform passes run in threads: every entry point holds the lock. */
struct Progress {
	pthread_mutex_t lock;
	ProgressMode mode;
	unsigned n_steps;
	StepState *steps;
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

Progress *progress_new(ProgressMode mode)
{
	Progress *p = xcalloc(1, sizeof(*p));

	p->mode = mode == PROGRESS_AUTO ? PROGRESS_PLAIN : mode;
	pthread_mutex_init(&p->lock, NULL);
	return p;
}

void progress_free(Progress *p)
{
	if (!p)
		return;
	for (unsigned i = 0; i < p->n_steps; i++)
		free(p->steps[i].partial);
	free(p->steps);
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
	p->steps[n - 1] = (StepState){.start = now_s()};
	if (p->mode == PROGRESS_PLAIN)
		fprintf(stderr, "#%u %s\n", n, name);
	else if (p->mode == PROGRESS_JSON)
		emit_json("step", n, "name", name, -1);
	pthread_mutex_unlock(&p->lock);
	return n;
}

static void emit_line(Progress *p, unsigned step, const char *line, size_t len)
{
	double t = now_s() - p->steps[step - 1].start;

	if (p->mode == PROGRESS_PLAIN) {
		fprintf(stderr, "#%u %.3f %.*s\n", step, t, (int)len, line);
	} else if (p->mode == PROGRESS_JSON) {
		char *s = xasprintf("%.*s", (int)len, line);
		emit_json("output", step, "line", s, t);
		free(s);
	}
}

void progress_step_output(Progress *p, unsigned step, const char *buf, size_t len)
{
	pthread_mutex_lock(&p->lock);
	if (step == 0 || step > p->n_steps || p->mode == PROGRESS_QUIET) {
		pthread_mutex_unlock(&p->lock);
		return;
	}
	StepState *s = &p->steps[step - 1];
	s->partial = xrealloc(s->partial, s->partial_len + len + 1);
	memcpy(s->partial + s->partial_len, buf, len);
	s->partial_len += len;
	size_t start = 0;
	for (size_t i = 0; i < s->partial_len; i++)
		if (s->partial[i] == '\n') {
			emit_line(p, step, s->partial + start, i - start);
			start = i + 1;
		}
	memmove(s->partial, s->partial + start, s->partial_len - start);
	s->partial_len -= start;
	pthread_mutex_unlock(&p->lock);
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
	if (p->mode == PROGRESS_PLAIN) {
		if (cached)
			fprintf(stderr, "#%u CACHED\n", step);
		else if (ok)
			fprintf(stderr, "#%u DONE %.1fs\n", step, t);
		else
			fprintf(stderr, "#%u ERROR: %s\n", step, error ? error : "failed");
	} else if (p->mode == PROGRESS_JSON) {
		emit_json(cached ? "cached"
			  : ok	 ? "done"
				 : "error",
			  step, "error", ok ? NULL : error, t);
	}
	pthread_mutex_unlock(&p->lock);
}

void progress_note(Progress *p, const char *fmt, ...)
{
	va_list ap;

	if (p->mode == PROGRESS_QUIET)
		return;
	va_start(ap, fmt);
	char *s = NULL;
	if (vasprintf(&s, fmt, ap) < 0)
		s = NULL;
	va_end(ap);
	if (!s)
		return;
	pthread_mutex_lock(&p->lock);
	if (p->mode == PROGRESS_JSON)
		emit_json("note", 0, "message", s, -1);
	else
		fprintf(stderr, "%s\n", s);
	pthread_mutex_unlock(&p->lock);
	free(s);
}
