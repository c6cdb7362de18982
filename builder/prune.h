/* Keeping a store healthy: garbage collection (`kiln prune`), a full check (`kiln doctor
 * --verify`) and the housekeeping a build does when it starts.
 *
 * Concurrency: every process holds ROOT/gc.lock shared while its store is open (store_open());
 * prune_run() converts it to exclusive, so it runs alone and may remove every temporary file.
 * Under the shared lock only what provably belongs to a dead process is removed: a process owns
 * ROOT/work/<pid>/ and snapshots/.tmp-<pid>-* while it holds ROOT/work/<pid>.lock
 * (store_work_acquire()). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "common/error.h"
#include "layers/store.h"

/* Parses a storage size for --keep-storage: a non-negative number (decimal fraction allowed)
 * with an optional unit B, K/KB/KiB, M/MB/MiB, G/GB/GiB, T/TB/TiB, any case; units are
 * powers of 1024, as in `docker builder prune --keep-storage`. "0", "500MB", "10GB", "1.5g".
 * Errors are KILN_EUSAGE naming the string. */
int prune_size_parse(const char *s, uint64_t *ret, KilnError **err);
/* n bytes for people: "812 B", "1.5 MiB" (binary units, one decimal). */
void prune_size_format(uint64_t n, char out[32]);

/* Build-start housekeeping, under the shared gc lock: removes ROOT/work/<pid>/ and
 * snapshots/.tmp-<pid>-* of every process whose work lock is not held (a build killed before
 * it could clean up) and snapshots/.del-* of an interrupted prune. Best effort: what cannot be
 * removed now is left for the next build or prune. Returns how many entries it removed. */
size_t prune_sweep_dead(Store *s);

/* Snapshot files carry the ids of the user namespace map they were unpacked under (as root, a
 * range kiln picks; rootless, the caller's subordinate range). When ROOT/idmap records another
 * map than map_text (userns_map_text()), every snapshot is removed (each is unpacked again from
 * its blob when needed) and map_text is recorded. Builds with different maps must not share a
 * root at the same time. */
int prune_snapshots_remapped(Store *s, const char *map_text, KilnError **err);

typedef struct PruneOptions {
	bool all;	       /* drop every cache entry */
	bool keep_storage_set; /* evict cache entries, least recently used first, until ... */
	uint64_t keep_storage; /* ... blobs + snapshots use at most this many bytes */
} PruneOptions;

typedef struct PruneReport {
	size_t blobs, snapshots, cache_entries, cache_slots, temps; /* removed */
	uint64_t blob_bytes, snapshot_bytes, temp_bytes;	    /* removed, disk usage */
	size_t stale_cache_entries; /* of cache_entries: damaged or pointing at a missing blob */
	size_t diffid_records;	    /* removed with their blobs (store_diffid_prune()) */
	size_t kept_blobs, kept_snapshots, kept_cache_entries;
	uint64_t kept_bytes; /* blobs + snapshots left */
} PruneReport;

/* Garbage collection. Takes the store's gc lock exclusive (waits for running builds), then
 * removes: everything in ROOT/tmp and ROOT/work, snapshot temps, leftover *.tmp-* files of
 * atomic writes; cache entries that are damaged or name a missing blob, those evicted by
 * options (least recently used first, by file mtime; slots last written at or before the last
 * evicted entry go with them); blobs reachable neither from an index.json descriptor (indexes,
 * manifests, configs, layers, nested indexes) nor from a kept cache entry; snapshots whose
 * diff_id no reachable config or kept cache entry names; the verified diff_ids of removed blobs
 * (store_diffid_prune()). Snapshots are renamed to .del-* before they are deleted, so an
 * interrupted prune never leaves a partial snapshot under its name. Fails without removing any blob
 * when a reachable index, manifest or config cannot be parsed (the store is damaged: see
 * prune_verify()). */
int prune_run(Store *s, const PruneOptions *o, PruneReport *ret, KilnError **err);

/* Prints what prune_run() removed and kept, one line each. */
void prune_report_print(const PruneReport *r, FILE *f);

typedef struct VerifyReport {
	size_t blobs;	     /* re-hashed */
	uint64_t blob_bytes; /* their disk usage */
	size_t names;	     /* index.json descriptors */
	size_t reachable;    /* distinct blobs reachable from them */
	size_t cache_entries, stale_cache_entries;
	size_t snapshots;
	size_t temps;	   /* temporary files and dirs (running or interrupted writers) */
	size_t not_pulled; /* blobs of platforms a partial pull left out (layers/registry_pull.h) */
	char **damage;	   /* NULL-terminated; each names the digest or path and what is wrong */
} VerifyReport;

void verify_report_done(VerifyReport *r);

/* `kiln doctor --verify`: re-hashes every blob (its name must be the sha256 of its bytes),
 * parses index.json and checks that every blob its descriptors reach exists with the size the
 * descriptor gives and (indexes, manifests, configs) parses (except, below a partially pulled
 * image, the platforms that were not pulled: counted as not_pulled); counts cache entries whose
 * blob is missing or that do not parse as stale (harmless: a build treats them as misses) and
 * temporary files (harmless). Damage goes to ret->damage; returns < 0 only when the check itself
 * could not run. Read-only; runs beside builds. */
int prune_verify(Store *s, VerifyReport *ret, KilnError **err);

/* Prints the counts and each damaged item ("damaged: ..."), then "store is clean" or
 * "N problems found". */
void verify_report_print(const VerifyReport *r, const char *root, FILE *f);
