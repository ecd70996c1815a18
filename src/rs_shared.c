/* rs_shared.c: a server's shared record of its certificates (see rs_shared.h). */
#include <string.h>

#include <apr_atomic.h>
#include <apr_strings.h>

#include "rs_shared.h"
#include "rs_status.h"

/* One certificate's part of the segment. */
typedef struct {
    apr_uint32_t present;            /* st was written */
    apr_uint32_t fleet_bad[2];       /* digest of the bad fleet response [0] / lease [1]
                                        last logged; atomic */
    rs_state_t st;
    apr_time_t forced_at;            /* the last refresh an admin asked for */
} entry_t;

/* The segment's head, then one entry_t per certificate. Written under the
 * lock unless marked atomic. */
typedef struct {
    /* The child that schedules for the server: its lease token, and until
     * when it holds the role unless it renews it. Written under the lock;
     * also read without it (atomic) by the children that are not leading. */
    apr_uint64_t leader;
    apr_time_t leader_until;
    rs_shared_fleet_t fleet;         /* atomic */
    apr_time_t fleet_back_at;        /* when the fleet cache was found back */
    apr_time_t fleet_next_audit;     /* when the next full comparison is due */
    apr_uint32_t store_failing;      /* the last store write or probe failed */
    char store_error[RS_ERR_LEN];    /* why, for the status page */
    rs_hist_t fetch_hist;            /* fetch durations, for the metrics */
    rs_slots_t slots;
    entry_t entry[];                 /* by the certificate's index */
} segment_t;

struct rs_shared_t {
    segment_t *seg;
    rs_due_t *due;                   /* in the segment, after the entries */
    rs_shm_staple_t *staples;        /* in the segment, after the due heap */
    int n;
    const rs_sched_conf_t *conf;
    rs_shared_ops_t ops;
};

static apr_size_t align64(apr_size_t x)
{
    return (x + 63) & ~(apr_size_t)63;
}

static apr_size_t head_size(int n)
{
    return align64(sizeof(segment_t) + sizeof(entry_t) * (apr_size_t)n);
}

apr_size_t rs_shared_size(int n, apr_size_t arena)
{
    return head_size(n) + align64(rs_due_size(n)) + rs_shm_staple_size(n, arena);
}

rs_shared_t *rs_shared_init(void *mem, int n, apr_size_t arena, const rs_sched_conf_t *conf,
                            const rs_shared_ops_t *ops, apr_pool_t *p)
{
    rs_shared_t *sh = apr_pcalloc(p, sizeof(*sh));
    char *base = mem;
    apr_size_t head = head_size(n), due = align64(rs_due_size(n));

    memset(base, 0, head);
    sh->seg = (segment_t *)(void *)base;
    sh->due = rs_due_init(base + head, n);
    /* the arena is not cleared: untouched, it costs nothing */
    sh->staples = rs_shm_staple_init(base + head + due, n, arena);
    sh->n = n;
    sh->conf = conf;
    sh->ops = *ops;
    return sh;
}

rs_shm_staple_t *rs_shared_staples(const rs_shared_t *sh)
{
    return sh->staples;
}

static apr_status_t lock(rs_shared_t *sh)
{
    return sh->ops.lock(sh->ops.baton);
}

static void unlock(rs_shared_t *sh)
{
    sh->ops.unlock(sh->ops.baton);
}

/* When the scheduler next has to look at a certificate: when it may be
 * claimed (rs_state_claim: due and no live lease), or when time alone
 * moves its alert on (rs_alert_of: expiring at 3/4 of the lifetime,
 * expired at nextUpdate), whichever is first. */
static apr_time_t due_of(const rs_state_t *st, apr_time_t now)
{
    apr_time_t claim, alert = RS_DUE_NEVER;
    apr_time_t tu = st->resp_this_update, nu = st->resp_next_update;
    rs_alert_e cur = rs_alert_of(tu, nu, (int)st->resp_revoked, now);

    claim = st->next_attempt > st->lease_until ? st->next_attempt : st->lease_until;
    if ((int)cur != (int)st->alert)
        alert = now;               /* not reported yet */
    else if (cur == RS_ALERT_OK && nu)
        alert = nu - (nu - tu) / 4;
    else if (cur == RS_ALERT_EXPIRING || cur == RS_ALERT_REVOKED)
        alert = nu;
    return claim < alert ? claim : alert;
}

/* The record of a certificate: 1 if it was ever written (otherwise *st is
 * a fresh one). Lock held. */
static int get(rs_shared_t *sh, int index, rs_state_t *st)
{
    const entry_t *en = &sh->seg->entry[index];
    if (!en->present) {
        rs_state_init(st);
        return 0;
    }
    *st = en->st;
    return 1;
}

