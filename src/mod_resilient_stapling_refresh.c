/* mod_resilient_stapling_refresh.c: the fetch side: the scheduler, one
 * fetch, and the alerts.
 *
 * Every child starts a refresher, but one child at a time schedules for
 * the whole server (the leader: a term in the shared record it renews
 * while it runs; a child that dies loses it within LEADER_TERM). The
 * leader sleeps until the earliest due time of any certificate, looks only
 * at what is due, claims its lease and one of the server's fetch slots
 * (rs_shared_claim), and hands the fetch to a worker pool. Fetches run
 * outside any lock, each under a total deadline (rs_fetch.h); their result
 * is offered to the shared record (rs_shared_offer), which decides under
 * the lock whether it becomes what every child's handshakes staple. The
 * store write, the log lines and the notification follow, after the
 * unlock. The other children sleep until the leader's term would end.
 * Nothing walks all certificates while nothing is due, and adding children
 * adds no scheduling work. With a fleet cache, the fleet's steps around a
 * fetch are mod_resilient_stapling_fleet_client.c's.
 */
#include <apr_atomic.h>
#include <apr_strings.h>
#include <apr_thread_cond.h>
#include <apr_thread_mutex.h>
#include <apr_thread_pool.h>
#include <apr_thread_proc.h>
#include <httpd.h>
#include <http_log.h>

#include "mod_resilient_stapling.h"
#include "rs_fetch.h"
#include "rs_status.h"
#include "rs_store.h"

APLOG_USE_MODULE(resilient_stapling);

/* How soon to ask again for a fetch slot when all are busy (a fetch ending
 * in this child wakes the scheduler at once). */
#define SLOT_RETRY apr_time_from_msec(100)
#define MAX_FULL_RESPONDERS 16
/* How long the leader holds the role without renewing it; it renews at
 * every wake, and wakes at least every LEADER_POLL: that is also how late
 * it notices a certificate made due by another child (an admin's refresh
 * through the status page on that child). */
#define LEADER_TERM apr_time_from_sec(5)
#define LEADER_POLL apr_time_from_sec(1)
/* The others wake when the term would end, spread over this much so that
 * 150 prefork children do not all take the mutex at once. */
#define FOLLOWER_SPREAD_MS 1000
/* At most this many due certificates are looked at per pass (the rest in
 * the next one: the fetch slots are far fewer anyway). */
#define MAX_DUE_PASS 256

typedef struct refresher_t refresher_t;

typedef struct {
    refresher_t *r;
    rs_entry_t *e;
    int slot;                 /* the server-wide fetch slot it holds */
} task_t;

struct refresher_t {
    rs_registry_t *reg;
    server_rec *s;
    apr_pool_t *pool;
    apr_thread_t *thread;
    apr_thread_mutex_t *lock; /* guards cond and in_flight */
    apr_thread_cond_t *cond;
    apr_thread_pool_t *workers;
    /* made when this child first leads (lead()), NULL before: */
    task_t *tasks;            /* one per entry, same index: no allocation per fetch */
    unsigned char *in_flight; /* per entry: a worker of this child fetches it; lock */
    int *due;                 /* MAX_DUE_PASS indexes found due; scheduler thread only */
    rs_notifier_t *notifier;  /* NULL without ResilientStaplingNotifyCmd */
    apr_uint32_t stopping;    /* atomic */
    apr_uint64_t owner;       /* this child's lease token */
    rs_fleet_client_t *fleet; /* this child's steps with the fleet, or NULL */
    int leading;              /* this child schedules for the server; scheduler thread */
    apr_time_t slots_busy_until; /* all fetch slots were busy: no timed wake before */
};

static int is_stopping(void *baton)
{
    return apr_atomic_read32(&((refresher_t *)baton)->stopping) != 0;
}

/* --- alerts --- */

/* An alert event (rs_shared_offer and rs_shared_alert return it once per
 * server): logged, and handed to ResilientStaplingNotifyCmd. */
