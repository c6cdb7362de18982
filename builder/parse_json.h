/* `kiln parse`: a parsed Dockerfile as the JSON object SPEC.md describes. */
#pragma once

#include <jansson.h>

#include "common/error.h"
#include "dockerfile.h"

/* The syntax tree as SPEC.md's `kiln parse` object:
 * {"directives": {"escape": "\\", ["syntax": "...",] ["check": "..."]},
 *  "instructions": [{"line", "end_line", "keyword", "flags", "json", "args",
 *                    "heredocs": [{"name", "content", "expand", "chomp"}], "onbuild": null|{...}}]}
 * On success *ret holds a new reference. */
int dockerfile_to_json(const Dockerfile *df, json_t **ret, KilnError **err);
