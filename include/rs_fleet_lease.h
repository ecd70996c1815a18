/* rs_fleet_lease.h: which server of a fleet fetches a due certificate.
 *
 * The fleet's cache (memcached or Redis through ap_socache) has get, set
 * and delete, but no compare-and-set, so the fetch lease is Fischer's timed
 * mutual exclusion: read the lease; if nobody holds it, write ours within
 * `late` of the read; wait longer than `late`; read it back; still ours:
 * fetch. Two servers that wrote at the same moment both read back the one
 * written last. It is safe as long as every server's write lands within
 * `late` of its read. A server that sees its own write land later cannot
 * tell whether it overwrote a lease another server had already read back
 * as its own, so it does not fetch, and looks again once that server would
 * have published.
 *
 * The cache, the clock and sleeping are callbacks: no httpd, no network, so
 * the unit tests play the interleavings of several servers.
 */
#ifndef RS_FLEET_LEASE_H
#define RS_FLEET_LEASE_H

#include <apr_time.h>
#include "rs_sched.h"

/* A lease write may land this long after its read, plus twice the
 * server's usual read-to-write time (a distant cache is slower, not
 * stalled). */
#define RS_LEASE_LATE apr_time_from_msec(100)

/* How far a peer's clock may run ahead before its leases are taken for
 * bogus (NTP keeps a fleet within milliseconds). */
#define RS_LEASE_CLOCK_SLACK apr_time_from_sec(2)

/* memcached and Redis (as used through ap_socache) have no
 * authentication, and a peer's clock may be an hour off: a lease is only
 * believed while it ends no later than a lease written now could
 * (now + hold). Anything else would stop the whole fleet from fetching
 * until a date someone else chose. */
int rs_fleet_lease_plausible(apr_time_t until, apr_time_t now, apr_interval_time_t hold);

/* Until when a server holds the lease after its fetch failed: at most a
 * lease's length, not until its own next retry (which may be an hour
 * away): a failure that is the server's own (its network, its crash) must
 * not hold the fleet back longer than that. */
apr_time_t rs_fleet_lease_after_failure(apr_time_t now, apr_time_t retry_at,
                                        apr_interval_time_t hold);

typedef struct {
    void *baton;
    /* The fleet's response for the certificate: APR_SUCCESS with *res
     * (verified), APR_NOTFOUND (none, or it does not verify), anything
     * else: the cache failed. */
    apr_status_t (*response)(void *baton, apr_time_t now, rs_ocsp_result_t *res);
    /* APR_SUCCESS with owner and until, APR_NOTFOUND, or a cache failure */
    apr_status_t (*lease_get)(void *baton, apr_uint64_t *owner, apr_time_t *until);
    apr_status_t (*lease_put)(void *baton, apr_uint64_t owner, apr_time_t until);
    void (*lease_remove)(void *baton);
    /* this server's scheduling state for the certificate */
    void (*state)(void *baton, rs_state_t *st);
    apr_time_t (*now)(void *baton);
    /* sleep for t; nonzero if the child is stopping */
    int (*sleep)(void *baton, apr_interval_time_t t);
} rs_fleet_lease_ops_t;

typedef struct {
    apr_uint64_t me;                /* this child's lease token */
    apr_interval_time_t hold;       /* a lease is written for this long */
    apr_interval_time_t fetch_max;  /* a fetch takes at most this (responder timeout) */
    apr_interval_time_t usual_gap;  /* this server's usual read-to-write time */
    apr_interval_time_t spread;     /* random part of the settle, 0..100 ms */
} rs_fleet_lease_args_t;

typedef struct {
    rs_fleet_action_e action;
    apr_time_t wait_until;          /* RS_FLEET_WAIT: when to look again */
    /* RS_FLEET_ADOPT: the fleet's response, from the last response() call */
    rs_ocsp_result_t res;
    apr_interval_time_t gap;        /* measured read-to-write time; 0 if nothing written */
    apr_interval_time_t late;       /* the bound it was held to */
    apr_time_t bogus_until;         /* a lease found and ignored (not plausible), or 0 */
} rs_fleet_lease_t;

/* Take the fleet's response (RS_FLEET_ADOPT), wait for another server
 * (RS_FLEET_WAIT; also after a late write: out->gap > out->late, and when
 * the child stops while settling: its lease removed, wait_until now), or fetch
 * (RS_FLEET_FETCH; also whenever the cache fails: the server fends for
 * itself). A lease that is not plausible is nobody's (out->bogus_until). A
 * refresh an operator asked for (rs_state_t.refresh_asked) writes the lease
 * and fetches without waiting for anyone's. */
void rs_fleet_lease_take(const rs_fleet_lease_ops_t *ops, const rs_sched_conf_t *conf,
                         const rs_fleet_lease_args_t *args, rs_fleet_lease_t *out);

#endif