static void report(refresher_t *r, rs_entry_t *e, const char *event, const rs_state_t *st,
                   apr_time_t now, apr_pool_t *p)
{
    const char *state = rs_cert_state_name(rs_status_classify(
        st->resp_this_update, st->resp_next_update, st->resp_revoked, st->failures,
        r->reg->sched.renew_window_pct, now));
    const char *reason = st->last_error[0] ? st->last_error : "";
    const char *until = rs_fmt_time(p, st->resp_next_update);
    const char *must = e->cert->must_staple ? " (Must-Staple: clients will refuse it)" : "";

    if (!strcmp(event, "expiring"))
        ap_log_error(APLOG_MARK, APLOG_ERR, 0, r->s,
                     "RS0212: OCSP response for %s (serial %s) is in the last 25 %% of its "
                     "lifetime (valid until %s) and no newer one could be fetched from %s%s%s",
                     e->cert->subject, e->cert->serial, until, e->url,
                     *reason ? ": " : "", reason);
    else if (!strcmp(event, "expired"))
        ap_log_error(APLOG_MARK, APLOG_ERR, 0, r->s,
                     "RS0210: OCSP response for %s (serial %s) expired at %s and no valid "
                     "replacement could be fetched from %s: nothing is stapled%s",
                     e->cert->subject, e->cert->serial, until, e->url, must);
    else if (!strcmp(event, "recovered"))
        ap_log_error(APLOG_MARK, APLOG_NOTICE, 0, r->s,
                     "RS0213: OCSP stapling for %s (serial %s) recovered: stapling a response "
                     "valid until %s", e->cert->subject, e->cert->serial, until);
    /* "revoked" is logged with the fetch that found it (RS0203) */
    rs_notify(r->notifier, e, event, state, reason);
}


/* --- one fetch --- */

void rs_log_attempt(server_rec *s, const rs_entry_t *e, const rs_attempt_t *a, int last,
                    const rs_state_t *st, apr_time_t stapled_until, const char *when,
                    apr_time_t now, apr_pool_t *p)
{
    const rs_ocsp_result_t *res = &a->res;
    const char *method = rs_method_name(a->method);
    long in_sec = (long)apr_time_sec(st->next_attempt - now);

    if (res->verdict == RS_VERDICT_GOOD) {
        ap_log_error(APLOG_MARK, APLOG_INFO, 0, s,
                     "RS0201: OCSP response for %s (serial %s) from %s by %s in %ld ms: good, "
                     "nextUpdate %s, next renewal in %ld s%s", e->cert->subject,
                     e->cert->serial, e->url, method, (long)apr_time_as_msec(a->took),
                     rs_fmt_time(p, res->next_update), in_sec, when);
        return;
    }
    if (res->verdict == RS_VERDICT_REVOKED) {
        ap_log_error(APLOG_MARK, APLOG_ERR, 0, s,
                     "RS0203: certificate %s (serial %s) is REVOKED according to %s by %s "
                     "(revoked %s, reason %d); stapling the revocation%s",
                     e->cert->subject, e->cert->serial, e->url, method,
                     rs_fmt_time(p, res->revocation_time), res->revocation_reason, when);
        return;
    }
    /* a Must-Staple certificate with nothing to staple is an outage */
    ap_log_error(APLOG_MARK,
                 stapled_until <= now && e->cert->must_staple ? APLOG_ERR : APLOG_WARNING, 0,
                 s, "RS0202: OCSP fetch for %s (serial %s) from %s by %s failed after %ld ms: "
                 "%s (%s); %s; %s%s", e->cert->subject, e->cert->serial, e->url, method,
                 (long)apr_time_as_msec(a->took), rs_verdict_name(res->verdict), res->detail,
                 stapled_until > now
                     ? apr_psprintf(p, "still stapling the response valid until %s",
                                    rs_fmt_time(p, stapled_until))
                     : e->cert->must_staple ? "nothing valid to staple (Must-Staple: clients "
                                              "will refuse the certificate)"
                                            : "nothing valid to staple",
                 last ? apr_psprintf(p, "retry in %ld s, %u consecutive failure(s)", in_sec,
                                     st->failures)
                      : "trying POST at once", when);
}

