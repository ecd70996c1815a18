/* lookup: the cost of the handshake path on its own, as rs_ocsp_get_resp
 * does it: an apr_hash lookup by certificate id, then rs_shm_staple_serve()
 * copying the response out of the shared store without a lock (into a
 * buffer, where mod_ssl's callback would OPENSSL_malloc and copy).
 *
 *   lookup [CALLS]   prints ns per call for 1 and 10,000 responses, 1 and 2 threads
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <apr_general.h>
#include <apr_hash.h>
#include <apr_thread_proc.h>

#include "rs_shm_staple.h"

#define ID_LEN 20
#define DER_LEN 1500 /* a response with a delegated signer certificate */

typedef struct {
    apr_hash_t *by_id;
    rs_shm_staple_t *sh;
    unsigned char (*ids)[ID_LEN];
    int n;
    long calls;
    double ns;
} run_t;

static void copy_cb(const unsigned char *der, apr_size_t len, void *userdata)
{
    memcpy(userdata, der, len);
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static void *APR_THREAD_FUNC loop(apr_thread_t *t, void *data)
{
    run_t *r = data;
    unsigned char buf[DER_LEN];
    apr_time_t when = apr_time_now();
    unsigned seed = 12345;
    double t0 = now();
    long i;
    for (i = 0; i < r->calls; i++) {
        seed = seed * 1103515245u + 12345u;
        int *index = apr_hash_get(r->by_id, r->ids[(seed >> 8) % (unsigned)r->n], ID_LEN);
        rs_shm_staple_serve(r->sh, *index, when, copy_cb, buf);
    }
    r->ns = (now() - t0) / r->calls;
    if (t)
        apr_thread_exit(t, APR_SUCCESS);
    return NULL;
}

static void bench(apr_pool_t *p, int n, int threads, long calls)
{
    apr_hash_t *by_id = apr_hash_make(p);
    unsigned char (*ids)[ID_LEN] = apr_pcalloc(p, (apr_size_t)n * ID_LEN);
    unsigned char der[DER_LEN];
    int *index = apr_palloc(p, sizeof(int) * (apr_size_t)n);
    apr_size_t arena = (apr_size_t)n * 4096;
    rs_shm_staple_t *sh = rs_shm_staple_init(apr_pcalloc(p, rs_shm_staple_size(n, arena)), n,
                                             arena);
    run_t runs[8];
    apr_thread_t *th[8];
    apr_status_t rv;
    double sum = 0;
    int i;

    memset(der, 0x30, sizeof(der));
    for (i = 0; i < n; i++) {
        memcpy(ids[i], &i, sizeof(i));
        ids[i][19] = 0xab;
        index[i] = i;
        rs_shm_staple_set(sh, i, der, sizeof(der), apr_time_now(),
                          apr_time_now() + apr_time_from_sec(3600), 0);
        apr_hash_set(by_id, ids[i], ID_LEN, &index[i]);
    }
    for (i = 0; i < threads; i++) {
        runs[i].by_id = by_id;
        runs[i].sh = sh;
        runs[i].ids = ids;
        runs[i].n = n;
        runs[i].calls = calls;
        apr_thread_create(&th[i], NULL, loop, &runs[i], p);
    }
    for (i = 0; i < threads; i++) {
        apr_thread_join(&rv, th[i]);
        sum += runs[i].ns;
    }
    printf("lookup responses=%-6d threads=%d  %.0f ns per call\n", n, threads, sum / threads);
}

int main(int argc, char **argv)
{
    apr_pool_t *p;
    long calls = argc > 1 ? atol(argv[1]) : 2000000;
    apr_initialize();
    apr_pool_create(&p, NULL);
    bench(p, 1, 1, calls);
    bench(p, 10000, 1, calls);
    bench(p, 1, 2, calls);
    bench(p, 10000, 2, calls);
    return 0;
}