/* ... written back, with when it is next due. Lock held. */
static void put(rs_shared_t *sh, int index, const rs_state_t *st, apr_time_t now)
{
    entry_t *en = &sh->seg->entry[index];
    en->st = *st;
    en->present = 1;
    rs_due_set(sh->due, index, due_of(st, now));
}

/* Alerts are derived from the shared state, so all children agree; the
 * child whose transaction changes st->alert reports it, so it is reported
 * once per server. */
static const char *alert_transition(rs_state_t *st, apr_time_t now)
{
    rs_alert_e to = rs_alert_of(st->resp_this_update, st->resp_next_update,
                                (int)st->resp_revoked, now);
    const char *event = rs_alert_event((rs_alert_e)st->alert, to);
    st->alert = to;
    return event;
}

apr_status_t rs_shared_read(rs_shared_t *sh, int index, rs_state_t *st)
{
    apr_status_t rv = lock(sh);
    if (rv != APR_SUCCESS) {
        rs_state_init(st); /* as if nothing were known */
        return rv;
    }
    get(sh, index, st);
    unlock(sh);
    return APR_SUCCESS;
}

rs_claim_e rs_shared_claim(rs_shared_t *sh, int index, apr_uint64_t owner,
                           apr_uint32_t responder, int max, apr_time_t now, int *slot)
{
    rs_claim_e claim = RS_CLAIM_NOT_DUE;
    rs_state_t st;

    *slot = -1;
    if (lock(sh) != APR_SUCCESS)
        return RS_CLAIM_LOCK_FAILED;
    get(sh, index, &st);
    /* a time from before a clock step, a state file, another server: the
     * bound is stored, so it is taken once, not pushed ahead at every read */
    if (rs_state_bound(&st, now, sh->conf))
        put(sh, index, &st, now);
    if (rs_state_claim(&st, owner, now, sh->conf, 0)) {
        /* due and free: now it needs one of the server's fetch slots, held
         * as long as the lease (a child that dies mid-fetch frees both) */
        *slot = rs_slots_take(&sh->seg->slots, max, responder, owner, now, st.lease_until);
        if (*slot >= 0) {
            put(sh, index, &st, now);
            claim = RS_CLAIM_TAKEN;
        }
        else {
            claim = *slot == RS_SLOTS_FULL ? RS_CLAIM_SLOTS_FULL : RS_CLAIM_RESPONDER_FULL;
        }
    }
    unlock(sh);
    return claim;
}

void rs_shared_yield(rs_shared_t *sh, int index, apr_uint64_t owner, int slot,
                     apr_time_t until, apr_time_t now)
{
    rs_state_t st;
    if (lock(sh) != APR_SUCCESS)
        return;
    get(sh, index, &st);
    rs_state_unclaim(&st, owner);
    st.next_attempt = until;
    put(sh, index, &st, now);
    rs_slots_release(&sh->seg->slots, slot, owner);
    unlock(sh);
}

const char *rs_shared_alert(rs_shared_t *sh, int index, apr_time_t now, rs_state_t *st)
{
    const char *event = NULL;
    if (lock(sh) != APR_SUCCESS)
        return NULL;
    if (get(sh, index, st) && (event = alert_transition(st, now)) != NULL)
        put(sh, index, st, now);
    unlock(sh);
    return event;
}

int rs_shared_refresh_now(rs_shared_t *sh, int index, apr_time_t now,
                          apr_interval_time_t min_interval)
{
    rs_state_t st;
    int forced;

    if (lock(sh) != APR_SUCCESS)
        return 0;
    get(sh, index, &st);
    forced = rs_state_force(&st, now, &sh->seg->entry[index].forced_at, min_interval);
    if (forced)
        put(sh, index, &st, now);
    unlock(sh);
    return forced;
}

/* --- offer: the one way a response becomes the server's --- */

static void mark_not_newer(const rs_offer_t *o, rs_ocsp_result_t *res)
{
    res->verdict = RS_VERDICT_NOT_NEWER;
    apr_cpystrn(res->detail, "not newer than the response held", sizeof(res->detail));
    if (o->attempts && o->nattempts > 0) {
        o->attempts[o->nattempts - 1].res = *res;
        o->attempts[o->nattempts - 1].result = RS_RESULT_NOT_NEWER;
    }
}

/* A fetch round (a child's, or the startup fetch's): a verified response
 * the replace rule refuses is an attempt that failed (a GET answered from
 * a CDN's cache may be the very response held), and backs off like one. */
