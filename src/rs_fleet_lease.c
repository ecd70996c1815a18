/* rs_fleet_lease.c: who of a fleet fetches (see rs_fleet_lease.h). */
#include <string.h>

#include "rs_fleet_lease.h"

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
    rv = ops->lease_get(b, &owner, &until);
    if (rv == APR_NOTFOUND)
        owner = 0;
    else if (rv != APR_SUCCESS)
        return;
    ops->state(b, &st);
    out->action = rs_fleet_decide(conf, &st, found ? &out->res : NULL, owner, until, args->me,
                                  now, &out->wait_until);
    if (out->action != RS_FLEET_FETCH)
        return;

    if (ops->lease_put(b, args->me, ops->now(b) + args->hold) != APR_SUCCESS)
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
    rv = ops->lease_get(b, &owner, &until);
    now = ops->now(b);
    if (rv != APR_SUCCESS && rv != APR_NOTFOUND)
        return;
    if (rv == APR_SUCCESS && owner != args->me && until > now) {
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
