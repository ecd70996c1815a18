/* mod_resilient_stapling_refresh.c: the background refresher.
 *
 * Every child starts one, but one child at a time schedules for the whole
 * server (the leader: a term in shared memory it renews while it runs; a
 * child that dies loses it within LEADER_TERM). The leader sleeps until
 * the earliest due time of any certificate (rs_due.h, in shared memory),
 * looks only at what is due, takes its lease and one of the server's fetch
 * slots under the global mutex, and hands the fetch to a worker pool.
 * Fetches run outside any lock, each under a total deadline; their result
 * is applied to the shared state under the mutex (rs_sched.h decides), and
 * a newer response is written once, into the shared memory every child's
 * handshakes read (rs_shm_staple.h). The other children sleep until the
 * leader's term would end. Nothing walks all certificates while nothing is
 * due, and adding children adds no scheduling work.
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
#include "rs_fleet_lease.h"
#include "rs_record.h"
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
/* How often the leader reads the fleet's generation record (one small
 * read): the sync delay between servers is about this. */
#define FLEET_POLL apr_time_from_msec(500)
/* How often a server compares all its responses with the fleet cache even
 * without a new generation (memcached evicts under memory pressure). */
#define FLEET_AUDIT apr_time_from_sec(60)
/* The random part of the wait before a fleet lease is read back: servers
 * that raced for it do not read back in lockstep. */
#define FLEET_SETTLE_SPREAD_MS 100
/* The most a single lease write adds to a child's usual read-to-write time. */
#define LEASE_GAP_MAX apr_time_from_sec(1)

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
    apr_uint32_t lease_gap;   /* atomic: usual lease read-to-write time, us */
    int leading;              /* this child schedules for the server; scheduler thread */
    apr_time_t slots_busy_until; /* all fetch slots were busy: no timed wake before */
    apr_uint32_t fleet_polling;  /* a fleet poll is queued or running; atomic */
    apr_time_t fleet_next_poll;  /* scheduler thread only */
};

static double jitter(void)
{
    apr_uint32_t v = 0;
    apr_generate_random_bytes((unsigned char *)&v, sizeof(v));
    return (double)v / 4294967295.0 * 2.0 - 1.0;
}

static const char *fmt_time(apr_pool_t *p, apr_time_t t)
{
    apr_time_exp_t x;
    char buf[32];
    apr_size_t len;
    if (t == 0)
        return "never";
    apr_time_exp_gmt(&x, t);
    apr_strftime(buf, &len, sizeof(buf), "%Y-%m-%d %H:%M:%S UTC", &x);
    return apr_pstrdup(p, buf);
}

static int is_stopping(void *baton)
{
    return apr_atomic_read32(&((refresher_t *)baton)->stopping) != 0;
}

/* A response read from a cache is verified like one from the network: the
 * cache may be memcached or Redis, trusted no more than the network. code,
 * kind and desc name the cache in the log line when it is not valid. */
static void log_invalid(refresher_t *r, rs_entry_t *e, const char *code, const char *kind,
                        const char *desc, const rs_ocsp_result_t *res)
{
    ap_log_error(APLOG_MARK, APLOG_WARNING, 0, r->s,
                 "%s: response for %s in the %s cache %s is not valid (%s: %s), ignored", code,
                 e->cert->subject, kind, desc, rs_verdict_name(res->verdict), res->detail);
}

/* --- alerts --- */

/* Alerts are derived from the shared state, so all children agree; the
 * child that changes st->alert reports it, so it is reported once per
 * server. Caller holds the global mutex; returns the event or NULL. */
static const char *alert_transition(rs_state_t *st, apr_time_t now)
{
    rs_alert_e to = rs_alert_of(st->resp_this_update, st->resp_next_update,
                                st->resp_revoked, now);
    const char *event = rs_alert_event((rs_alert_e)st->alert, to);
    st->alert = to;
    return event;
}

