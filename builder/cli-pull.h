/* `kiln pull`: an image from a registry into the store, and optionally into an archive to carry
 * into an air-gapped network. */
#pragma once

#include "common/error.h"

/* kiln pull [--platform LIST | --all-platforms] [-o type=oci,dest=FILE] [--jobs N]
 *           [--root DIR] [-q] [--tls-ca FILE] [--registry-mirror DOMAIN=MIRROR] REF */
int cmd_pull(int argc, char **argv, KilnError **err);