static void offer_round(rs_shared_t *sh, const rs_offer_t *o, rs_state_t *st,
                        rs_outcome_t *out)
{
    rs_ocsp_result_t res = o->res;
    int i;

    if (rs_verdict_is_valid(res.verdict) && o->der
        && !rs_sched_should_replace(st->resp_this_update, st->resp_next_update,
                                    res.this_update, res.next_update, o->now)) {
        mark_not_newer(o, &res);
        out->not_newer = 1;
    }
    if (rs_verdict_is_valid(res.verdict) && o->der) {
        /* from here every child staples it; without room for it in the
         * shared memory it is not held (RS0204) */
        out->installed = sh->ops.resp_put(sh->ops.baton, o->index, o->der, o->len, &res)
                         == APR_SUCCESS;
        out->no_room = !out->installed;
        rs_state_success(st, o->now, &res, out->installed, sh->conf, o->jitter);
    }
    else {
        rs_state_failure(st, o->now, res.verdict, res.resp_status, res.detail, sh->conf,
                         o->jitter);
    }
    for (i = 0; i < o->nattempts; i++)
        rs_state_count(st, o->attempts[i].method, o->attempts[i].result);
    if (o->origin == RS_ORIGIN_FETCHED) {
        out->alert = alert_transition(st, o->now);
        rs_hist_observe(&sh->seg->fetch_hist, o->took); /* same span as the log line */
    }
    out->written = 1;
}

/* Another server's response from the fleet cache, taken as if this server
 * had fetched it; no request was made, so no attempt is counted. A child
 * that held the lease for it gives it back when it is not newer. */
static void offer_adopted(rs_shared_t *sh, const rs_offer_t *o, rs_state_t *st,
                          rs_outcome_t *out)
{
    if (!rs_sched_should_replace(st->resp_this_update, st->resp_next_update,
                                 o->res.this_update, o->res.next_update, o->now))
        out->not_newer = 1;
    else if (sh->ops.resp_put(sh->ops.baton, o->index, o->der, o->len, &o->res) == APR_SUCCESS)
        out->installed = 1;
    else
        out->no_room = 1;
    if (out->installed)
        rs_state_adopt(st, o->now, &o->res, sh->conf, o->jitter);
    else if (o->slot >= 0)
        rs_state_unclaim(st, o->owner);
    out->written = out->installed || o->slot >= 0;
}

/* The store's response and state, read back before any child starts: the
 * counters, the last error and the backoff come back, never a lease. */
static void offer_restored(rs_shared_t *sh, const rs_offer_t *o, rs_state_t *st,
                           int present, rs_outcome_t *out)
{
    if (present && o->der
        && !rs_sched_should_replace(st->resp_this_update, st->resp_next_update,
                                    o->res.this_update, o->res.next_update, o->now)) {
        out->not_newer = 1;
        return;
    }
    if (o->der) {
        out->installed = sh->ops.resp_put(sh->ops.baton, o->index, o->der, o->len, &o->res)
                         == APR_SUCCESS;
        out->no_room = !out->installed;
    }
    if (o->stored)
        *st = *o->stored;
    else
        rs_state_init(st);
    st->lease_until = 0;
    st->lease_owner = 0;
    if (out->installed) {
        st->resp_this_update = o->res.this_update;
        st->resp_next_update = o->res.next_update;
        st->resp_revoked = o->res.verdict == RS_VERDICT_REVOKED;
        if (!st->next_attempt) /* renewal as if fetched now: an overdue one right away */
            st->next_attempt = rs_sched_renew_at(sh->conf, o->res.this_update,
                                                 o->res.next_update, 0, 0.0);
    }
    else {
        /* nothing to staple: try right after start, whatever the backoff said */
        st->resp_this_update = st->resp_next_update = 0;
        st->resp_revoked = 0;
        st->next_attempt = 0;
    }
    /* a state file from before a clock step must not hold fetching back */
    rs_state_bound(st, o->now, sh->conf);
    out->written = out->installed || st->fetches;
}

apr_status_t rs_shared_offer(rs_shared_t *sh, const rs_offer_t *o, rs_outcome_t *out)
{
    apr_status_t rv;
    int present;

    memset(out, 0, sizeof(*out));
    if ((rv = lock(sh)) != APR_SUCCESS) {
        rs_state_init(&out->st);
        return rv;
    }
    present = get(sh, o->index, &out->st);
    switch (o->origin) {
    case RS_ORIGIN_FETCHED:
    case RS_ORIGIN_STARTUP:
        offer_round(sh, o, &out->st, out);
        break;
    case RS_ORIGIN_ADOPTED:
        offer_adopted(sh, o, &out->st, out);
        break;
    case RS_ORIGIN_RESTORED:
        offer_restored(sh, o, &out->st, present, out);
        break;
    }
    if (out->written)
        put(sh, o->index, &out->st, o->now);
    if (o->slot >= 0)
        rs_slots_release(&sh->seg->slots, o->slot, o->owner);
    unlock(sh);
    return APR_SUCCESS;
}

