/* rs_staple.c: per-child served responses (see rs_staple.h). */
#include <stdlib.h>
#include <string.h>

#include <apr_strings.h>
#include <apr_thread_rwlock.h>

#include "rs_sched.h"
#include "rs_staple.h"

/* Immutable once installed: readers never see a half-written response. */
typedef struct {
    apr_time_t this_update;
    apr_time_t next_update;
    int revoked;
    apr_size_t len;
    unsigned char der[];
} blob_t;

struct rs_staple_t {
    apr_thread_rwlock_t *lock;
    blob_t *current;
};

static apr_status_t staple_cleanup(void *data)
{
    rs_staple_t *st = data;
    free(st->current);
    st->current = NULL;
    return APR_SUCCESS;
}

apr_status_t rs_staple_create(rs_staple_t **pstaple, apr_pool_t *p)
{
    rs_staple_t *st = apr_pcalloc(p, sizeof(*st));
    apr_status_t rv = apr_thread_rwlock_create(&st->lock, p);
    if (rv != APR_SUCCESS)
        return rv;
    /* registered after the lock's own cleanup, so it runs before it */
    apr_pool_cleanup_register(p, st, staple_cleanup, apr_pool_cleanup_null);
    *pstaple = st;
    return APR_SUCCESS;
}

static blob_t *make_blob(const unsigned char *der, apr_size_t len, apr_time_t this_update,
                         apr_time_t next_update, int revoked)
{
    blob_t *b = malloc(sizeof(*b) + len);
    if (!b)
        return NULL;
    b->this_update = this_update;
    b->next_update = next_update;
    b->revoked = revoked;
    b->len = len;
    memcpy(b->der, der, len);
    return b;
}

apr_status_t rs_staple_set(rs_staple_t *st, const unsigned char *der, apr_size_t len,
                           apr_time_t this_update, apr_time_t next_update, int revoked)
{
    blob_t *b = make_blob(der, len, this_update, next_update, revoked), *old;
    if (!b)
        return APR_ENOMEM;
    apr_thread_rwlock_wrlock(st->lock);
    old = st->current;
    st->current = b;
    apr_thread_rwlock_unlock(st->lock);
    free(old);
    return APR_SUCCESS;
}

int rs_staple_offer(rs_staple_t *st, const unsigned char *der, apr_size_t len,
                    apr_time_t this_update, apr_time_t next_update, int revoked, apr_time_t now)
{
    blob_t *b = make_blob(der, len, this_update, next_update, revoked), *old;
    int taken;
    if (!b)
        return 0;
    apr_thread_rwlock_wrlock(st->lock);
    old = st->current;
    /* compared under the write lock: a fetch and a pickup from the cache
     * racing in two threads cannot put the older response back */
    taken = rs_sched_should_replace(old ? old->this_update : 0, old ? old->next_update : 0,
                                    this_update, next_update, now);
    if (taken)
        st->current = b;
    apr_thread_rwlock_unlock(st->lock);
    free(taken ? old : b);
    return taken;
}

int rs_staple_serve(rs_staple_t *st, apr_time_t now, rs_staple_copy_fn *cb, void *userdata)
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

apr_status_t rs_staple_copy(rs_staple_t *st, apr_pool_t *p, unsigned char **pder,
                            apr_size_t *plen, apr_time_t *this_update, apr_time_t *next_update)
{
    apr_status_t rv = APR_ENOENT;
    apr_thread_rwlock_rdlock(st->lock);
    if (st->current) {
        *pder = apr_pmemdup(p, st->current->der, st->current->len);
        *plen = st->current->len;
        *this_update = st->current->this_update;
        *next_update = st->current->next_update;
        rv = APR_SUCCESS;
    }
    apr_thread_rwlock_unlock(st->lock);
    return rv;
}

void rs_staple_times(rs_staple_t *st, apr_time_t *this_update, apr_time_t *next_update)
{
    apr_thread_rwlock_rdlock(st->lock);
    *this_update = st->current ? st->current->this_update : 0;
    *next_update = st->current ? st->current->next_update : 0;
    apr_thread_rwlock_unlock(st->lock);
}

int rs_staple_revoked(rs_staple_t *st)
{
    int revoked;
    apr_thread_rwlock_rdlock(st->lock);
    revoked = st->current ? st->current->revoked : 0;
    apr_thread_rwlock_unlock(st->lock);
    return revoked;
}
