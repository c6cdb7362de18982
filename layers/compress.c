#include "compress.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>
#include <zstd.h>

#include "common/cleanup.h"
#include "common/fdutil.h"

#define COMPRESS_BUF_SIZE (128 * 1024)

Compression compression_detect(const void *buf, size_t len)
{
	const unsigned char *b = buf;

	if (len >= 2 && b[0] == 0x1f && b[1] == 0x8b)
		return COMPRESSION_GZIP;
	if (len >= 4 && b[0] == 0x28 && b[1] == 0xb5 && b[2] == 0x2f && b[3] == 0xfd)
		return COMPRESSION_ZSTD;
	return COMPRESSION_NONE;
}

bool compression_is_foreign(const void *buf, size_t len)
{
	static const unsigned char xz[] = {0xfd, '7', 'z', 'X', 'Z', 0x00};

	if (len >= 3 && memcmp(buf, "BZh", 3) == 0)
		return true;
	return len >= sizeof(xz) && memcmp(buf, xz, sizeof(xz)) == 0;
}

const char *compression_to_string(Compression c)
{
	switch (c) {
	case COMPRESSION_GZIP:
		return "gzip";
	case COMPRESSION_ZSTD:
		return "zstd";
	case COMPRESSION_NONE:
		break;
	}
	return "none";
}

struct Compressor {
	Compression type;
	z_stream z;
	bool z_init;
	ZSTD_CCtx *zc;
	CompressSinkFn sink;
	void *userdata;
	unsigned char *out;
};

void compressor_free(Compressor *c)
{
	if (!c)
		return;
	if (c->z_init)
		deflateEnd(&c->z);
	ZSTD_freeCCtx(c->zc);
	free(c->out);
	free(c);
}

