/* rs_shm_staple.h: the responses a server staples, once, in shared memory.
 *
 * This is all a handshake touches (docs/DESIGN.md section 2, rule 1): a
 * bounded, lock-free copy out of a segment every child maps; no lock of any
 * kind, no network, no disk. One slot per certificate says where its
 * response lies in an arena of 128-byte blocks; a response takes as many
 * contiguous blocks as it needs (0.5-3 KiB typically, up to
 * RS_MAX_RESPONSE_LEN), so the memory touched follows the responses held,
 * not a fixed maximum per slot.
 *
 * Writers (the refresher threads of all children, and the parent restoring
 * the store) are serialised by the caller (rs_shared_offer, under the
 * global mutex). Readers never lock: a per-slot sequence counter tells
 * them whether what they copied is one whole response (see rs_shm_staple.c
 * for the protocol and why a torn copy is never handed on). Expiry is
 * checked on every serve, so an expired response is never stapled even if
 * the refresher is stuck.
 *
 * No httpd types: unit-tested (test/unit_shm_staple.c, also under TSan).
 */
#ifndef RS_SHM_STAPLE_H
#define RS_SHM_STAPLE_H

#include <apr_pools.h>
#include <apr_time.h>

typedef struct rs_shm_staple_t rs_shm_staple_t;

/* The callback mod_ssl hands to the get_resp hook (ap_ssl_ocsp_copy_resp). */
typedef void rs_staple_copy_fn(const unsigned char *der, apr_size_t der_len, void *userdata);

/* Arena blocks: the unit of allocation. */
#define RS_SHM_BLOCK 128

/* Bytes of shared memory for n slots and an arena of arena_bytes (rounded
 * up to whole blocks). Pages of the arena that were never written cost no
 * memory (anonymous shared memory is allocated on first touch). */
apr_size_t rs_shm_staple_size(int n, apr_size_t arena_bytes);

/* Lays out the store in mem (size bytes from rs_shm_staple_size, zeroed
 * or not): all slots empty. Before any reader or writer. */
rs_shm_staple_t *rs_shm_staple_init(void *mem, int n, apr_size_t arena_bytes);

/* Which slot certificate id (RS_ID_LEN bytes) staples from: set for every
 * certificate after init, before any reader (by the parent, before the
 * children exist), each id once. */
apr_status_t rs_shm_staple_set_id(rs_shm_staple_t *sh, int i, const unsigned char *id);

/* The slot set for id, or -1: the handshake's lookup (never locks). */
int rs_shm_staple_find(const rs_shm_staple_t *sh, const unsigned char *id);

/* --- writers: the caller serialises them --- */

/* Installs a verified response (copied) in slot i. APR_ENOSPC: the arena
 * has no run of free blocks for it (the slot keeps what it had);
 * APR_EINVAL: i out of range or len 0 or above RS_MAX_RESPONSE_LEN. */
apr_status_t rs_shm_staple_set(rs_shm_staple_t *sh, int i, const unsigned char *der,
                               apr_size_t len, apr_time_t this_update, apr_time_t next_update,
                               int revoked);

/* --- readers: lock-free, any thread of any child --- */

/* Calls cb exactly once: with slot i's response while now < nextUpdate,
 * else with (NULL, 0) (also when no whole copy could be taken within a
 * bounded number of tries: a writer died in the middle of a write).
 * Returns 1 if a response was handed over. */
int rs_shm_staple_serve(const rs_shm_staple_t *sh, int i, apr_time_t now,
                        rs_staple_copy_fn *cb, void *userdata);

/* A copy of slot i's response (from p) with its times. APR_ENOENT if none. */
apr_status_t rs_shm_staple_copy(const rs_shm_staple_t *sh, int i, apr_pool_t *p,
                                unsigned char **pder, apr_size_t *plen,
                                apr_time_t *this_update, apr_time_t *next_update);

/* thisUpdate/nextUpdate (0 if none) and whether it says revoked. */
void rs_shm_staple_times(const rs_shm_staple_t *sh, int i, apr_time_t *this_update,
                         apr_time_t *next_update, int *revoked);

/* Arena bytes in use and reserved (for the log and the status page). */
void rs_shm_staple_usage(const rs_shm_staple_t *sh, apr_size_t *used, apr_size_t *reserved);

#endif