static void *APR_THREAD_FUNC fetch_task(apr_thread_t *thread, void *data)
{
    task_t *t = data;
    refresher_t *r = t->r;
    rs_entry_t *e = t->e;
    apr_pool_t *p;
    rs_fetch_opts_t opts;
    rs_round_t round;
    rs_attempt_t attempts[2], *last;
    rs_offer_t o;
    rs_outcome_t out;
    rs_state_t st;
    apr_time_t start = apr_time_now(), held_this, stapled_until;
    int n, i;
    apr_time_t next_attempt = 0; /* 0: not applied, the scheduler keeps its view */
    (void)thread;

    apr_pool_create(&p, r->pool);
    if (r->fleet
        && rs_fleet_before_fetch(r->fleet, e, t->slot, &next_attempt, p) != RS_FLEET_FETCH)
        goto done;
    memset(&opts, 0, sizeof(opts));
    opts.url = e->url;
    opts.proxy = r->reg->proxy;
    opts.timeout = r->reg->timeout;
    opts.max_len = RS_MAX_RESPONSE_LEN;
    opts.cancelled = is_stopping;
    opts.baton = r;
    /* what is held decides what counts as newer (a GET answered from a
     * CDN's cache may be the very response held) */
    if (rs_shared_read(r->reg->shared, e->index, &st) != APR_SUCCESS)
        goto done;
    round.cert = e->cert;
    round.req = e->req_der;
    round.req_len = e->req_len;
    round.held_this = st.resp_this_update;
    round.held_next = st.resp_next_update;
    round.skew = r->reg->skew;
    round.deadline = 0; /* each request has the responder timeout */
    n = rs_fetch_round(p, &opts, r->reg->method, &round, attempts);
    if (n == 0)
        goto done; /* child is stopping; the lease simply expires */
    last = &attempts[n - 1];

    /* the fleet may have brought a newer one meanwhile: the record decides */
    memset(&o, 0, sizeof(o));
    o.origin = RS_ORIGIN_FETCHED;
    o.index = e->index;
    o.owner = r->owner;
    o.slot = t->slot;
    o.now = apr_time_now();
    o.jitter = rs_jitter();
    o.res = last->res;
    o.der = rs_verdict_is_valid(last->res.verdict) ? last->body : NULL;
    o.len = last->len;
    o.attempts = attempts;
    o.nattempts = n;
    o.took = o.now - start;
    if (rs_shared_offer(r->reg->shared, &o, &out) != APR_SUCCESS)
        goto done;

    /* logging and disk I/O after the unlock */
    if (out.no_room)
        ap_log_error(APLOG_MARK, APLOG_ERR, 0, r->s,
                     "RS0204: the response for %s (%" APR_SIZE_T_FMT " bytes) does not fit in "
                     "the %s: not stapled (responses of this server average more than %d "
                     "bytes?)", e->cert->subject, last->len, r->reg->cache_desc, 4096);
    if (r->fleet)
        rs_fleet_after_fetch(r->fleet, e, out.installed, last->body, last->len,
                             last->res.next_update, !rs_verdict_is_valid(last->res.verdict),
                             out.st.next_attempt);
    if (out.installed)
        rs_store_write(r->reg, r->s, e, last->body, last->len, p);
    rs_store_write_state(r->reg, r->s, e, &out.st, p);
    rs_shm_staple_times(r->reg->staples, e->index, &held_this, &stapled_until, NULL);
    for (i = 0; i < n; i++)
        rs_log_attempt(r->s, e, &attempts[i], i == n - 1, &out.st, stapled_until, "", o.now,
                       p);
    if (out.alert)
        report(r, e, out.alert, &out.st, o.now, p);

done:
    apr_pool_destroy(p);
    apr_thread_mutex_lock(r->lock);
    r->in_flight[e->index] = 0;
    apr_thread_cond_signal(r->cond);
    apr_thread_mutex_unlock(r->lock);
    return NULL;
}

/* --- the scheduler --- */