static void report(refresher_t *r, rs_entry_t *e, const char *event, const rs_state_t *st,
                   apr_time_t now, apr_pool_t *p)
{
    const char *state = rs_cert_state_name(rs_status_classify(
        st->resp_this_update, st->resp_next_update, st->resp_revoked, st->failures,
        r->reg->sched.renew_window_pct, now));
    const char *reason = st->last_error[0] ? st->last_error : "";
    const char *until = fmt_time(p, st->resp_next_update);
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

/* --- the fleet (memcache, redis) --- */

/* A verified response another server stored in the fleet cache becomes
 * this server's, as if this server had fetched it: shared memory (every
 * child staples it), shared state, store. Releases this child's lease and slot
 * (slot < 0: none). Returns 1 if it was newer than ours. */
static int adopt(refresher_t *r, rs_entry_t *e, const unsigned char *der, apr_size_t len,
                 const rs_ocsp_result_t *res, int slot, apr_time_t now, apr_time_t *next,
                 apr_pool_t *p)
{
    rs_state_t st;
    int newer = 0;

    if (apr_global_mutex_lock(r->reg->mutex) != APR_SUCCESS)
        return 0;
    rs_shared_state_get(r->reg, e, &st);
    if (rs_sched_should_replace(st.resp_this_update, st.resp_next_update, res->this_update,
                                res->next_update, now)
        && rs_shared_resp_put(r->reg, e, der, len, res) == APR_SUCCESS) {
        rs_state_adopt(&st, now, res, &r->reg->sched, jitter());
        newer = 1;
    }
    else if (slot >= 0)
        rs_state_unclaim(&st, r->owner);
    if (newer || slot >= 0)
        rs_shared_state_put(r->reg, e, &st);
    if (slot >= 0)
        rs_slots_release(&r->reg->shared->slots, slot, r->owner);
    apr_global_mutex_unlock(r->reg->mutex);
    if (next)
        *next = st.next_attempt;
    if (!newer)
        return 0;
    rs_store_write(r->reg, r->s, e, der, len, p);
    ap_log_error(APLOG_MARK, APLOG_INFO, 0, r->s,
                 "RS0603: took the %s response for %s (valid until %s) from the fleet cache %s",
                 rs_verdict_name(res->verdict), e->cert->subject, fmt_time(p, res->next_update),
                 r->reg->fleet_desc);
    return 1;
}

/* Another server fetches this certificate: give back the lease and slot,
 * look again when its lease ends (its new response usually comes first,
 * through the fleet poll). */
static apr_time_t wait_for_fleet(refresher_t *r, rs_entry_t *e, int slot, apr_time_t until)
{
    rs_state_t st;
    if (apr_global_mutex_lock(r->reg->mutex) != APR_SUCCESS)
        return until;
    rs_shared_state_get(r->reg, e, &st);
    rs_state_unclaim(&st, r->owner);
    st.next_attempt = until;
    rs_shared_state_put(r->reg, e, &st);
    rs_slots_release(&r->reg->shared->slots, slot, r->owner);
    apr_global_mutex_unlock(r->reg->mutex);
    return until;
}

/* A record of e in the fleet cache that is not what its key says (kind
 * RS_KEY_RESPONSE or RS_KEY_LEASE): 1 if it is to be logged, once per key
 * and change: anyone can write to memcached, and a bad record stays there
 * while every server reads it at every scan. digest 0: the record is good
 * again. */
static int fleet_bad(refresher_t *r, rs_entry_t *e, char kind, const unsigned char *data,
                     apr_size_t len, int valid)
{
    return rs_fleet_note_bad(r->reg, e, kind, valid ? 0 : rs_record_digest(kind, data, len))
           && !valid;
}

/* The fleet's response for e, read into buf (RS_MAX_RESPONSE_LEN; a larger
 * record is not even copied): APR_SUCCESS and *res when it verifies,
 * APR_NOTFOUND when it is missing, too large (RS0608) or does not verify
 * (RS0604), anything else when the cache failed. */
static apr_status_t fleet_response(refresher_t *r, rs_entry_t *e, unsigned char *buf,
                                   apr_size_t *len, apr_time_t now, rs_ocsp_result_t *res)
{
    apr_status_t rv = rs_fleet_get(r->reg, r->s, RS_KEY_RESPONSE, e, buf, RS_MAX_RESPONSE_LEN,
                                   len);
    int valid;

    if (rv == APR_ENOSPC) {
        if (fleet_bad(r, e, RS_KEY_RESPONSE, NULL, 0, 0))
            ap_log_error(APLOG_MARK, APLOG_WARNING, 0, r->s,
                         "RS0608: the fleet cache %s holds more than %d KiB under the response "
                         "key of %s: ignored (and replaced)", r->reg->fleet_desc,
                         RS_MAX_RESPONSE_LEN / 1024, e->cert->subject);
        return APR_NOTFOUND;
    }
    if (rv != APR_SUCCESS)
        return rv;
    rs_ocsp_check(e->cert, buf, *len, now, r->reg->skew, res);
    valid = rs_verdict_is_valid(res->verdict);
    if (fleet_bad(r, e, RS_KEY_RESPONSE, buf, *len, valid))
        log_invalid(r, e, "RS0604", "fleet", r->reg->fleet_desc, res);
    return valid ? APR_SUCCESS : APR_NOTFOUND;
}

static apr_status_t fleet_put_lease(refresher_t *r, rs_entry_t *e, apr_uint64_t owner,
                                    apr_time_t until)
{
    unsigned char lease[RS_LEASE_WIRE_LEN];
    rs_lease_encode(owner, until, lease);
    return rs_fleet_put(r->reg, r->s, RS_KEY_LEASE, e, lease, sizeof(lease), until);
}

/* rs_fleet_lease_take's view of the fleet cache, for one certificate */
typedef struct {
    refresher_t *r;
    rs_entry_t *e;
    unsigned char *buf;       /* the last response read, RS_MAX_RESPONSE_LEN */
    apr_size_t len;
} lease_baton_t;

static apr_status_t lease_response(void *baton, apr_time_t now, rs_ocsp_result_t *res)
{
    lease_baton_t *b = baton;
    return fleet_response(b->r, b->e, b->buf, &b->len, now, res);
}

static apr_status_t lease_get(void *baton, apr_uint64_t *owner, apr_time_t *until)
{
    lease_baton_t *b = baton;
    unsigned char lease[RS_LEASE_WIRE_LEN];
    apr_size_t len;
    apr_status_t rv = rs_fleet_get(b->r->reg, b->r->s, RS_KEY_LEASE, b->e, lease,
                                   sizeof(lease), &len);
    int valid;

    if (rv != APR_SUCCESS && rv != APR_ENOSPC)
        return rv;
    /* garbage in the shared cache is nobody's lease */
    valid = rv == APR_SUCCESS && rs_lease_decode(lease, len, owner, until) == APR_SUCCESS;
    if (fleet_bad(b->r, b->e, RS_KEY_LEASE, lease, rv == APR_SUCCESS ? len : 0, valid))
        ap_log_error(APLOG_MARK, APLOG_WARNING, 0, b->r->s,
                     "RS0608: the fleet cache %s holds a record under the lease key of %s that "
                     "is not a lease (%s): taken for no lease", b->r->reg->fleet_desc,
                     b->e->cert->subject, rv == APR_ENOSPC ? "too large" : "garbage");
    return valid ? APR_SUCCESS : APR_NOTFOUND;
}

static apr_status_t lease_put(void *baton, apr_uint64_t owner, apr_time_t until)
{
    lease_baton_t *b = baton;
    return fleet_put_lease(b->r, b->e, owner, until);
}

static void lease_remove(void *baton)
{
    lease_baton_t *b = baton;
    rs_fleet_remove(b->r->reg, b->r->s, RS_KEY_LEASE, b->e);
}

static void lease_state(void *baton, rs_state_t *st)
{
    lease_baton_t *b = baton;
    if (apr_global_mutex_lock(b->r->reg->mutex) != APR_SUCCESS) {
        rs_state_init(st); /* as if nothing were known: fetch */
        return;
    }
    rs_shared_state_get(b->r->reg, b->e, st);
    apr_global_mutex_unlock(b->r->reg->mutex);
}

static apr_time_t lease_now(void *baton)
{
    (void)baton;
    return apr_time_now();
}

static int lease_sleep(void *baton, apr_interval_time_t t)
{
    lease_baton_t *b = baton;
    apr_time_t until = apr_time_now() + t;
    while (apr_time_now() < until && !is_stopping(b->r))
        apr_sleep(apr_time_from_msec(10));
    return is_stopping(b->r);
}

/* Before fetching a due certificate: take the fleet's newer response, wait
 * while another server fetches, or take the fleet lease
 * (rs_fleet_lease.h). Returns RS_FLEET_FETCH when this child should fetch
 * (also whenever the fleet cache fails: the server fends for itself);
 * otherwise lease and slot are given back and *until is when to look again. */
static rs_fleet_action_e fleet_before_fetch(refresher_t *r, rs_entry_t *e, int slot,
                                            apr_time_t *until, apr_pool_t *p)
{
    lease_baton_t b = { r, e, apr_palloc(p, RS_MAX_RESPONSE_LEN), 0 };
    const rs_fleet_lease_ops_t ops = {
        .baton = &b, .response = lease_response, .lease_get = lease_get, .lease_put = lease_put,
        .lease_remove = lease_remove, .state = lease_state, .now = lease_now,
        .sleep = lease_sleep};
    rs_fleet_lease_args_t args;
    rs_fleet_lease_t out;
    apr_uint32_t v = 0;

    apr_generate_random_bytes((unsigned char *)&v, sizeof(v));
    args.me = r->owner;
    args.hold = r->reg->sched.lease;
    args.fetch_max = r->reg->timeout;
    args.usual_gap = (apr_interval_time_t)apr_atomic_read32(&r->lease_gap);
    args.spread = apr_time_from_msec(v % FLEET_SETTLE_SPREAD_MS);
    rs_fleet_lease_take(&ops, &r->reg->sched, &args, &out);
    /* a call that hung (a frozen memcached) says nothing about the usual
     * gap; capped, it also fits the 32-bit average */
    if (out.gap)
        apr_atomic_set32(&r->lease_gap,
                         (apr_uint32_t)((3 * args.usual_gap
                                         + (out.gap < LEASE_GAP_MAX ? out.gap : LEASE_GAP_MAX))
                                        / 4));

    if (out.bogus_until && rs_fleet_note_bogus_lease(r->reg))
        ap_log_error(APLOG_MARK, APLOG_WARNING, 0, r->s,
                     "RS0607: the fleet lease for %s runs until %s, beyond what any server may "
                     "hold it (%ld s): planted in the cache, or written by a server whose clock "
                     "is ahead; ignored (logged once per server)", e->cert->subject,
                     fmt_time(p, out.bogus_until), (long)apr_time_sec(args.hold));
    if (out.action == RS_FLEET_ADOPT) {
        adopt(r, e, b.buf, b.len, &out.res, slot, apr_time_now(), until, p);
        return RS_FLEET_ADOPT;
    }
    if (out.action == RS_FLEET_WAIT) {
        if (out.gap > out.late)
            ap_log_error(APLOG_MARK, APLOG_INFO, 0, r->s,
                         "RS0606: the fleet lease for %s was written %ld ms after it was read "
                         "(more than %ld ms): another server may be fetching it; looking again "
                         "after the responder timeout", e->cert->subject,
                         (long)apr_time_as_msec(out.gap), (long)apr_time_as_msec(out.late));
        *until = wait_for_fleet(r, e, slot, out.wait_until);
    }
    return out.action;
}

/* After this server fetched: a new response is published (response, then
 * generation, then the lease is dropped); after a failure the lease is
 * kept a lease's length at most (rs_fleet_lease_after_failure), so the
 * fleet does not rush a responder that just failed, yet is not held back
 * by a failure that may be this server's alone. */
static void fleet_after_fetch(refresher_t *r, rs_entry_t *e, int published,
                              const unsigned char *der, apr_size_t len, apr_time_t next_update,
                              int failed, apr_time_t retry_at)
{
    rs_registry_t *reg = r->reg;
    if (rs_fleet_down(reg))
        return;
    if (published) {
        if (rs_fleet_put(reg, r->s, RS_KEY_RESPONSE, e, der, len, next_update) == APR_SUCCESS)
            rs_fleet_bump(reg, r->s);
        rs_fleet_remove(reg, r->s, RS_KEY_LEASE, e);
    }
    else if (failed) {
        fleet_put_lease(r, e, r->owner,
                        rs_fleet_lease_after_failure(apr_time_now(), retry_at, reg->sched.lease));
    }
    else {
        rs_fleet_remove(reg, r->s, RS_KEY_LEASE, e);
    }
}

/* Compare every certificate with the fleet cache: take what is newer there,
 * put back what it lacks or holds older (it was flushed, restarted, or
 * evicted it; or this server fetched while it was down). */
static void fleet_scan(refresher_t *r, apr_pool_t *p)
{
    rs_registry_t *reg = r->reg;
    unsigned char *buf = apr_palloc(p, RS_MAX_RESPONSE_LEN);
    apr_pool_t *ip;
    int i, pushed = 0;

    apr_pool_create(&ip, p);
    for (i = 0; i < reg->entries->nelts && !is_stopping(r) && !rs_fleet_down(reg); i++) {
        rs_entry_t *e = APR_ARRAY_IDX(reg->entries, i, rs_entry_t *);
        apr_time_t now = apr_time_now(), this_update, next_update;
        rs_ocsp_result_t res;
        unsigned char *der;
        apr_size_t len;
        apr_status_t rv;
        int valid;

        apr_pool_clear(ip);
        rv = fleet_response(r, e, buf, &len, now, &res);
        if (rv != APR_SUCCESS && rv != APR_NOTFOUND)
            break;
        valid = rv == APR_SUCCESS;
        if (valid)
            adopt(r, e, buf, len, &res, -1, now, NULL, ip);
        /* ours is put back when the fleet's is missing, invalid or older */
        if (rs_shm_staple_copy(reg->staples, e->index, ip, &der, &len, &this_update,
                               &next_update) != APR_SUCCESS
            || next_update <= now
            || (valid && !rs_sched_should_replace(res.this_update, res.next_update,
                                                  this_update, next_update, now)))
            continue;
        if (rs_fleet_put(reg, r->s, RS_KEY_RESPONSE, e, der, len, next_update) == APR_SUCCESS)
            pushed++;
    }
    apr_pool_destroy(ip);
    if (pushed) {
        ap_log_error(APLOG_MARK, APLOG_INFO, 0, r->s,
                     "RS0605: put %d response(s) the fleet cache %s lacked back into it",
                     pushed, reg->fleet_desc);
        rs_fleet_bump(reg, r->s);
    }
}

/* One per child at a time, on the worker pool: cache calls may hang, and
 * the scheduler thread must go on serving this server's children. */
static void *APR_THREAD_FUNC fleet_poll_task(apr_thread_t *thread, void *data)
{
    refresher_t *r = data;
    rs_registry_t *reg = r->reg;
    apr_time_t now = apr_time_now();
    apr_uint32_t gen, seen;
    apr_pool_t *p;
    int audit = 0;
    (void)thread;

    apr_pool_create(&p, r->pool);
    if (rs_fleet_down(reg)) {
        if (rs_fleet_claim_probe(reg, now) && rs_fleet_probe(reg, r->s) == APR_SUCCESS)
            rs_fleet_rejoin(reg, r->s);
        goto done;
    }
    if (rs_fleet_generation(reg, r->s, &gen) != APR_SUCCESS)
        goto done;
    if (apr_global_mutex_lock(reg->mutex) == APR_SUCCESS) {
        if (now >= reg->shared->fleet_next_audit) {
            reg->shared->fleet_next_audit = now + FLEET_AUDIT;
            audit = 1;
        }
        apr_global_mutex_unlock(reg->mutex);
    }
    seen = apr_atomic_read32(&reg->shared->fleet_seen);
    /* one child per server scans a new generation */
    if ((gen != seen && apr_atomic_cas32(&reg->shared->fleet_seen, gen, seen) == seen) || audit)
        fleet_scan(r, p);
done:
    apr_pool_destroy(p);
    apr_atomic_set32(&r->fleet_polling, 0);
    return NULL;
}

static void fleet_tick(refresher_t *r, apr_time_t now)
{
    if (now < r->fleet_next_poll || apr_atomic_read32(&r->fleet_polling))
        return;
    r->fleet_next_poll = now + FLEET_POLL;
    apr_atomic_set32(&r->fleet_polling, 1);
    if (apr_thread_pool_push(r->workers, fleet_poll_task, r, APR_THREAD_TASK_PRIORITY_HIGH, r)
        != APR_SUCCESS)
        apr_atomic_set32(&r->fleet_polling, 0);
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
                     fmt_time(p, res->next_update), in_sec, when);
        return;
    }
    if (res->verdict == RS_VERDICT_REVOKED) {
        ap_log_error(APLOG_MARK, APLOG_ERR, 0, s,
                     "RS0203: certificate %s (serial %s) is REVOKED according to %s by %s "
                     "(revoked %s, reason %d); stapling the revocation%s",
                     e->cert->subject, e->cert->serial, e->url, method,
                     fmt_time(p, res->revocation_time), res->revocation_reason, when);
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
                                    fmt_time(p, stapled_until))
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
    rs_ocsp_result_t res;
    rs_state_t st;
    unsigned char *body = NULL;
    apr_size_t len = 0;
    apr_time_t start = apr_time_now(), now, held_this, stapled_until;
    int newest = 0, no_room = 0, n, i;
    const char *event = NULL;
    apr_time_t next_attempt = 0; /* 0: not applied, the scheduler keeps its view */
    (void)thread;

    apr_pool_create(&p, r->pool);
    if (r->reg->fleet && !rs_fleet_down(r->reg)
        && fleet_before_fetch(r, e, t->slot, &next_attempt, p) != RS_FLEET_FETCH)
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
    if (apr_global_mutex_lock(r->reg->mutex) != APR_SUCCESS)
        goto done;
    rs_shared_state_get(r->reg, e, &st);
    apr_global_mutex_unlock(r->reg->mutex);
    round.cert = e->cert;
    round.req = e->req_der;
    round.req_len = e->req_len;
    round.held_this = st.resp_this_update;
    round.held_next = st.resp_next_update;
    round.skew = r->reg->skew;
    round.deadline = 0; /* each request has the responder timeout */
    n = rs_fetch_round(p, &opts, r->reg->method, &round, attempts);
    now = apr_time_now();
    if (n == 0)
        goto done; /* child is stopping; the lease simply expires */
    last = &attempts[n - 1];
    res = last->res;
    body = last->body;
    len = last->len;

    if (apr_global_mutex_lock(r->reg->mutex) != APR_SUCCESS)
        goto done;
    rs_shared_state_get(r->reg, e, &st);
    /* the single place where a fetched response may replace the stored one
     * (the fleet may have brought a newer one meanwhile) */
    if (rs_verdict_is_valid(res.verdict)
        && !rs_sched_should_replace(st.resp_this_update, st.resp_next_update,
                                    res.this_update, res.next_update, now)) {
        res.verdict = RS_VERDICT_NOT_NEWER;
        apr_cpystrn(res.detail, "not newer than the response held", sizeof(res.detail));
        last->res = res;
        last->result = RS_RESULT_NOT_NEWER;
    }
    if (rs_verdict_is_valid(res.verdict)) {
        newest = 1;
        /* from here every child staples it; without room for it in the
         * shared memory it is not held (RS0204) */
        if (rs_shared_resp_put(r->reg, e, body, len, &res) != APR_SUCCESS) {
            newest = 0;
            no_room = 1;
        }
        rs_state_success(&st, now, &res, newest, &r->reg->sched, jitter());
    }
    else {
        rs_state_failure(&st, now, res.verdict, res.resp_status, res.detail, &r->reg->sched,
                         jitter());
    }
    for (i = 0; i < n; i++)
        rs_state_count(&st, attempts[i].method, attempts[i].result);
    event = alert_transition(&st, now);
    rs_hist_observe(&r->reg->shared->fetch_hist, now - start); /* same span as the log line */
    rs_shared_state_put(r->reg, e, &st);
    rs_slots_release(&r->reg->shared->slots, t->slot, r->owner);
    apr_global_mutex_unlock(r->reg->mutex);

    /* logging and disk I/O after the mutex is released */
    if (no_room)
        ap_log_error(APLOG_MARK, APLOG_ERR, 0, r->s,
                     "RS0204: the response for %s (%" APR_SIZE_T_FMT " bytes) does not fit in "
                     "the %s: not stapled (responses of this server average more than %d "
                     "bytes?)", e->cert->subject, len, r->reg->cache_desc, 4096);
    if (r->reg->fleet)
        fleet_after_fetch(r, e, newest, body, len, res.next_update,
                          !rs_verdict_is_valid(res.verdict), st.next_attempt);
    if (newest)
        rs_store_write(r->reg, r->s, e, body, len, p);
    rs_store_write_state(r->reg, r->s, e, &st, p);
    rs_shm_staple_times(r->reg->staples, e->index, &held_this, &stapled_until, NULL);
    for (i = 0; i < n; i++)
        rs_log_attempt(r->s, e, &attempts[i], i == n - 1, &st, stapled_until, "", now, p);
    if (event)
        report(r, e, event, &st, now, p);

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
        rs_state_t st;
        int claimed, skip, slot = RS_SLOTS_FULL;
        task_t *t;

        apr_thread_mutex_lock(r->lock);
        skip = r->in_flight[i];
        apr_thread_mutex_unlock(r->lock);
        for (k = 0; !skip && k < nfull; k++)
            skip = full[k] == e->responder;
        if (skip)
            continue;
        if (apr_global_mutex_lock(r->reg->mutex) != APR_SUCCESS)
            return;
        rs_shared_state_get(r->reg, e, &st);
        /* a time from before a clock step, a state file, another server */
        if (rs_state_bound(&st, now, &r->reg->sched))
            rs_shared_state_put(r->reg, e, &st);
        claimed = rs_state_claim(&st, r->owner, now, &r->reg->sched, 0);
        if (claimed) {
            /* due and free: now it needs one of the server's fetch slots */
            slot = rs_slots_take(&r->reg->shared->slots, r->reg->max_fetches, e->responder,
                                 r->owner, now, st.lease_until);
            if (slot >= 0)
                rs_shared_state_put(r->reg, e, &st);
        }
        apr_global_mutex_unlock(r->reg->mutex);

        if (claimed && slot == RS_SLOTS_FULL) {
            /* nothing can start before a fetch ends (a local one wakes us) or
             * a slot's lease expires: stop here, look again shortly */
            r->slots_busy_until = now + SLOT_RETRY;
            return;
        }
        if (claimed && slot == RS_SLOTS_RESPONDER_FULL) {
            /* this responder has its share; the others may go on. It stays
             * due: the next fetch that ends (a local one wakes us) frees a slot */
            if (nfull < MAX_FULL_RESPONDERS)
                full[nfull++] = e->responder;
            r->slots_busy_until = now + SLOT_RETRY;
            continue;
        }
        if (!claimed)
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
 * its due time includes when that happens (rs_shared_state_put), so only
 * the certificates of the due list are looked at. */
