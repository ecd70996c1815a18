/* lookup: the cost of the handshake path on its own, as rs_ocsp_get_resp
 * does it: the certificate id looked up, then a copy of the response handed
 * to mod_ssl's callback (here a memcpy into a buffer, where mod_ssl's would
 * OPENSSL_malloc and copy).
 *
 * Two implementations, measured in the same run, alternating:
 *   new  rs_shm_staple_find() and rs_shm_staple_serve(): the id index and
 *        the one shared copy, read without a lock (src/rs_shm_staple.c)
 *   old  the per-child copy this module had before (src/rs_staple.c until
 *        commit 68fa501): apr_hash_get of the certificate's entry, whose
 *        immutable malloc'd blob is handed over under an apr_thread_rwlock
 *        read lock; reproduced here as it was, so both run on the same
 *        machine at the same load
 *
 *   lookup [CALLS [REPS [DER_LEN]]]
 *     CALLS per measurement (default 2,000,000), REPS rounds (default 5;
 *     the order of old/new alternates between rounds), DER_LEN bytes per
 *     response (default 1500: a response with a delegated signer
 *     certificate; ~700 without). Prints every measurement, then the
 *     range (min-max ns per call) of each case.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <apr_general.h>
#include <apr_hash.h>
#include <apr_thread_proc.h>
#include <apr_thread_rwlock.h>

#include "rs_shm_staple.h"

#define ID_LEN 20
#define MAX_DER 16384
#define MAX_THREADS 2

/* --- old: the per-child staple, as src/rs_staple.c had it --- */

typedef struct {
    apr_time_t this_update;
    apr_time_t next_update;
    int revoked;
    apr_size_t len;
    unsigned char der[];
} blob_t;

typedef struct {
    apr_thread_rwlock_t *lock;
    blob_t *current;
} old_staple_t;

static old_staple_t *old_create(apr_pool_t *p, const unsigned char *der, apr_size_t len,
                                apr_time_t this_update, apr_time_t next_update)
{
    old_staple_t *st = apr_pcalloc(p, sizeof(*st));
    blob_t *b = malloc(sizeof(*b) + len);
    apr_thread_rwlock_create(&st->lock, p);
    b->this_update = this_update;
    b->next_update = next_update;
    b->revoked = 0;
    b->len = len;
    memcpy(b->der, der, len);
    apr_thread_rwlock_wrlock(st->lock);
    st->current = b;
    apr_thread_rwlock_unlock(st->lock);
    return st;
}

static int old_serve(old_staple_t *st, apr_time_t now, rs_staple_copy_fn *cb, void *userdata)
{
    int served = 0;
    apr_thread_rwlock_rdlock(st->lock);
    if (st->current && now < st->current->next_update) {
        cb(st->current->der, st->current->len, userdata);
        served = 1;
    }
    apr_thread_rwlock_unlock(st->lock);
    if (!served)
        cb(NULL, 0, userdata);
    return served;
}

/* --- the loop --- */

enum { OLD, NEW };
static const char *const impl_name[] = {"old", "new"};

/* the old rs_entry_t as far as the handshake went: what apr_hash_get found */
typedef struct {
    void *cert;
    char id_hex[41];
    const char *url, *vhosts;
    unsigned char *req_der;
    apr_size_t req_len;
    old_staple_t *staple;
} old_entry_t;

typedef struct {
    int impl;
    apr_hash_t *by_id;         /* old: id -> old_entry_t */
    rs_shm_staple_t *sh;
    unsigned char (*ids)[ID_LEN];
    int n;
    long calls;
    double ns;
    long served;
} run_t;

static void copy_cb(const unsigned char *der, apr_size_t len, void *userdata)
{
    if (der)
        memcpy(userdata, der, len);
}

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static void *APR_THREAD_FUNC loop(apr_thread_t *t, void *data)
{
    run_t *r = data;
    static __thread unsigned char buf[MAX_DER];
    apr_time_t when = apr_time_now();
    unsigned seed = 12345;
    double t0 = now_ns();
    long i, served = 0;
    for (i = 0; i < r->calls; i++) {
        const unsigned char *id;
        seed = seed * 1103515245u + 12345u;
        id = r->ids[(seed >> 8) % (unsigned)r->n];
        if (r->impl == OLD) {
            old_entry_t *e = apr_hash_get(r->by_id, id, ID_LEN);
            served += old_serve(e->staple, when, copy_cb, buf);
        }
        else {
            served += rs_shm_staple_serve(r->sh, rs_shm_staple_find(r->sh, id), when, copy_cb,
                                          buf);
        }
    }
    r->ns = (now_ns() - t0) / r->calls;
    r->served = served;
    if (t)
        apr_thread_exit(t, APR_SUCCESS);
    return NULL;
}

typedef struct {
    apr_hash_t *by_id;
    rs_shm_staple_t *sh;
    unsigned char (*ids)[ID_LEN];
    int n;
} set_t;