/* The certificates of the due list (ndue of r->due) */
static void claim_due(refresher_t *r, int ndue, apr_time_t now)
{
    apr_array_header_t *entries = r->reg->entries;
    apr_uint32_t full[MAX_FULL_RESPONDERS]; /* responders at their share, this pass */
    int d, i, k, nfull = 0;

    for (d = 0; d < ndue && !apr_atomic_read32(&r->stopping); d++) {
        rs_entry_t *e = APR_ARRAY_IDX(entries, i = r->due[d], rs_entry_t *);
        rs_claim_e claim;
        int skip, slot;
        task_t *t;

        apr_thread_mutex_lock(r->lock);
        skip = r->in_flight[i];
        apr_thread_mutex_unlock(r->lock);
        for (k = 0; !skip && k < nfull; k++)
            skip = full[k] == e->responder;
        if (skip)
            continue;
        claim = rs_shared_claim(r->reg->shared, i, r->owner, e->responder, r->reg->max_fetches,
                                now, &slot);
        if (claim == RS_CLAIM_LOCK_FAILED)
            return;
        if (claim == RS_CLAIM_SLOTS_FULL) {
            /* nothing can start before a fetch ends (a local one wakes us) or
             * a slot's lease expires: stop here, look again shortly */
            r->slots_busy_until = now + SLOT_RETRY;
            return;
        }
        if (claim == RS_CLAIM_RESPONDER_FULL) {
            /* this responder has its share; the others may go on. It stays
             * due: the next fetch that ends (a local one wakes us) frees a slot */
            if (nfull < MAX_FULL_RESPONDERS)
                full[nfull++] = e->responder;
            r->slots_busy_until = now + SLOT_RETRY;
            continue;
        }
        if (claim != RS_CLAIM_TAKEN)
            continue; /* someone else is on it, or it is not due: its due time says when */
        apr_thread_mutex_lock(r->lock);
        t = &r->tasks[i];
        t->slot = slot;
        r->in_flight[i] = 1;
        apr_thread_mutex_unlock(r->lock);
        if (apr_thread_pool_push(r->workers, fetch_task, t, APR_THREAD_TASK_PRIORITY_NORMAL,
                                 r) != APR_SUCCESS) {
            apr_thread_mutex_lock(r->lock);
            r->in_flight[i] = 0;
            apr_thread_mutex_unlock(r->lock);
        }
    }
}

/* Time moves a certificate into "expiring" or "expired" without any fetch:
 * its due time includes when that happens (due_of in rs_shared.c), so only
 * the certificates of the due list are looked at. */
static void check_alerts(refresher_t *r, int ndue, apr_time_t now, apr_pool_t *p)
{
    int d;
    for (d = 0; d < ndue && !apr_atomic_read32(&r->stopping); d++) {
        rs_entry_t *e = APR_ARRAY_IDX(r->reg->entries, r->due[d], rs_entry_t *);
        rs_state_t st;
        const char *event = rs_shared_alert(r->reg->shared, e->index, now, &st);

        if (event)
            report(r, e, event, &st, now, p);
    }
}

/* --- who schedules: one child of the server at a time --- */

/* 1 if this child is (still, or now) the server's leader. A child that is
 * not reads two words and goes back to sleep; the mutex is taken only to
 * renew the term or to take over one that ran out. */
static int lead(refresher_t *r, apr_time_t now)
{
    int me = rs_shared_lead(r->reg->shared, r->owner, now, LEADER_TERM);

    if (me && !r->tasks) {
        /* per-certificate bookkeeping only in a child that fetches: under
         * prefork, 150 children x 10,000 certificates would otherwise be
         * 37 MB of private memory for nothing */
        int i, n = r->reg->entries->nelts;
        apr_thread_mutex_lock(r->lock);
        r->in_flight = apr_pcalloc(r->pool, (apr_size_t)n);
        r->due = apr_palloc(r->pool, sizeof(int) * MAX_DUE_PASS);
        r->tasks = apr_pcalloc(r->pool, sizeof(task_t) * (apr_size_t)n);
        for (i = 0; i < n; i++) {
            r->tasks[i].r = r;
            r->tasks[i].e = APR_ARRAY_IDX(r->reg->entries, i, rs_entry_t *);
        }
        apr_thread_mutex_unlock(r->lock);
    }
    if (me && !r->leading)
        ap_log_error(APLOG_MARK, APLOG_DEBUG, 0, r->s,
                     "RS0230: this child (pid %" APR_PID_T_FMT ") now schedules the fetches of "
                     "the server", getpid());
    return r->leading = me;
}

/* A stopping leader hands the role on: the next child to wake takes it. */
static void resign(refresher_t *r)
{
    if (r->leading)
        rs_shared_resign(r->reg->shared, r->owner);
}

