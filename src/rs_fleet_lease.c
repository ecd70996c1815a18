/* rs_fleet_lease.c: who of a fleet fetches (see rs_fleet_lease.h). */
#include <string.h>

#include "rs_fleet_lease.h"

int rs_fleet_lease_plausible(apr_time_t until, apr_time_t now, apr_interval_time_t hold)
{
    return until <= now + hold + RS_LEASE_CLOCK_SLACK;
}

apr_time_t rs_fleet_lease_after_failure(apr_time_t now, apr_time_t retry_at,
                                        apr_interval_time_t hold)
{
    return retry_at < now + hold ? retry_at : now + hold;
}

/* A lease read from the cache: owner 0 if there is none, or it is bogus. */
static apr_status_t read_lease(const rs_fleet_lease_ops_t *ops, const rs_fleet_lease_args_t *args,
                               rs_fleet_lease_t *out, apr_uint64_t *owner, apr_time_t *until)
{
    apr_status_t rv = ops->lease_get(ops->baton, owner, until);
    if (rv == APR_SUCCESS && !rs_fleet_lease_plausible(*until, ops->now(ops->baton), args->hold)) {
        out->bogus_until = *until;
        rv = APR_NOTFOUND;
    }
    if (rv == APR_NOTFOUND) {
        *owner = 0;
        *until = 0;
        return APR_SUCCESS;
    }
    return rv;
}

static void set_wait(rs_fleet_lease_t *out, apr_time_t until)
{
    out->action = RS_FLEET_WAIT;
    out->wait_until = until;
}

void rs_fleet_lease_take(const rs_fleet_lease_ops_t *ops, const rs_sched_conf_t *conf,
                         const rs_fleet_lease_args_t *args, rs_fleet_lease_t *out)
{
    void *b = ops->baton;
    apr_uint64_t owner = 0;
    apr_time_t until = 0, now, read_at, ignored;
    apr_status_t rv;
    rs_state_t st;
    int found;

    memset(out, 0, sizeof(*out));
    out->action = RS_FLEET_FETCH; /* what every cache failure below leads to */
    out->late = RS_LEASE_LATE + 2 * args->usual_gap;

    now = ops->now(b);
    rv = ops->response(b, now, &out->res);
    if (rv != APR_SUCCESS && rv != APR_NOTFOUND)
        return;
    found = rv == APR_SUCCESS;
    read_at = ops->now(b);
    if (read_lease(ops, args, out, &owner, &until) != APR_SUCCESS)
        return;
    ops->state(b, &st);
    out->action = rs_fleet_decide(conf, &st, found ? &out->res : NULL, owner, until, args->me,
                                  now, &out->wait_until);
    if (out->action != RS_FLEET_FETCH)
        return;

    if (ops->lease_put(b, args->me, ops->now(b) + args->hold) != APR_SUCCESS
        || st.refresh_asked)
        return;
    now = ops->now(b);
    out->gap = now - read_at;
    if (out->gap > out->late) {
        /* whoever read back a lease before ours landed has published by then */
        set_wait(out, now + args->fetch_max + apr_time_from_sec(1));
        return;
    }
    if (ops->sleep(b, out->late + RS_LEASE_LATE / 4 + args->spread)) {
        ops->lease_remove(b);
        set_wait(out, ops->now(b));
        return;
    }
    rv = read_lease(ops, args, out, &owner, &until);
    now = ops->now(b);
    if (rv != APR_SUCCESS)
        return;
    if (owner && owner != args->me && until > now) {
        set_wait(out, until);
        return;
    }
    /* A server that published and dropped its lease between our response
     * and lease reads looked like no one: its response is there by now. */
    if (ops->response(b, now, &out->res) == APR_SUCCESS
        && rs_fleet_decide(conf, &st, &out->res, 0, 0, args->me, now, &ignored)
               == RS_FLEET_ADOPT) {
        ops->lease_remove(b);
        out->action = RS_FLEET_ADOPT;
        return;
    }
    out->action = RS_FLEET_FETCH;
}
