/* What a build shows while it runs. Only builder/ prints; libraries report through these calls. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum { PROGRESS_AUTO, PROGRESS_PLAIN, PROGRESS_JSON, PROGRESS_QUIET } ProgressMode;

typedef struct Progress Progress;

/* Parses "auto", "plain", "json", "quiet"; returns -1 for anything else. */
int progress_mode_parse(const char *s);

/* Output goes to stderr. AUTO is a live display (running steps redrawn at the bottom, finished
 * ones scrolling above with DONE/CACHED/ERROR and times) when stderr is a terminal, else PLAIN. */
Progress *progress_new(ProgressMode mode);
void progress_free(Progress *p);

/* Starts a step; returns its number ("#3"). name: "[linux/amd64 build 3/7] RUN make". */
unsigned progress_step_begin(Progress *p, const char *name);
/* Output of a step's process, split into lines and prefixed with the step and elapsed time. */
void progress_step_output(Progress *p, unsigned step, const char *buf, size_t len);
/* Ends a step: "#3 DONE 1.2s", "#3 CACHED" or "#3 ERROR: message". */
void progress_step_end(Progress *p, unsigned step, bool ok, bool cached, const char *error);
/* A free-standing line (warnings, results). */
void progress_note(Progress *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
