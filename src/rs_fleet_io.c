/* rs_fleet_io.c: bounded calls to the fleet cache (see rs_fleet_io.h). */
#include <string.h>

#include <apr_allocator.h>
#include <apr_thread_cond.h>
#include <apr_thread_mutex.h>
#include <apr_thread_proc.h>

#include "rs_fleet_io.h"

/* A 2 MB value planted in the cache is read whole by the provider before
 * any size check: the I/O pool gives such memory back instead of keeping
 * it for the next call. */
#define IO_MAX_FREE (256 * 1024)

struct rs_fleet_io_t {
    apr_pool_t *pool;          /* unmanaged: outlives every caller */
    apr_pool_t *call_pool;     /* cleared after every call */
    apr_thread_mutex_t *lock;
    apr_thread_cond_t *cond;   /* any change below */
    rs_fleet_io_fn *fn;
    void *baton;
    rs_fleet_io_call_t call;   /* the one call; data: buf_cap bytes, the I/O thread's */
    apr_size_t buf_cap;
    apr_status_t rv;
    apr_uint64_t handed, done; /* calls handed over / finished */
    int busy;                  /* a caller owns the call slot */
    int running;               /* the I/O thread is in fn */
    int hung;                  /* the running call overran its caller's bound */
    int abandoned;             /* ... and its caller is gone: the thread frees the slot */
    int stop;
};

static void *APR_THREAD_FUNC io_thread(apr_thread_t *thread, void *data)
{
    rs_fleet_io_t *io = data;
    (void)thread;

    apr_thread_mutex_lock(io->lock);
    for (;;) {
        while (!io->stop && io->handed == io->done)
            apr_thread_cond_wait(io->cond, io->lock);
        if (io->handed == io->done)
            break; /* stopping and idle */
        io->running = 1;
        apr_thread_mutex_unlock(io->lock);
        /* no lock held: this is the call that may never return */
        io->rv = io->fn(io->baton, &io->call, io->call_pool);
        apr_pool_clear(io->call_pool);
        apr_thread_mutex_lock(io->lock);
        io->running = 0;
        io->hung = 0;
        io->done = io->handed;
        if (io->abandoned) {
            io->abandoned = 0;
            io->busy = 0;
        }
        apr_thread_cond_broadcast(io->cond);
    }
    apr_thread_mutex_unlock(io->lock);
    return NULL;
}

apr_status_t rs_fleet_io_start(rs_fleet_io_t **pio, rs_fleet_io_fn *fn, void *baton,
                               apr_size_t cap)
{
    apr_allocator_t *allocator;
    apr_thread_mutex_t *amutex;
    apr_threadattr_t *attr;
    apr_thread_t *thread;
    apr_pool_t *pool;
    rs_fleet_io_t *io;
    apr_status_t rv;

    if ((rv = apr_allocator_create(&allocator)) != APR_SUCCESS)
        return rv;
    if ((rv = apr_pool_create_unmanaged_ex(&pool, NULL, allocator)) != APR_SUCCESS) {
        apr_allocator_destroy(allocator);
        return rv;
    }
    apr_allocator_owner_set(allocator, pool);
    apr_allocator_max_free_set(allocator, IO_MAX_FREE);
    if ((rv = apr_thread_mutex_create(&amutex, APR_THREAD_MUTEX_DEFAULT, pool)) != APR_SUCCESS)
        goto fail;
    apr_allocator_mutex_set(allocator, amutex);
    io = apr_pcalloc(pool, sizeof(*io));
    io->pool = pool;
    io->fn = fn;
    io->baton = baton;
    io->call.data = apr_palloc(pool, cap);
    io->buf_cap = cap;
    if ((rv = apr_pool_create(&io->call_pool, pool)) != APR_SUCCESS
        || (rv = apr_thread_mutex_create(&io->lock, APR_THREAD_MUTEX_DEFAULT, pool))
               != APR_SUCCESS
        || (rv = apr_thread_cond_create(&io->cond, pool)) != APR_SUCCESS
        || (rv = apr_threadattr_create(&attr, pool)) != APR_SUCCESS
        || (rv = apr_threadattr_detach_set(attr, 1)) != APR_SUCCESS
        || (rv = apr_thread_create(&thread, attr, io_thread, io, pool)) != APR_SUCCESS)
        goto fail;
    *pio = io;
    return APR_SUCCESS;
fail:
    apr_pool_destroy(pool);
    return rv;
}

/* Wait on the condition until deadline: 0 once it has passed. */
static int wait_until(rs_fleet_io_t *io, apr_time_t deadline)
{
    apr_time_t now = apr_time_now();
    if (now >= deadline)
        return 0;
    apr_thread_cond_timedwait(io->cond, io->lock, deadline - now);
    return 1;
}

apr_status_t rs_fleet_io_call(rs_fleet_io_t *io, rs_fleet_io_op_e op, const unsigned char *key,
                              apr_size_t key_len, unsigned char *value, apr_size_t *len,
                              apr_size_t cap, apr_time_t expiry, apr_interval_time_t bound)
{
    apr_time_t deadline = apr_time_now() + bound;
    apr_uint64_t ticket;
    apr_status_t rv;

    if (key_len > sizeof(io->call.key) || cap > io->buf_cap
        || (op == RS_FLEET_IO_PUT && *len > io->buf_cap))
        return APR_EINVAL;
    apr_thread_mutex_lock(io->lock);
    /* behind a call that hangs, every call would hang: fail at once */
    while (io->busy && !io->hung && !io->stop && wait_until(io, deadline))
        ;
    if (io->busy || io->stop) {
        rv = io->stop ? APR_EOF : APR_TIMEUP;
        apr_thread_mutex_unlock(io->lock);
        return rv;
    }
    io->busy = 1;
    io->call.op = op;
    memcpy(io->call.key, key, key_len);
    io->call.key_len = key_len;
    io->call.expiry = expiry;
    if (op == RS_FLEET_IO_PUT)
        memcpy(io->call.data, value, *len);
    io->call.len = op == RS_FLEET_IO_PUT ? *len : 0;
    io->call.cap = op == RS_FLEET_IO_GET ? cap : 0;
    ticket = ++io->handed;
    apr_thread_cond_broadcast(io->cond);
    while (io->done < ticket && !io->stop && wait_until(io, deadline))
        ;
    if (io->done < ticket) {
        /* the thread frees the slot whenever the call returns */
        io->hung = !io->stop;
        io->abandoned = 1;
        rv = io->stop ? APR_EOF : APR_TIMEUP;
        apr_thread_mutex_unlock(io->lock);
        return rv;
    }
    rv = io->rv;
    if (op == RS_FLEET_IO_GET && rv == APR_SUCCESS) {
        *len = io->call.len <= cap ? io->call.len : cap;
        memcpy(value, io->call.data, *len);
    }
    io->busy = 0;
    apr_thread_cond_broadcast(io->cond);
    apr_thread_mutex_unlock(io->lock);
    return rv;
}

int rs_fleet_io_hung(rs_fleet_io_t *io)
{
    int hung;
    apr_thread_mutex_lock(io->lock);
    hung = io->hung;
    apr_thread_mutex_unlock(io->lock);
    return hung;
}

void rs_fleet_io_stop(rs_fleet_io_t *io)
{
    apr_thread_mutex_lock(io->lock);
    io->stop = 1;
    apr_thread_cond_broadcast(io->cond);
    apr_thread_mutex_unlock(io->lock);
}