int compressor_new(Compression type, int level, CompressSinkFn sink, void *userdata,
		   Compressor **ret, KilnError **err)
{
	_cleanup_(compressor_freep) Compressor *c = calloc(1, sizeof(Compressor));

	if (!c)
		return kiln_error(err, ENOMEM, "out of memory");
	c->type = type;
	c->sink = sink;
	c->userdata = userdata;
	c->out = malloc(COMPRESS_BUF_SIZE);
	if (!c->out)
		return kiln_error(err, ENOMEM, "out of memory");
	switch (type) {
	case COMPRESSION_GZIP:
		/* windowBits 15 + 16: a gzip wrapper with mtime 0, no name, no extra field */
		if (deflateInit2(&c->z, level > 0 ? level : Z_DEFAULT_COMPRESSION, Z_DEFLATED,
				 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
			return kiln_error(err, ENOMEM, "cannot initialise gzip compressor");
		c->z_init = true;
		break;
	case COMPRESSION_ZSTD:
		c->zc = ZSTD_createCCtx();
		if (!c->zc)
			return kiln_error(err, ENOMEM, "cannot initialise zstd compressor");
		size_t zr =
		    ZSTD_CCtx_setParameter(c->zc, ZSTD_c_compressionLevel, level > 0 ? level : 3);
		if (!ZSTD_isError(zr))
			zr = ZSTD_CCtx_setParameter(c->zc, ZSTD_c_nbWorkers, 0);
		if (ZSTD_isError(zr))
			return kiln_error(err, EINVAL, "zstd: %s", ZSTD_getErrorName(zr));
		break;
	case COMPRESSION_NONE:
		break;
	}
	*ret = TAKE_PTR(c);
	return 0;
}

static int gzip_run(Compressor *c, int flush, KilnError **err)
{
	for (;;) {
		c->z.next_out = c->out;
		c->z.avail_out = COMPRESS_BUF_SIZE;
		int zr = deflate(&c->z, flush);
		if (zr != Z_OK && zr != Z_STREAM_END && zr != Z_BUF_ERROR)
			return kiln_error(err, EIO, "gzip: %s",
					  c->z.msg ? c->z.msg : "deflate failed");
		size_t n = COMPRESS_BUF_SIZE - c->z.avail_out;
		if (n > 0) {
			int r = c->sink(c->userdata, c->out, n, err);
			if (r < 0)
				return r;
		}
		if (flush == Z_FINISH ? zr == Z_STREAM_END : (c->z.avail_in == 0 && n == 0))
			return 0;
	}
}

static int zstd_run(Compressor *c, ZSTD_inBuffer *in, ZSTD_EndDirective mode, KilnError **err)
{
	for (;;) {
		ZSTD_outBuffer out = {c->out, COMPRESS_BUF_SIZE, 0};
		size_t left = ZSTD_compressStream2(c->zc, &out, in, mode);
		if (ZSTD_isError(left))
			return kiln_error(err, EIO, "zstd: %s", ZSTD_getErrorName(left));
		if (out.pos > 0) {
			int r = c->sink(c->userdata, c->out, out.pos, err);
			if (r < 0)
				return r;
		}
		if (mode == ZSTD_e_end ? left == 0 : in->pos == in->size)
			return 0;
	}
}

int compressor_write(Compressor *c, const void *buf, size_t len, KilnError **err)
{
	if (len == 0)
		return 0;
	switch (c->type) {
	case COMPRESSION_GZIP:
		c->z.next_in = (Bytef *)buf;
		c->z.avail_in = (uInt)len;
		return gzip_run(c, Z_NO_FLUSH, err);
	case COMPRESSION_ZSTD: {
		ZSTD_inBuffer in = {buf, len, 0};
		return zstd_run(c, &in, ZSTD_e_continue, err);
	}
	case COMPRESSION_NONE:
		break;
	}
	return c->sink(c->userdata, buf, len, err);
}

int compressor_finish(Compressor *c, KilnError **err)
{
	switch (c->type) {
	case COMPRESSION_GZIP:
		c->z.next_in = NULL;
		c->z.avail_in = 0;
		return gzip_run(c, Z_FINISH, err);
	case COMPRESSION_ZSTD: {
		ZSTD_inBuffer in = {NULL, 0, 0};
		return zstd_run(c, &in, ZSTD_e_end, err);
	}
	case COMPRESSION_NONE:
		break;
	}
	return 0;
}

struct Decompressor {
	int fd;
	Compression type;
	bool foreign;
	unsigned char *in;
	size_t in_pos, in_len;
	bool in_eof;
	z_stream z;
	bool z_init;
	bool member_end;
	ZSTD_DCtx *zd;
	size_t zstd_hint; /* last ZSTD_decompressStream() result: 0 = frame complete */
};

void decompressor_free(Decompressor *d)
{
	if (!d)
		return;
	if (d->z_init)
		inflateEnd(&d->z);
	ZSTD_freeDCtx(d->zd);
	free(d->in);
	free(d);
}

/* Appends to the input buffer (compacting it first); sets in_eof at the end of the fd. */
static int input_fill(Decompressor *d, KilnError **err)
{
	if (d->in_eof)
		return 0;
	if (d->in_pos > 0) {
		memmove(d->in, d->in + d->in_pos, d->in_len - d->in_pos);
		d->in_len -= d->in_pos;
		d->in_pos = 0;
	}
	for (;;) {
		ssize_t n = read(d->fd, d->in + d->in_len, COMPRESS_BUF_SIZE - d->in_len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return kiln_error_errno(err, errno, "read layer");
		if (n == 0)
			d->in_eof = true;
		d->in_len += (size_t)n;
		return 0;
	}
}

int decompressor_new(int src_fd, Decompressor **ret, KilnError **err)
{
	_cleanup_(decompressor_freep) Decompressor *d = calloc(1, sizeof(Decompressor));
	int r;

	if (!d || !(d->in = malloc(COMPRESS_BUF_SIZE)))
		return kiln_error(err, ENOMEM, "out of memory");
	d->fd = src_fd;
	/* A pipe may hand over fewer bytes than a magic number at a time. */
	while (d->in_len < 6 && !d->in_eof)
		if ((r = input_fill(d, err)) < 0)
			return r;
	d->type = compression_detect(d->in, d->in_len);
	d->foreign = compression_is_foreign(d->in, d->in_len);
	if (d->type == COMPRESSION_GZIP) {
		if (inflateInit2(&d->z, 15 + 16) != Z_OK)
			return kiln_error(err, ENOMEM, "cannot initialise gzip decompressor");
		d->z_init = true;
	} else if (d->type == COMPRESSION_ZSTD) {
		d->zd = ZSTD_createDCtx();
		if (!d->zd)
			return kiln_error(err, ENOMEM, "cannot initialise zstd decompressor");
		/* A frame may ask for a window up to 2 GiB (--long=31) that the decoder would
		 * allocate: cap it so a hostile blob cannot take that much memory. */
		size_t zr = ZSTD_DCtx_setParameter(d->zd, ZSTD_d_windowLogMax, ZSTD_WINDOW_LOG_MAX);
		if (ZSTD_isError(zr))
			return kiln_error(err, EINVAL, "zstd: %s", ZSTD_getErrorName(zr));
	}
	*ret = TAKE_PTR(d);
	return 0;
}

Compression decompressor_compression(const Decompressor *d)
{
	return d->type;
}

bool decompressor_is_foreign(const Decompressor *d)
{
	return d->foreign;
}

static ssize_t read_plain(Decompressor *d, void *buf, size_t cap, KilnError **err)
{
	if (d->in_pos == d->in_len) {
		int r = input_fill(d, err);
		if (r < 0)
			return r;
	}
	size_t n = d->in_len - d->in_pos;
	if (n > cap)
		n = cap;
	memcpy(buf, d->in + d->in_pos, n);
	d->in_pos += n;
	return (ssize_t)n;
}

static ssize_t read_gzip(Decompressor *d, void *buf, size_t cap, KilnError **err)
{
	int r;

	for (;;) {
		if (d->in_pos == d->in_len && (r = input_fill(d, err)) < 0)
			return r;
		if (d->member_end) {
			if (d->in_pos == d->in_len)
				return 0;
			/* Concatenated gzip members form one stream (RFC 1952 2.2). */
			if (d->in[d->in_pos] != 0x1f)
				return kiln_error(err, EBADMSG,
						  "corrupt gzip data: trailing garbage");
			if (inflateReset(&d->z) != Z_OK)
				return kiln_error(err, EBADMSG, "corrupt gzip data");
			d->member_end = false;
		}
		d->z.next_in = d->in + d->in_pos;
		d->z.avail_in = (uInt)(d->in_len - d->in_pos);
		d->z.next_out = buf;
		d->z.avail_out = (uInt)cap;
		int zr = inflate(&d->z, Z_NO_FLUSH);
		d->in_pos = d->in_len - d->z.avail_in;
		size_t produced = cap - d->z.avail_out;
		if (zr == Z_STREAM_END) {
			d->member_end = true;
		} else if (zr == Z_BUF_ERROR) {
			if (produced == 0 && d->in_pos == d->in_len && d->in_eof)
				return kiln_error(err, EBADMSG, "truncated gzip data");
		} else if (zr != Z_OK) {
			return kiln_error(err, EBADMSG, "corrupt gzip data: %s",
					  d->z.msg ? d->z.msg : "inflate failed");
		}
		if (produced > 0)
			return (ssize_t)produced;
	}
}

static ssize_t read_zstd(Decompressor *d, void *buf, size_t cap, KilnError **err)
{
	int r;

	for (;;) {
		if (d->in_pos == d->in_len && (r = input_fill(d, err)) < 0)
			return r;
		bool at_end = d->in_pos == d->in_len && d->in_eof;
		ZSTD_inBuffer in = {d->in, d->in_len, d->in_pos};
		ZSTD_outBuffer out = {buf, cap, 0};
		size_t zr = ZSTD_decompressStream(d->zd, &out, &in);
		if (ZSTD_isError(zr))
			return kiln_error(err, EBADMSG, "corrupt zstd data: %s",
					  ZSTD_getErrorName(zr));
		bool progress = in.pos != d->in_pos || out.pos > 0;
		d->in_pos = in.pos;
		/* With no input left, zstd answers the next frame's header size: keep the hint
		 * from the last call that did something. */
		if (progress)
			d->zstd_hint = zr;
		if (out.pos > 0)
			return (ssize_t)out.pos;
		if (at_end) {
			if (d->zstd_hint != 0)
				return kiln_error(err, EBADMSG, "truncated zstd data");
			return 0;
		}
	}
}

ssize_t decompressor_read(Decompressor *d, void *buf, size_t cap, KilnError **err)
{
	if (cap == 0)
		return 0;
	switch (d->type) {
	case COMPRESSION_GZIP:
		return read_gzip(d, buf, cap, err);
	case COMPRESSION_ZSTD:
		return read_zstd(d, buf, cap, err);
	case COMPRESSION_NONE:
		break;
	}
	return read_plain(d, buf, cap, err);
}