static void make_set(apr_pool_t *p, int n, apr_size_t der_len, set_t *s)
{
    unsigned char der[MAX_DER];
    apr_size_t arena = (apr_size_t)n * 4096;
    apr_time_t tu = apr_time_now(), nu = tu + apr_time_from_sec(3600);
    int i;

    s->n = n;
    s->by_id = apr_hash_make(p);
    s->ids = apr_pcalloc(p, (apr_size_t)n * ID_LEN);
    s->sh = rs_shm_staple_init(apr_pcalloc(p, rs_shm_staple_size(n, arena)), n, arena);
    memset(der, 0x30, der_len);
    /* created interleaved, as a server's certificates are: old blobs
     * between new ones in the heap, so neither gets a luckier layout */
    for (i = 0; i < n; i++) {
        old_entry_t *e = apr_pcalloc(p, sizeof(*e));
        unsigned h = (unsigned)i * 2654435761u; /* ids are SHA-1s: spread */
        memcpy(s->ids[i], &h, sizeof(h));
        memcpy(s->ids[i] + 4, &i, sizeof(i));
        s->ids[i][19] = 0xab;
        rs_shm_staple_set_id(s->sh, i, s->ids[i]);
        rs_shm_staple_set(s->sh, i, der, der_len, tu, nu, 0);
        e->staple = old_create(p, der, der_len, tu, nu);
        apr_hash_set(s->by_id, s->ids[i], ID_LEN, e);
    }
}

static double bench(apr_pool_t *p, const set_t *s, int impl, int threads, long calls)
{
    run_t runs[MAX_THREADS];
    apr_thread_t *th[MAX_THREADS];
    apr_status_t rv;
    double sum = 0;
    int i;

    for (i = 0; i < threads; i++) {
        runs[i].impl = impl;
        runs[i].by_id = s->by_id;
        runs[i].sh = s->sh;
        runs[i].ids = s->ids;
        runs[i].n = s->n;
        runs[i].calls = calls;
        apr_thread_create(&th[i], NULL, loop, &runs[i], p);
    }
    for (i = 0; i < threads; i++) {
        apr_thread_join(&rv, th[i]);
        if (runs[i].served != calls) {
            fprintf(stderr, "lookup: %s served %ld of %ld\n", impl_name[impl], runs[i].served,
                    calls);
            exit(1);
        }
        sum += runs[i].ns;
    }
    return sum / threads;
}

int main(int argc, char **argv)
{
    static const int sizes[] = {1, 10000};
    apr_pool_t *p;
    long calls = argc > 1 ? atol(argv[1]) : 2000000;
    int reps = argc > 2 ? atoi(argv[2]) : 5;
    apr_size_t der_len = argc > 3 ? (apr_size_t)atol(argv[3]) : 1500;
    double lo[2][2][MAX_THREADS], hi[2][2][MAX_THREADS]; /* [size][impl][threads-1] */
    set_t sets[2];
    int rep, z, k, t, impl;

    if (calls <= 0 || reps <= 0 || der_len == 0 || der_len > MAX_DER) {
        fprintf(stderr, "usage: lookup [CALLS [REPS [DER_LEN (1-%d)]]]\n", MAX_DER);
        return 2;
    }
    apr_initialize();
    apr_pool_create(&p, NULL);
    for (z = 0; z < 2; z++)
        make_set(p, sizes[z], der_len, &sets[z]);
    printf("lookup: %ld calls per measurement, %d rounds, %lu-byte responses\n", calls, reps,
           (unsigned long)der_len);
    for (rep = 0; rep < reps; rep++)
        for (z = 0; z < 2; z++)
            for (t = 1; t <= MAX_THREADS; t++)
                for (k = 0; k < 2; k++) {
                    double ns;
                    impl = (k + rep) % 2; /* old first in even rounds, new first in odd */
                    ns = bench(p, &sets[z], impl, t, calls);
                    printf("round %d  %s  responses=%-6d threads=%d  %.0f ns per call\n", rep + 1,
                           impl_name[impl], sizes[z], t, ns);
                    if (rep == 0 || ns < lo[z][impl][t - 1])
                        lo[z][impl][t - 1] = ns;
                    if (rep == 0 || ns > hi[z][impl][t - 1])
                        hi[z][impl][t - 1] = ns;
                }
    printf("ranges over %d rounds (ns per call, min-max):\n", reps);
    for (z = 0; z < 2; z++)
        for (t = 1; t <= MAX_THREADS; t++)
            printf("  responses=%-6d threads=%d  old %.0f-%.0f  new %.0f-%.0f\n", sizes[z], t,
                   lo[z][OLD][t - 1], hi[z][OLD][t - 1], lo[z][NEW][t - 1], hi[z][NEW][t - 1]);
    return 0;
}