static void check_alerts(refresher_t *r, int ndue, apr_time_t now, apr_pool_t *p)
{
    int d;
    for (d = 0; d < ndue && !apr_atomic_read32(&r->stopping); d++) {
        rs_entry_t *e = APR_ARRAY_IDX(r->reg->entries, r->due[d], rs_entry_t *);
        const char *event = NULL;
        rs_state_t st;

        if (apr_global_mutex_lock(r->reg->mutex) != APR_SUCCESS)
            return;
        if (rs_shared_state_get(r->reg, e, &st)
            && (event = alert_transition(&st, now)) != NULL)
            rs_shared_state_put(r->reg, e, &st);
        apr_global_mutex_unlock(r->reg->mutex);
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
    rs_shared_t *sh = r->reg->shared;
    int me;

    if (__atomic_load_n(&sh->leader_until, __ATOMIC_RELAXED) > now
        && __atomic_load_n(&sh->leader, __ATOMIC_RELAXED) != r->owner)
        return r->leading = 0;
    if (apr_global_mutex_lock(r->reg->mutex) != APR_SUCCESS)
        return r->leading = 0;
    me = sh->leader == r->owner || sh->leader_until <= now;
    if (me) {
        __atomic_store_n(&sh->leader, r->owner, __ATOMIC_RELAXED);
        __atomic_store_n(&sh->leader_until, now + LEADER_TERM, __ATOMIC_RELAXED);
    }
    apr_global_mutex_unlock(r->reg->mutex);
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
    rs_shared_t *sh = r->reg->shared;
    if (!r->leading || apr_global_mutex_lock(r->reg->mutex) != APR_SUCCESS)
        return;
    if (sh->leader == r->owner)
        __atomic_store_n(&sh->leader_until, 0, __ATOMIC_RELAXED);
    apr_global_mutex_unlock(r->reg->mutex);
}

/* What is due now, from the shared heap (under the mutex: writers move it). */
static int collect_due(refresher_t *r, apr_time_t now)
{
    int n;
    if (apr_global_mutex_lock(r->reg->mutex) != APR_SUCCESS)
        return 0;
    n = rs_due_collect(r->reg->due, now, r->due, MAX_DUE_PASS);
    apr_global_mutex_unlock(r->reg->mutex);
    return n;
}

static apr_time_t next_wakeup(refresher_t *r, apr_time_t now)
{
    apr_time_t wake, due;

    if (!r->leading) {
        apr_uint32_t v = 0;
        apr_generate_random_bytes((unsigned char *)&v, sizeof(v));
        wake = __atomic_load_n(&r->reg->shared->leader_until, __ATOMIC_RELAXED);
        if (wake < now)
            wake = now;
        return wake + apr_time_from_msec(v % FOLLOWER_SPREAD_MS);
    }
    wake = now + LEADER_POLL;
    due = rs_due_next(r->reg->due);
    if (due < wake)
        wake = due;
    if (r->reg->fleet && r->fleet_next_poll < wake)
        wake = r->fleet_next_poll > now ? r->fleet_next_poll : now + FLEET_POLL;
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
            if (r->reg->fleet)
                fleet_tick(r, now);
            ndue = collect_due(r, now);
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
    if (r->reg->fleet)
        rs_fleet_stop(r->reg);
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
    if (reg->fleet)
        rs_fleet_child_init(reg, s);
    apr_generate_random_bytes((unsigned char *)&r->owner, sizeof(r->owner));
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
