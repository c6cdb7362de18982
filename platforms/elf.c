#include "elf.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
/* Not <elf.h>: meson puts this folder first on the include path, where "elf.h" is ours. */
#include <linux/elf-em.h>

#include "common/cleanup.h"
#include "common/fdutil.h"

#ifndef EM_RISCV
#define EM_RISCV 243
#endif
#ifndef EM_LOONGARCH
#define EM_LOONGARCH 258
#endif

#define ELFCLASS32 1
#define ELFCLASS64 2
#define ELFDATA2LSB 1
#define ELFDATA2MSB 2
#define ELFOSABI_FREEBSD 9
#define PT_INTERP 3
#define SHT_ARM_ATTRIBUTES 0x70000003u
#define TAG_CPU_ARCH 6

static const unsigned char elf_magic[4] = {0x7f, 'E', 'L', 'F'};

/* Bounds for hostile headers: nothing legitimate comes close. */
#define MAX_TABLE_ENTRIES 4096
#define MAX_ATTRIBUTES_SIZE (64 * 1024)

typedef struct ElfHeader {
	int cls, data, osabi;
	uint16_t machine;
	uint64_t phoff, shoff;
	uint16_t phentsize, phnum, shentsize, shnum;
} ElfHeader;

static uint64_t read_uint(const unsigned char *p, size_t n, int data)
{
	uint64_t v = 0;

	for (size_t i = 0; i < n; i++)
		v |= (uint64_t)p[data == ELFDATA2LSB ? i : n - 1 - i] << (8 * i);
	return v;
}

static int pread_full(int fd, void *buf, size_t len, uint64_t off, size_t *ret_n)
{
	size_t done = 0;

	while (done < len) {
		ssize_t k = pread(fd, (char *)buf + done, len - done, (off_t)(off + done));
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0)
			return -errno;
		if (k == 0)
			break;
		done += (size_t)k;
	}
	*ret_n = done;
	return 0;
}

/* Names what a file that is not ELF looks like, for the error message. */
static char *describe_non_elf(const unsigned char *b, size_t n)
{
	if (n == 0)
		return xstrdup("an empty file");
	if (n >= 2 && b[0] == '#' && b[1] == '!')
		return xstrdup("a '#!' script");
	if (n >= 2 && b[0] == 0x1f && b[1] == 0x8b)
		return xstrdup("gzip data");
	if (n >= 2 && b[0] == 'P' && b[1] == 'K')
		return xstrdup("a zip archive");
	if (n >= 2 && b[0] == 'M' && b[1] == 'Z')
		return xstrdup("a PE (Windows) executable");
	if (n >= 4 && read_uint(b, 4, ELFDATA2MSB) == 0xcffaedfe)
		return xstrdup("a Mach-O executable");
	if (n < 4 && memcmp(b, elf_magic, n) == 0)
		return xasprintf("a truncated ELF header (%zu bytes)", n);
	char hex[3 * 4 + 1] = "";
	size_t len = 0;
	for (size_t i = 0; i < n && i < 4; i++)
		len += (size_t)snprintf(hex + len, sizeof(hex) - len, "%s%02x", i ? " " : "", b[i]);
	return xasprintf("data starting with %s", hex);
}

