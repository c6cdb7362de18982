/* ELF headers: which platform a binary is built for, and whether it needs a dynamic loader.
 * Input is untrusted (binaries from image layers): every read is bounds-checked. */
#pragma once

#include <stdbool.h>

#include "common/error.h"
#include "platforms/platform.h"

/* Reads the ELF header of fd (pread from offset 0; the file offset is not moved) and returns the
 * platform it is built for, normalised as platform_parse() would:
 *   EM_X86_64 -> linux/amd64, EM_386 -> linux/386, EM_AARCH64 -> linux/arm64,
 *   EM_ARM -> linux/arm with the variant from Tag_CPU_arch in .ARM.attributes (v5, v6, v7, v8;
 *     "v7" when the section is absent or unreadable),
 *   EM_PPC64 -> ppc64le (little endian) or ppc64, EM_S390 64-bit -> s390x (32-bit: s390),
 *   EM_RISCV -> riscv64 (32-bit: riscv32), EM_MIPS -> mips64le, mips64, mipsle, mips by class
 *     and byte order, EM_LOONGARCH 64-bit -> loong64.
 * The os is "linux" except for EI_OSABI FreeBSD ("freebsd").
 * Not an ELF file -> -ENOEXEC with an error naming what was found ("empty file", "a '#!'
 * script", "a truncated ELF header", "gzip data", ...); an ELF machine not listed above ->
 * -ENOEXEC naming the machine number. Read errors -> -errno. */
int elf_detect_platform(int fd, Platform *ret, KilnError **err);

/* Sets *ret_static to true when the ELF file in fd has no PT_INTERP program header (statically
 * linked or static-pie): such a binary, e.g. a QEMU user-mode interpreter, runs inside any root
 * without a dynamic loader or libraries. Errors as for elf_detect_platform(). */
int elf_is_static(int fd, bool *ret_static, KilnError **err);
