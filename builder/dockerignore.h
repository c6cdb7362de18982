/* .dockerignore matching with moby/patternmatcher semantics: Go filepath.Match syntax plus
 * `**`, `!` exceptions, last match wins, a match on a parent directory excludes its contents. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "common/error.h"

typedef struct DockerIgnore DockerIgnore;

/* Parses .dockerignore text: lines starting with '#' are comments, whitespace is trimmed,
 * blank lines skipped, a leading '!' makes an exception, patterns are cleaned like Go's
 * filepath.Clean and a leading '/' is dropped. A malformed pattern (unclosed '[', trailing
 * escape, lone '!') is an error naming its line, and so is a pattern past
 * DOCKERIGNORE_MAX_PATTERNS (every context path is matched against every pattern). */
#define DOCKERIGNORE_MAX_PATTERNS 4096
int dockerignore_parse(const char *data, size_t len, DockerIgnore **ret, KilnError **err);
void dockerignore_free(DockerIgnore *di);
static inline void dockerignore_freep(DockerIgnore **di)
{
	dockerignore_free(*di);
}

/* path: relative to the context root, '/'-separated, no leading "./" or "/". True if excluded. */
bool dockerignore_excluded(const DockerIgnore *di, const char *path);

/* True if some `!` exception could re-include something below the excluded directory dirpath
 * (so a walker must descend into it instead of skipping it). May err on the side of true. */
bool dockerignore_may_include_below(const DockerIgnore *di, const char *dirpath);
