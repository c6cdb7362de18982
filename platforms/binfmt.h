/* Running foreign-architecture binaries: QEMU user-mode emulation through binfmt_misc.
 *
 * kiln registers its interpreters in a binfmt_misc instance private to its own user namespace
 * (Linux >= 6.7), so a build needs no host setup and changes nothing outside itself; it falls
 * back to a registration the host already has. The `C` (credentials) flag is never used: it
 * would let setuid binaries in an image run with their owner's credentials. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "common/error.h"
#include "platforms/platform.h"

/* Magic and mask length of every built-in registration (at offset 0): the ELF identification,
 * e_type and e_machine. */
#define BINFMT_MAGIC_LEN 20

typedef struct BinfmtMagic {
	const char *arch;      /* platform arch: "arm64", "arm", ... */
	const char *qemu_arch; /* QEMU's name: "aarch64", "arm", ... */
	unsigned char magic[BINFMT_MAGIC_LEN];
	unsigned char mask[BINFMT_MAGIC_LEN];
} BinfmtMagic;

/* The built-in registration table, with the values of QEMU's qemu-binfmt-conf.sh and Debian's
 * /usr/share/binfmts/qemu-*: arm64, arm (v5, v6, v7, v8: one QEMU binary), ppc64le, ppc64,
 * s390x, riscv64, 386, amd64, mips64le, loong64. *ret_n gets the number of entries. */
const BinfmtMagic *binfmt_magic_table(size_t *ret_n);

/* The table entry for p's architecture (any os), or NULL when kiln cannot emulate it. */
const BinfmtMagic *binfmt_magic_for(const Platform *p);

/* True when the host CPU executes binaries of p without emulation: same os and arch, where an
 * arm host of variant vN runs arm v5..vN; amd64 hosts run 386 (assumes the kernel has IA32
 * emulation, as every distribution kernel does); arm64 hosts run arm only when the kernel
 * accepts personality(PER_LINUX32) (CPUs without AArch32 at EL0 refuse it; probed once, on
 * arm64 builds only). The amd64 micro-architecture variants (v2..v4) are not checked. */
bool platform_runs_natively(const Platform *host, const Platform *p);

typedef enum {
	EMULATION_NATIVE,  /* the CPU runs it */
	EMULATION_PRIVATE, /* registered by kiln in its user namespace's own binfmt_misc */
	EMULATION_HOST,	   /* an enabled registration in the host's binfmt_misc */
} EmulationKind;

/* "native", "private binfmt_misc", "host binfmt_misc". */
const char *emulation_kind_to_string(EmulationKind k);

/* Finds the QEMU user-mode interpreter for p. Looks, in order, at:
 *   qemu_dir (when non-NULL): <qemuarch>-binfmt-P (flags "FP"), qemu-<qemuarch>-static and
 *     qemu-<qemuarch> (flags "F");
 *   /usr/libexec/qemu-binfmt/<qemuarch>-binfmt-P (flags "FP": Debian's qemu treats an argv[0]
 *     ending in "-binfmt-P" as preserve-argv0 mode);
 *   qemu-<qemuarch>-static in each $PATH directory, then /usr/bin (flags "F").
 * A candidate is used only when it is an executable regular file, an ELF binary that the host
 * runs natively and statically linked (a dynamic one would look for its loader inside the
 * image root). *ret_path is the path as found (not resolved: the "-binfmt-P" name matters).
 * Errors: ENOTSUP when kiln has no table entry for p; ENOENT when no candidate is usable, with a
 * message naming the platform, each path looked at and why it was not used, and "install the
 * Debian/Ubuntu package qemu-user-static". */
/* $KILN_QEMU_SEARCH_PATH, when set, replaces the whole search list with that one dir. */
int binfmt_find_interpreter(const Platform *p, const char *qemu_dir, char **ret_path,
			    char **ret_flags, KilnError **err);

/* Makes binaries of p runnable by every process of the CURRENT user namespace; call it after
 * userns_enter(), from any thread (serialised by a mutex):
 *   - the host runs p natively: EMULATION_NATIVE, nothing is changed;
 *   - else, with an interpreter from binfmt_find_interpreter(): mounts (once per process and user
 *     namespace, as a detached mount that lives as long as the process: nothing appears in any
 *     directory) the user namespace's private binfmt_misc instance and registers
 *     ":kiln-<qemuarch>:M:0:<magic>:<mask>:<interpreter>:<flags>" unless that entry exists:
 *     EMULATION_PRIVATE. In the initial user namespace this step is skipped (its instance is the
 *     host's, shared by everyone);
 *   - else (no interpreter, or the private instance cannot be mounted: EPERM, ENODEV, kernel
 *     < 6.7) an enabled entry with the F flag in /proc/sys/fs/binfmt_misc whose magic and mask
 *     match p's ELF header: EMULATION_HOST;
 *   - else an error "cannot run linux/arm64 binaries: ..." listing what was tried and
 *     "install the Debian/Ubuntu package qemu-user-static" (ENOENT; ENOTSUP when kiln has no
 *     table entry for p, or p's os is not linux). */
int binfmt_ensure(const Platform *p, const char *qemu_dir, EmulationKind *ret_kind,
		  KilnError **err);

/* For `kiln doctor` (call it OUTSIDE kiln's user namespace). One line per platform of linux/arm64,
 * linux/arm/v7, linux/ppc64le, linux/s390x, linux/riscv64 and linux/386: "PLATFORM: native",
 * "PLATFORM: private binfmt_misc, interpreter PATH (flags F)", "PLATFORM: host binfmt_misc entry
 * NAME, interpreter PATH" or "PLATFORM: not available: WHY". The private path is probed for real
 * once: kernel >= 6.7 and, in a forked child, unshare(CLONE_NEWUSER|CLONE_NEWNS) with a
 * single-id map and a binfmt_misc mount whose register file opens for writing. *ret_lines is a
 * NULL-terminated strv (free with strv_free()). */
int binfmt_doctor_report(const char *qemu_dir, char ***ret_lines, KilnError **err);
