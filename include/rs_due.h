/* rs_due.h: when each certificate next needs the scheduler, as a binary
 * min-heap over the certificates' indexes, kept in shared memory.
 *
 * The scheduler of the server (one child at a time, rs_leader) sleeps
 * until the earliest due time and then looks only at what is due: nothing
 * walks all certificates while nothing happens. Keys are set wherever a
 * certificate's shared state is written (under the global mutex); the
 * earliest key is mirrored in an atomic word, so a sleeping scheduler
 * learns that something became due earlier (an admin's refresh, another
 * child's result) with one load.
 *
 * No httpd types: unit-tested (test/unit_due.c).
 */
#ifndef RS_DUE_H
#define RS_DUE_H

#include <apr.h>
#include <apr_time.h>

typedef struct rs_due_t rs_due_t;

#define RS_DUE_NEVER ((apr_time_t)APR_INT64_MAX)

/* Bytes for n certificates. */
apr_size_t rs_due_size(int n);
/* Lays out the heap in mem: every certificate due at 0 (now). */
rs_due_t *rs_due_init(void *mem, int n);

/* --- under the caller's lock --- */
void rs_due_set(rs_due_t *d, int i, apr_time_t key);
apr_time_t rs_due_key(const rs_due_t *d, int i);
/* Up to max indexes whose key is <= now, into out; returns how many. */
int rs_due_collect(const rs_due_t *d, apr_time_t now, int *out, int max);

/* --- lock-free --- */
/* The earliest key (RS_DUE_NEVER if none). */
apr_time_t rs_due_next(const rs_due_t *d);

#endif
