/* Layer compression: detection, a streaming compressor that pushes output to a sink, and a
 * streaming decompressor that pulls from an fd. Output is deterministic: gzip headers carry no
 * name and mtime 0, zstd runs single-threaded. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "common/error.h"

typedef enum { COMPRESSION_NONE, COMPRESSION_GZIP, COMPRESSION_ZSTD } Compression;

/* Detects the compression from the first bytes (gzip 1f 8b, zstd 28 b5 2f fd, else NONE). */
Compression compression_detect(const void *buf, size_t len);

/* True for bzip2 ("BZh") and xz (fd 37 7a 58 5a 00) streams: not layer formats, but archives
 * that ADD extracts through libarchive's own filters. */
bool compression_is_foreign(const void *buf, size_t len);

/* "gzip", "zstd" or "none". */
const char *compression_to_string(Compression c);

/* Receives compressed output; returns < 0 (with err set) to abort. */
typedef int (*CompressSinkFn)(void *userdata, const void *buf, size_t len, KilnError **err);

typedef struct Compressor Compressor;

/* level 0 = default (gzip 6, zstd 3). COMPRESSION_NONE passes bytes through unchanged. */
int compressor_new(Compression c, int level, CompressSinkFn sink, void *userdata, Compressor **ret,
		   KilnError **err);
int compressor_write(Compressor *c, const void *buf, size_t len, KilnError **err);
/* Flushes the end of the stream to the sink; no writes afterwards. */
int compressor_finish(Compressor *c, KilnError **err);
void compressor_free(Compressor *c);
static inline void compressor_freep(Compressor **c)
{
	compressor_free(*c);
}

typedef struct Decompressor Decompressor;

/* The largest zstd window the decompressor accepts: 2^27 = 128 MiB (zstd's own default limit,
 * set explicitly so it is a decision, not a library default). A frame asking for more is
 * refused as corrupt data ("Frame requires too much memory for decoding"). */
#define ZSTD_WINDOW_LOG_MAX 27

/* Reads the first bytes of src_fd (not owned) to detect the compression. Gzip (including
 * concatenated members) and zstd are decompressed; plain and foreign (bzip2/xz) streams are
 * passed through unchanged. */
int decompressor_new(int src_fd, Decompressor **ret, KilnError **err);
Compression decompressor_compression(const Decompressor *d);
/* See compression_is_foreign(): the bytes read are still compressed. */
bool decompressor_is_foreign(const Decompressor *d);
/* Reads up to cap decompressed bytes; returns the count, 0 at the end of the stream, or < 0
 * for read errors, corrupt data and truncated streams. */
ssize_t decompressor_read(Decompressor *d, void *buf, size_t cap, KilnError **err);
void decompressor_free(Decompressor *d);
static inline void decompressor_freep(Decompressor **d)
{
	decompressor_free(*d);
}