static int elf_read_header(int fd, ElfHeader *ret, KilnError **err)
{
	unsigned char b[64];
	size_t n;
	int r = pread_full(fd, b, sizeof(b), 0, &n);

	if (r < 0)
		return kiln_error_errno(err, -r, "read ELF header");
	if (n < 4 || memcmp(b, elf_magic, 4) != 0) {
		_cleanup_free_ char *what = describe_non_elf(b, n);
		return kiln_error(err, ENOEXEC, "not an ELF binary: %s", what);
	}
	size_t need = n >= 5 && b[4] == ELFCLASS32 ? 52 : 64;
	if (n < need)
		return kiln_error(err, ENOEXEC,
				  "not an ELF binary: a truncated ELF header (%zu of %zu bytes)", n,
				  need);
	if (b[4] != ELFCLASS32 && b[4] != ELFCLASS64)
		return kiln_error(err, ENOEXEC, "invalid ELF class %u", b[4]);
	if (b[5] != ELFDATA2LSB && b[5] != ELFDATA2MSB)
		return kiln_error(err, ENOEXEC, "invalid ELF byte order %u", b[5]);

	ElfHeader h = {.cls = b[4], .data = b[5], .osabi = b[7]};
	h.machine = (uint16_t)read_uint(b + 18, 2, h.data);
	if (h.cls == ELFCLASS64) {
		h.phoff = read_uint(b + 32, 8, h.data);
		h.shoff = read_uint(b + 40, 8, h.data);
		h.phentsize = (uint16_t)read_uint(b + 54, 2, h.data);
		h.phnum = (uint16_t)read_uint(b + 56, 2, h.data);
		h.shentsize = (uint16_t)read_uint(b + 58, 2, h.data);
		h.shnum = (uint16_t)read_uint(b + 60, 2, h.data);
	} else {
		h.phoff = read_uint(b + 28, 4, h.data);
		h.shoff = read_uint(b + 32, 4, h.data);
		h.phentsize = (uint16_t)read_uint(b + 42, 2, h.data);
		h.phnum = (uint16_t)read_uint(b + 44, 2, h.data);
		h.shentsize = (uint16_t)read_uint(b + 46, 2, h.data);
		h.shnum = (uint16_t)read_uint(b + 48, 2, h.data);
	}
	*ret = h;
	return 0;
}

static bool read_uleb(const unsigned char **p, const unsigned char *end, uint64_t *ret)
{
	uint64_t v = 0;

	for (unsigned shift = 0; *p < end && shift < 64; shift += 7) {
		unsigned char c = *(*p)++;
		v |= (uint64_t)(c & 0x7f) << shift;
		if (!(c & 0x80)) {
			*ret = v;
			return true;
		}
	}
	return false;
}

/* Tag_CPU_arch from the "aeabi" file attributes (ARM IHI 0045, "Build Attributes"), or -1.
 * Only the tags that precede Tag_CPU_arch in practice are skipped: Tag_CPU_raw_name (4) and
 * Tag_CPU_name (5) are strings, tags <= 32 otherwise ULEB128 values. */
static int parse_cpu_arch(const unsigned char *p, const unsigned char *end, int data)
{
	if (p >= end || *p++ != 'A')
		return -1;
	while (end - p >= 4) {
		uint64_t len = read_uint(p, 4, data);
		if (len < 4 || len > (uint64_t)(end - p))
			return -1;
		const unsigned char *sub_end = p + len, *q = p + 4;
		const unsigned char *nul = memchr(q, 0, (size_t)(sub_end - q));
		if (nul && strcmp((const char *)q, "aeabi") == 0) {
			q = nul + 1;
			/* First sub-subsection: tag 1 (whole file), 4-byte size, attributes. */
			if (sub_end - q < 5 || *q != 1)
				return -1;
			uint64_t flen = read_uint(q + 1, 4, data);
			if (flen < 5 || flen > (uint64_t)(sub_end - q))
				return -1;
			const unsigned char *a = q + 5, *a_end = q + flen;
			uint64_t tag, val;
			while (a < a_end && read_uleb(&a, a_end, &tag)) {
				if (tag == 4 || tag == 5) {
					const unsigned char *z = memchr(a, 0, (size_t)(a_end - a));
					if (!z)
						return -1;
					a = z + 1;
					continue;
				}
				if (tag > 32 || !read_uleb(&a, a_end, &val))
					return -1;
				if (tag == TAG_CPU_ARCH)
					return val > 100 ? -1 : (int)val;
			}
			return -1;
		}
		p = sub_end;
	}
	return -1;
}