static apr_time_t next_wakeup(refresher_t *r, apr_time_t now)
{
    apr_time_t wake, due;

    if (!r->leading) {
        apr_uint32_t v = 0;
        apr_generate_random_bytes((unsigned char *)&v, sizeof(v));
        wake = rs_shared_leader_until(r->reg->shared);
        if (wake < now)
            wake = now;
        return wake + apr_time_from_msec(v % FOLLOWER_SPREAD_MS);
    }
    wake = now + LEADER_POLL;
    due = rs_shared_next_due(r->reg->shared);
    if (due < wake)
        wake = due;
    if (r->fleet)
        wake = rs_fleet_wake(r->fleet, now, wake);
    /* still due after this pass: waiting for a fetch slot (a fetch ending
     * here wakes us at once) */
    if (wake <= now)
        wake = now + SLOT_RETRY;
    return wake < r->slots_busy_until ? r->slots_busy_until : wake;
}

static void *APR_THREAD_FUNC scheduler(apr_thread_t *thread, void *data)
{
    refresher_t *r = data;
    apr_pool_t *p;
    (void)thread;

    apr_pool_create(&p, r->pool);
    while (!apr_atomic_read32(&r->stopping)) {
        apr_time_t now = apr_time_now(), wake;

        apr_pool_clear(p);
        if (lead(r, now)) {
            int ndue;
            if (r->fleet)
                rs_fleet_tick(r->fleet, r->workers, now);
            ndue = rs_shared_due(r->reg->shared, now, r->due, MAX_DUE_PASS);
            check_alerts(r, ndue, now, p);
            claim_due(r, ndue, now);
        }

        apr_thread_mutex_lock(r->lock);
        wake = next_wakeup(r, apr_time_now());
        now = apr_time_now();
        if (!apr_atomic_read32(&r->stopping) && wake > now)
            apr_thread_cond_timedwait(r->cond, r->lock, wake - now);
        apr_thread_mutex_unlock(r->lock);
    }
    resign(r);
    return NULL;
}

/* A pre-cleanup of pchild: runs before the subpools holding the lock and the
 * workers go away, and returns within one poll slice of a fetch in flight.
 * A fleet call in flight is not waited for (rs_fleet_stop): a frozen
 * memcached would keep this child, and its scoreboard slot, forever. */
static apr_status_t refresher_stop(void *data)
{
    refresher_t *r = data;
    apr_status_t trv;

    apr_thread_mutex_lock(r->lock);
    apr_atomic_set32(&r->stopping, 1);
    apr_thread_cond_broadcast(r->cond);
    apr_thread_mutex_unlock(r->lock);
    if (r->fleet)
        rs_fleet_client_stop(r->fleet);
    apr_thread_join(&trv, r->thread);
    apr_thread_pool_destroy(r->workers);
    return APR_SUCCESS;
}

apr_status_t rs_refresher_start(rs_registry_t *reg, apr_pool_t *pchild, server_rec *s,
                                rs_notifier_t *notifier)
{
    refresher_t *r = apr_pcalloc(pchild, sizeof(*r));
    apr_status_t rv;

    /* everything the refresher's threads allocate from comes from r->pool:
     * pchild's allocator is not theirs to use (rs_thread_pool_create) */
    if ((rv = rs_thread_pool_create(&r->pool, pchild)) != APR_SUCCESS)
        return rv;
    r->reg = reg;
    r->notifier = notifier;
    r->s = s;
    apr_generate_random_bytes((unsigned char *)&r->owner, sizeof(r->owner));
    if (reg->fleet)
        r->fleet = rs_fleet_client_make(reg, s, r->owner, is_stopping, r, r->pool);
    if ((rv = apr_thread_mutex_create(&r->lock, APR_THREAD_MUTEX_DEFAULT, r->pool))
               != APR_SUCCESS
        || (rv = apr_thread_cond_create(&r->cond, r->pool)) != APR_SUCCESS
        || (rv = apr_thread_pool_create(&r->workers, 0, (apr_size_t)reg->max_fetches, r->pool)) != APR_SUCCESS)
        return rv;
    /* nothing to pick up before the first connection: the responses
     * restored from the store, or fetched by other children, are in the
     * shared memory every handshake reads */
    if ((rv = apr_thread_create(&r->thread, NULL, scheduler, r, r->pool)) != APR_SUCCESS)
        return rv;
    apr_pool_pre_cleanup_register(pchild, r, refresher_stop);
    return APR_SUCCESS;
}
