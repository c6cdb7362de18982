/* `kiln merge`: per-platform images (files, store names, images in a registry) into one index,
 * written to a file, named in the store and/or pushed to registries. */
#pragma once

#include "common/error.h"

/* kiln merge [-o OUT | -o type=registry,name=REF] [--push] [--replace] [-t NAME] IN... */
int cmd_merge(int argc, char **argv, KilnError **err);
