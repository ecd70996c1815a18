/* rs_fleet_io.h: calls to the fleet cache, each bounded in time.
 *
 * mod_socache_memcache sets no read timeout, and mod_socache_redis's
 * RedisTimeout ends up as days (README, "A fleet"): a frozen memcached or
 * Redis accepts the connection and never answers, and a thread that calls
 * the provider waits for good. A child waiting for such a thread never
 * exits, and its scoreboard slot never frees.
 *
 * So no module thread calls the provider. One I/O thread per child does,
 * one call at a time; a caller hands its call over and waits at most its
 * bound, then gives up (the cache is taken for down). The I/O thread is
 * detached and never joined: a call that hangs stays behind with it until
 * the cache answers or the process exits. Everything it touches is its
 * own: the call (key, value buffer) is copied in and out, and its pool is
 * unmanaged (nobody destroys it under the thread) with an allocator of its
 * own that has a mutex.
 *
 * APR threads only, no httpd: the unit tests hang the call on purpose.
 */
#ifndef RS_FLEET_IO_H
#define RS_FLEET_IO_H

#include <apr_pools.h>
#include <apr_time.h>

#define RS_FLEET_IO_KEY_MAX 64

typedef enum { RS_FLEET_IO_GET, RS_FLEET_IO_PUT, RS_FLEET_IO_REMOVE } rs_fleet_io_op_e;

/* One call as the I/O thread sees it. For GET, data has room for cap bytes
 * and len is set to what was read; for PUT, data/len is the value. */
typedef struct {
    rs_fleet_io_op_e op;
    unsigned char key[RS_FLEET_IO_KEY_MAX];
    apr_size_t key_len;
    unsigned char *data;
    apr_size_t len, cap;
    apr_time_t expiry;
} rs_fleet_io_call_t;

/* Runs in the I/O thread; p is cleared after every call. */
typedef apr_status_t rs_fleet_io_fn(void *baton, rs_fleet_io_call_t *call, apr_pool_t *p);

typedef struct rs_fleet_io_t rs_fleet_io_t;

/* cap: the largest value a call carries. Allocates nothing from any pool
 * of the caller's: the I/O state outlives whoever started it. */
apr_status_t rs_fleet_io_start(rs_fleet_io_t **io, rs_fleet_io_fn *fn, void *baton,
                               apr_size_t cap);

/* Hand one call to the I/O thread and wait at most bound for it, waiting
 * for a call of another thread included. APR_TIMEUP when the bound passed
 * or a call of an earlier caller still hangs (then at once); APR_EOF once
 * stopped; APR_EINVAL when
 * key or value do not fit; otherwise what fn returned. For GET, value must
 * have room for cap bytes; *len is what was read. */
apr_status_t rs_fleet_io_call(rs_fleet_io_t *io, rs_fleet_io_op_e op, const unsigned char *key,
                              apr_size_t key_len, unsigned char *value, apr_size_t *len,
                              apr_size_t cap, apr_time_t expiry, apr_interval_time_t bound);

/* A call overran its bound and has not returned yet. */
int rs_fleet_io_hung(rs_fleet_io_t *io);

/* Calls fail with APR_EOF from now on, those waiting included (a child
 * that exits does not wait for the cache); the I/O thread ends once it is
 * idle. Never waits for it. */
void rs_fleet_io_stop(rs_fleet_io_t *io);

#endif