/* --- the server --- */

int rs_shared_lead(rs_shared_t *sh, apr_uint64_t owner, apr_time_t now,
                   apr_interval_time_t term)
{
    segment_t *seg = sh->seg;
    int me;

    if (__atomic_load_n(&seg->leader_until, __ATOMIC_RELAXED) > now
        && __atomic_load_n(&seg->leader, __ATOMIC_RELAXED) != owner)
        return 0;
    if (lock(sh) != APR_SUCCESS)
        return 0;
    me = seg->leader == owner || seg->leader_until <= now;
    if (me) {
        __atomic_store_n(&seg->leader, owner, __ATOMIC_RELAXED);
        __atomic_store_n(&seg->leader_until, now + term, __ATOMIC_RELAXED);
    }
    unlock(sh);
    return me;
}

void rs_shared_resign(rs_shared_t *sh, apr_uint64_t owner)
{
    if (lock(sh) != APR_SUCCESS)
        return;
    if (sh->seg->leader == owner)
        __atomic_store_n(&sh->seg->leader_until, 0, __ATOMIC_RELAXED);
    unlock(sh);
}

apr_time_t rs_shared_leader_until(const rs_shared_t *sh)
{
    return __atomic_load_n(&sh->seg->leader_until, __ATOMIC_RELAXED);
}

int rs_shared_due(rs_shared_t *sh, apr_time_t now, int *out, int max)
{
    int n;
    /* under the lock: writers move the heap */
    if (lock(sh) != APR_SUCCESS)
        return 0;
    n = rs_due_collect(sh->due, now, out, max);
    unlock(sh);
    return n;
}

apr_time_t rs_shared_next_due(const rs_shared_t *sh)
{
    return rs_due_next(sh->due);
}

int rs_shared_store_result(rs_shared_t *sh, int failing, const char *reason)
{
    segment_t *seg = sh->seg;
    int was;
    if (lock(sh) != APR_SUCCESS)
        return failing; /* no change known: nothing to log */
    was = (int)seg->store_failing;
    seg->store_failing = (apr_uint32_t)(failing != 0);
    apr_cpystrn(seg->store_error, failing ? reason : "", sizeof(seg->store_error));
    unlock(sh);
    return was;
}

int rs_shared_store_health(rs_shared_t *sh, char *err, apr_size_t errlen)
{
    int failing;
    err[0] = '\0';
    if (lock(sh) != APR_SUCCESS)
        return 0;
    failing = sh->seg->store_failing != 0;
    apr_cpystrn(err, sh->seg->store_error, errlen);
    unlock(sh);
    return failing;
}

void rs_shared_metrics(rs_shared_t *sh, apr_time_t now, rs_hist_t *hist, int *slots_in_use)
{
    int i;
    *slots_in_use = 0;
    if (lock(sh) != APR_SUCCESS) {
        memset(hist, 0, sizeof(*hist));
        return;
    }
    *hist = sh->seg->fetch_hist;
    for (i = 0; i < RS_MAX_SLOTS; i++)
        *slots_in_use += sh->seg->slots.slot[i].until > now;
    unlock(sh);
}

rs_shared_fleet_t *rs_shared_fleet(rs_shared_t *sh)
{
    return &sh->seg->fleet;
}

int rs_shared_fleet_note(rs_shared_t *sh, int index, int which, apr_uint32_t digest)
{
    apr_uint32_t *seen = &sh->seg->entry[index].fleet_bad[which != 0];
    return apr_atomic_xchg32(seen, digest) != digest;
}

void rs_shared_fleet_back(rs_shared_t *sh, apr_time_t now)
{
    if (lock(sh) != APR_SUCCESS)
        return;
    sh->seg->fleet_back_at = now;
    unlock(sh);
}

int rs_shared_fleet_back_lately(rs_shared_t *sh, apr_time_t now, apr_interval_time_t grace)
{
    int lately;
    if (lock(sh) != APR_SUCCESS)
        return 0;
    lately = now - sh->seg->fleet_back_at < grace;
    unlock(sh);
    return lately;
}

int rs_shared_fleet_audit(rs_shared_t *sh, apr_time_t now, apr_interval_time_t every)
{
    int audit = 0;
    if (lock(sh) != APR_SUCCESS)
        return 0;
    if (now >= sh->seg->fleet_next_audit) {
        sh->seg->fleet_next_audit = now + every;
        audit = 1;
    }
    unlock(sh);
    return audit;
}