static const char *arm_variant(int fd, const ElfHeader *h)
{
	if (h->shentsize < 24 || h->shnum == 0 || h->shnum > MAX_TABLE_ENTRIES)
		return "v7";
	for (uint16_t i = 0; i < h->shnum; i++) {
		unsigned char sh[24];
		size_t n;
		if (pread_full(fd, sh, sizeof(sh), h->shoff + (uint64_t)i * h->shentsize, &n) < 0 ||
		    n < sizeof(sh))
			return "v7";
		if (read_uint(sh + 4, 4, h->data) != SHT_ARM_ATTRIBUTES)
			continue;
		uint64_t off = read_uint(sh + 16, 4, h->data),
			 size = read_uint(sh + 20, 4, h->data);
		if (size == 0 || size > MAX_ATTRIBUTES_SIZE)
			return "v7";
		_cleanup_free_ unsigned char *buf = xcalloc(1, size);
		if (pread_full(fd, buf, size, off, &n) < 0 || n < size)
			return "v7";
		int arch = parse_cpu_arch(buf, buf + size, h->data);
		if (arch < 0)
			return "v7";
		if (arch <= 5) /* pre-v4 .. v5TEJ */
			return "v5";
		if (arch <= 9 || arch == 11 || arch == 12) /* v6, v6KZ, v6T2, v6K, v6-M, v6S-M */
			return "v6";
		if (arch == 10 || arch == 13) /* v7, v7E-M */
			return "v7";
		return "v8";
	}
	return "v7";
}

static const char *machine_arch(int fd, const ElfHeader *h, const char **ret_variant)
{
	bool is64 = h->cls == ELFCLASS64, le = h->data == ELFDATA2LSB;

	*ret_variant = NULL;
	switch (h->machine) {
	case EM_X86_64:
		return "amd64";
	case EM_386:
		return "386";
	case EM_AARCH64:
		return "arm64";
	case EM_ARM:
		*ret_variant = arm_variant(fd, h);
		return "arm";
	case EM_PPC64:
		return le ? "ppc64le" : "ppc64";
	case EM_S390:
		return is64 ? "s390x" : "s390";
	case EM_RISCV:
		return is64 ? "riscv64" : "riscv32";
	case EM_MIPS:
		if (is64)
			return le ? "mips64le" : "mips64";
		return le ? "mipsle" : "mips";
	case EM_LOONGARCH:
		return is64 ? "loong64" : NULL;
	default:
		return NULL;
	}
}

int elf_detect_platform(int fd, Platform *ret, KilnError **err)
{
	ElfHeader h;
	const char *variant;
	int r = elf_read_header(fd, &h, err);

	if (r < 0)
		return r;
	const char *arch = machine_arch(fd, &h, &variant);
	if (!arch)
		return kiln_error(err, ENOEXEC, "unsupported ELF machine %u (%d-bit)", h.machine,
				  h.cls == ELFCLASS64 ? 64 : 32);
	return platform_from_parts(h.osabi == ELFOSABI_FREEBSD ? "freebsd" : "linux", arch, variant,
				   ret, err);
}

int elf_is_static(int fd, bool *ret_static, KilnError **err)
{
	ElfHeader h;
	int r = elf_read_header(fd, &h, err);

	if (r < 0)
		return r;
	if (h.phnum > MAX_TABLE_ENTRIES || (h.phnum && h.phentsize < 4))
		return kiln_error(err, ENOEXEC, "invalid ELF program header table");
	for (uint16_t i = 0; i < h.phnum; i++) {
		unsigned char ph[4];
		size_t n;
		r = pread_full(fd, ph, sizeof(ph), h.phoff + (uint64_t)i * h.phentsize, &n);
		if (r < 0)
			return kiln_error_errno(err, -r, "read ELF program header");
		if (n < sizeof(ph))
			return kiln_error(err, ENOEXEC, "truncated ELF program header table");
		if (read_uint(ph, 4, h.data) == PT_INTERP) {
			*ret_static = false;
			return 0;
		}
	}
	*ret_static = true;
	return 0;
}
