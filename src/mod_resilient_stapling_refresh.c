/* mod_resilient_stapling_refresh.c: the background refresher of one child.
 *
 * One scheduler thread per child wakes at the next due time (at least every
 * SYNC_INTERVAL), picks up responses other children stored in the shared
 * cache, and for each due certificate takes the lease under the global
 * mutex. Fetches run on a small worker pool, outside any lock, each under a
 * total deadline; their result is applied to the shared state under the
 * mutex (rs_sched.h decides) and installed in this child's staple.
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
/* How stale a child's view of responses fetched by other children may get;
 * shorter while a certificate has nothing to staple (right after start),
 * since a handshake landing on this child would go unstapled. A sync that
 * finds nothing new is one small cache read. */
#define SYNC_INTERVAL apr_time_from_msec(1000)
#define SYNC_INTERVAL_EMPTY apr_time_from_msec(100)
/* shmcb is a cyclic buffer: frequent state updates push old records out,
 * however valid. Every child checks this often that the cache still holds
 * what it serves, and puts back what was lost. */
#define AUDIT_INTERVAL apr_time_from_sec(15)
/* How often each child reads the fleet's generation record (one small
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
    apr_thread_mutex_t *lock; /* guards cond, and in_flight/local_next of the entries */
    apr_thread_cond_t *cond;
    apr_thread_pool_t *workers;
    task_t *tasks;            /* one per entry, same index: no allocation per fetch */
    rs_notifier_t *notifier;  /* NULL without ResilientStaplingNotifyCmd */
    unsigned char *scratch;   /* RS_MAX_RESPONSE_LEN, for the scheduler thread's reads */
    apr_uint32_t stopping;    /* atomic */
    apr_uint64_t owner;       /* this child's lease token */
    apr_uint32_t lease_gap;   /* atomic: usual lease read-to-write time, us */
    apr_uint32_t seen_generation;
    int synced;
    apr_time_t next_audit;
    apr_time_t slots_busy_until; /* all fetch slots were busy: no timed wake before */
    apr_uint32_t fleet_polling;  /* a fleet poll is queued or running; atomic */
    apr_time_t fleet_next_poll;  /* scheduler thread only */
};

/* A response another child stored, copied out under the mutex; der NULL:
 * not in the cache (too large for it, or evicted), read from the store
 * once the mutex is released. */
typedef struct {
    rs_entry_t *e;
    unsigned char *der;
    apr_size_t len;
    int lost;            /* and this child has nothing valid to staple */
} pickup_t;

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

/* --- installing responses in this child --- */

/* A verified response, offered to this child's staple. */
static int offer(rs_entry_t *e, const unsigned char *der, apr_size_t len,
                 const rs_ocsp_result_t *res, apr_time_t now)
{
    return rs_staple_offer(e->staple, der, len, res->this_update, res->next_update,
                           res->verdict == RS_VERDICT_REVOKED, now);
}

/* A response read from a cache is verified like one from the network: the
 * cache may be memcached or Redis, trusted no more than the network. code,
 * kind and desc name the cache in the log line when it is not valid. */
static int verify_cached(refresher_t *r, rs_entry_t *e, const unsigned char *der,
                         apr_size_t len, apr_time_t now, const char *code, const char *kind,
                         const char *desc, rs_ocsp_result_t *res)
{
    rs_ocsp_check(e->cert, der, len, now, r->reg->skew, res);
    if (rs_verdict_is_valid(res->verdict))
        return 1;
    ap_log_error(APLOG_MARK, APLOG_WARNING, 0, r->s,
                 "%s: response for %s in the %s cache %s is not valid (%s: %s), ignored", code,
                 e->cert->subject, kind, desc, rs_verdict_name(res->verdict), res->detail);
    return 0;
}

static void install_from_cache(refresher_t *r, rs_entry_t *e, unsigned char *der,
                               apr_size_t len, apr_time_t now, apr_pool_t *p)
{
    rs_ocsp_result_t res;

    if (verify_cached(r, e, der, len, now, "RS0220", "shared", r->reg->cache_desc, &res)
        && offer(e, der, len, &res, now))
        ap_log_error(APLOG_MARK, APLOG_DEBUG, 0, r->s,
                     "RS0221: picked up the response for %s from the shared cache "
                     "(nextUpdate %s)", e->cert->subject, fmt_time(p, res.next_update));
}

/* A response the server holds that the shared cache does not (too large
 * for it, or evicted): the store has it, verified like any other. */
static int install_from_store(refresher_t *r, rs_entry_t *e, apr_time_t now, apr_pool_t *p)
{
    rs_ocsp_result_t res;
    unsigned char *der;
    apr_size_t len;

    if (rs_store_load(r->reg->store_dir, e->cert->id, RS_STORE_RESPONSE, p, &der, &len)
        != APR_SUCCESS
        || !verify_cached(r, e, der, len, now, "RS0224", "store", r->reg->store_dir, &res))
        return 0;
    offer(e, der, len, &res, now);
    return 1;
}

/* Put back a valid response this child serves but the cache lost (shmcb
 * evicts the oldest records when it runs out of room). Caller holds the
 * global mutex, and logs (RS0222) after releasing it: 1 if put back. */
static int repopulate(refresher_t *r, rs_entry_t *e, rs_state_t *st, apr_time_t now,
                       apr_pool_t *p)
{
    unsigned char *der;
    apr_size_t len, cached_len;
    apr_time_t this_update, next_update;

    if (rs_staple_copy(e->staple, p, &der, &len, &this_update, &next_update) != APR_SUCCESS
        || next_update <= now
        /* another child stored a newer one: it is that one the cache lost */
        || (st->resp_this_update
            && rs_sched_should_replace(this_update, next_update, st->resp_this_update,
                                       st->resp_next_update, now))
        || (st->resp_this_update
            && rs_cache_resp_get(r->reg, r->s, e, r->scratch, RS_MAX_RESPONSE_LEN,
                                 &cached_len, p) == APR_SUCCESS))
        return 0;
    if (rs_cache_resp_put(r->reg, r->s, e, der, len, next_update, p) != APR_SUCCESS)
        return 0;
    if (st->resp_this_update != this_update || st->resp_next_update != next_update) {
        st->resp_this_update = this_update;
        st->resp_next_update = next_update;
        st->resp_revoked = rs_staple_revoked(e->staple);
        rs_shared_state_put(r->reg, e, st);
    }
    rs_cache_changed(r->reg, e);
    return 1;
}

/* Pick up what other children stored. Which certificates changed is read
 * from shared memory without any lock; the cache is read (under the mutex,
 * one certificate at a time) only for those, and for all of them during an
 * audit. */
static void sync_from_cache(refresher_t *r, apr_time_t now, apr_pool_t *p)
{
    apr_array_header_t *entries = r->reg->entries;
    apr_array_header_t *fresh = apr_array_make(p, 4, sizeof(pickup_t));
    apr_uint32_t gen = apr_atomic_read32(&r->reg->shared->generation);
    int i, audit = now >= r->next_audit;

    if (r->synced && gen == r->seen_generation && !audit)
        return;
    if (audit)
        r->next_audit = now + AUDIT_INTERVAL;
    /* a change during the scan bumps the generation again: seen next time */
    r->seen_generation = gen;
    r->synced = 1;
    /* a stopping child leaves at once: its exit must not wait for a walk
     * of every certificate (under prefork, 50 children at once) */
    for (i = 0; i < entries->nelts && !apr_atomic_read32(&r->stopping); i++) {
        rs_entry_t *e = APR_ARRAY_IDX(entries, i, rs_entry_t *);
        apr_uint32_t version = apr_atomic_read32(&r->reg->shared->entry[e->index].version);
        apr_time_t this_update, next_update;
        rs_state_t st;
        apr_size_t len;
        int in_flight, put_back, lost;

        if (!audit && version == e->seen_version)
            continue;
        if (apr_global_mutex_lock(r->reg->mutex) != APR_SUCCESS)
            return;
        rs_shared_state_get(r->reg, e, &st);
        apr_thread_mutex_lock(r->lock);
        in_flight = e->in_flight;
        if (!in_flight) /* may move earlier: a refresh requested on the status page */
            e->local_next = st.next_attempt;
        apr_thread_mutex_unlock(r->lock);
        put_back = audit && !in_flight && repopulate(r, e, &st, now, p);
        lost = 0;
        rs_staple_times(e->staple, &this_update, &next_update);
        /* thisUpdate has whole seconds: a response fetched in the same
         * second as ours differs in nextUpdate only (rs_staple_offer keeps
         * whichever is newer) */
        if (st.resp_this_update
            && (st.resp_this_update != this_update || st.resp_next_update != next_update)) {
            if (rs_cache_resp_get(r->reg, r->s, e, r->scratch, RS_MAX_RESPONSE_LEN, &len, p)
                == APR_SUCCESS) {
                pickup_t *pk = apr_array_push(fresh);
                pk->e = e;
                pk->der = apr_pmemdup(p, r->scratch, len);
                pk->len = len;
                pk->lost = 0;
            }
            else if (r->reg->store_dir) {
                pickup_t *pk = apr_array_push(fresh);
                pk->e = e;
                pk->der = NULL;
                pk->lost = next_update <= now && st.resp_next_update > now && !in_flight;
            }
            else if (next_update <= now && st.resp_next_update > now && !in_flight) {
                /* a valid response exists but the cache evicted it before this
                 * child got it: fetch it here rather than staple nothing */
                apr_thread_mutex_lock(r->lock);
                e->cache_lost = 1;
                e->local_next = now;
                apr_thread_mutex_unlock(r->lock);
                lost = 1;
            }
        }
        apr_global_mutex_unlock(r->reg->mutex);
        e->seen_version = version;
        /* the error log is a file: written with no cross-process lock held */
        if (put_back)
            ap_log_error(APLOG_MARK, APLOG_INFO, 0, r->s,
                         "RS0222: the shared cache %s had lost the response for %s; put back "
                         "the one valid until %s (a larger cache avoids this)",
                         r->reg->cache_desc, e->cert->subject, fmt_time(p, next_update));
        if (lost)
            ap_log_error(APLOG_MARK, APLOG_DEBUG, 0, r->s,
                         "RS0223: the response for %s is gone from the shared cache; "
                         "fetching it for this child", e->cert->subject);
    }

    /* verification (and reading the store) after the mutex is released */
    for (i = 0; i < fresh->nelts && !apr_atomic_read32(&r->stopping); i++) {
        pickup_t *pk = &APR_ARRAY_IDX(fresh, i, pickup_t);
        if (pk->der)
            install_from_cache(r, pk->e, pk->der, pk->len, now, p);
        else if (!install_from_store(r, pk->e, now, p) && pk->lost) {
            /* a valid response exists but neither the cache nor the store
             * has it for this child: fetch it here rather than staple nothing */
            apr_thread_mutex_lock(r->lock);
            pk->e->cache_lost = 1;
            pk->e->local_next = now;
            apr_thread_mutex_unlock(r->lock);
        }
    }
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
 * this server's, as if this server had fetched it: shared cache, shared
 * state, store, this child's staple. Releases this child's lease and slot
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
        && rs_cache_resp_put(r->reg, r->s, e, der, len, res->next_update, p) == APR_SUCCESS) {
        rs_state_adopt(&st, now, res, &r->reg->sched, jitter());
        rs_cache_changed(r->reg, e);
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
    offer(e, der, len, res, now);
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

/* The fleet's response for e, read into buf (RS_MAX_RESPONSE_LEN):
 * APR_SUCCESS and *res when it verifies, APR_NOTFOUND when it is missing
 * or does not verify (RS0604), anything else when the cache failed. */
static apr_status_t fleet_response(refresher_t *r, rs_entry_t *e, unsigned char *buf,
                                   apr_size_t *len, apr_time_t now, rs_ocsp_result_t *res,
                                   apr_pool_t *p)
{
    apr_status_t rv = rs_fleet_get(r->reg, r->s, RS_KEY_RESPONSE, e, buf, RS_MAX_RESPONSE_LEN,
                                   len, p);
    if (rv != APR_SUCCESS)
        return rv;
    return verify_cached(r, e, buf, *len, now, "RS0604", "fleet", r->reg->fleet_desc, res)
               ? APR_SUCCESS
               : APR_NOTFOUND;
}

static apr_status_t fleet_put_lease(refresher_t *r, rs_entry_t *e, apr_uint64_t owner,
                                    apr_time_t until, apr_pool_t *p)
{
    unsigned char lease[RS_LEASE_WIRE_LEN];
    rs_lease_encode(owner, until, lease);
    return rs_fleet_put(r->reg, r->s, RS_KEY_LEASE, e, lease, sizeof(lease), until, p);
}

/* rs_fleet_lease_take's view of the fleet cache, for one certificate */
typedef struct {
    refresher_t *r;
    rs_entry_t *e;
    apr_pool_t *p;
    unsigned char *buf;       /* the last response read, RS_MAX_RESPONSE_LEN */
    apr_size_t len;
} lease_baton_t;

static apr_status_t lease_response(void *baton, apr_time_t now, rs_ocsp_result_t *res)
{
    lease_baton_t *b = baton;
    return fleet_response(b->r, b->e, b->buf, &b->len, now, res, b->p);
}

static apr_status_t lease_get(void *baton, apr_uint64_t *owner, apr_time_t *until)
{
    lease_baton_t *b = baton;
    unsigned char lease[RS_LEASE_WIRE_LEN];
    apr_size_t len;
    apr_status_t rv = rs_fleet_get(b->r->reg, b->r->s, RS_KEY_LEASE, b->e, lease,
                                   sizeof(lease), &len, b->p);
    if (rv != APR_SUCCESS)
        return rv;
    /* garbage in the shared cache is nobody's lease */
    return rs_lease_decode(lease, len, owner, until) == APR_SUCCESS ? APR_SUCCESS
                                                                     : APR_NOTFOUND;
}

static apr_status_t lease_put(void *baton, apr_uint64_t owner, apr_time_t until)
{
    lease_baton_t *b = baton;
    return fleet_put_lease(b->r, b->e, owner, until, b->p);
}

static void lease_remove(void *baton)
{
    lease_baton_t *b = baton;
    rs_fleet_remove(b->r->reg, b->r->s, RS_KEY_LEASE, b->e, b->p);
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
    lease_baton_t b = { r, e, p, apr_palloc(p, RS_MAX_RESPONSE_LEN), 0 };
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
 * kept until this server's next retry, so the fleet backs off as one. */
static void fleet_after_fetch(refresher_t *r, rs_entry_t *e, int published,
                              const unsigned char *der, apr_size_t len, apr_time_t next_update,
                              int failed, apr_time_t retry_at, apr_pool_t *p)
{
    rs_registry_t *reg = r->reg;
    if (rs_fleet_down(reg))
        return;
    if (published) {
        if (rs_fleet_put(reg, r->s, RS_KEY_RESPONSE, e, der, len, next_update, p)
            == APR_SUCCESS)
            rs_fleet_bump(reg, r->s, p);
        rs_fleet_remove(reg, r->s, RS_KEY_LEASE, e, p);
    }
    else if (failed) {
        fleet_put_lease(r, e, r->owner, retry_at, p);
    }
    else {
        rs_fleet_remove(reg, r->s, RS_KEY_LEASE, e, p);
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
        rv = fleet_response(r, e, buf, &len, now, &res, ip);
        if (rv != APR_SUCCESS && rv != APR_NOTFOUND)
            break;
        valid = rv == APR_SUCCESS;
        if (valid)
            adopt(r, e, buf, len, &res, -1, now, NULL, ip);
        /* ours is put back when the fleet's is missing, invalid or older */
        if (rs_staple_copy(e->staple, ip, &der, &len, &this_update, &next_update)
                != APR_SUCCESS
            || next_update <= now
            || (valid && !rs_sched_should_replace(res.this_update, res.next_update,
                                                  this_update, next_update, now)))
            continue;
        if (rs_fleet_put(reg, r->s, RS_KEY_RESPONSE, e, der, len, next_update, ip)
            == APR_SUCCESS)
            pushed++;
    }
    apr_pool_destroy(ip);
    if (pushed) {
        ap_log_error(APLOG_MARK, APLOG_INFO, 0, r->s,
                     "RS0605: put %d response(s) the fleet cache %s lacked back into it",
                     pushed, reg->fleet_desc);
        rs_fleet_bump(reg, r->s, p);
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
        if (rs_fleet_claim_probe(reg, now) && rs_fleet_probe(reg, r->s, p) == APR_SUCCESS)
            rs_fleet_rejoin(reg, r->s);
        goto done;
    }
    if (rs_fleet_generation(reg, r->s, &gen, p) != APR_SUCCESS)
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
    rs_fleet_watch(r->reg, r->s, now);
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
    apr_time_t now, this_update, stapled_until;
    int newest = 0, shared = 0, n, i;
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
        shared = rs_cache_resp_put(r->reg, r->s, e, body, len, res.next_update, p)
                 == APR_SUCCESS;
        if (shared)
            rs_cache_changed(r->reg, e);
        /* the server holds it even when the cache cannot: scheduled as held
         * (no refetch at every retry minimum), the other children read it
         * from the store */
        rs_state_success(&st, now, &res, 1, &r->reg->sched, jitter());
    }
    else {
        rs_state_failure(&st, now, res.verdict, res.resp_status, res.detail, &r->reg->sched,
                         jitter());
    }
    for (i = 0; i < n; i++)
        rs_state_count(&st, attempts[i].method, attempts[i].result);
    event = alert_transition(&st, now);
    rs_shared_state_put(r->reg, e, &st);
    rs_slots_release(&r->reg->shared->slots, t->slot, r->owner);
    apr_global_mutex_unlock(r->reg->mutex);
    next_attempt = st.next_attempt;

    /* logging and disk I/O after the mutex is released */
    if (newest && !shared)
        ap_log_error(APLOG_MARK, APLOG_ERR, 0, r->s,
                     "RS0204: the response for %s (%" APR_SIZE_T_FMT " bytes) does not fit in "
                     "the shared cache %s; %s; ResilientStaplingCache shmcb:PATH(%" APR_SIZE_T_FMT
                     ") or larger holds it", e->cert->subject, len, r->reg->cache_desc,
                     r->reg->store_dir ? "the other children read it from the store"
                                       : "every child fetches it for itself (no store)",
                     rs_cache_size_for(len));
    if (r->reg->fleet)
        fleet_after_fetch(r, e, newest, body, len, res.next_update, !newest, st.next_attempt,
                          p);
    if (newest)
        rs_store_write(r->reg, r->s, e, body, len, p);
    if (newest && !shared && r->reg->store_dir)
        rs_cache_changed(r->reg, e); /* now in the store: the other children read it */
    rs_store_write_state(r->reg, r->s, e, &st, p);
    if (newest)
        offer(e, body, len, &res, now);
    rs_staple_times(e->staple, &this_update, &stapled_until);
    for (i = 0; i < n; i++)
        rs_log_attempt(r->s, e, &attempts[i], i == n - 1, &st, stapled_until, "", now, p);
    if (event)
        report(r, e, event, &st, now, p);

done:
    apr_pool_destroy(p);
    apr_thread_mutex_lock(r->lock);
    if (next_attempt)
        e->local_next = next_attempt;
    e->in_flight = 0;
    e->cache_lost = 0;
    apr_thread_cond_signal(r->cond);
    apr_thread_mutex_unlock(r->lock);
    return NULL;
}

/* --- the scheduler --- */

static void claim_due(refresher_t *r, apr_time_t now)
{
    apr_array_header_t *entries = r->reg->entries;
    apr_uint32_t full[MAX_FULL_RESPONDERS]; /* responders at their share, this pass */
    int i, k, nfull = 0;

    for (i = 0; i < entries->nelts && !apr_atomic_read32(&r->stopping); i++) {
        rs_entry_t *e = APR_ARRAY_IDX(entries, i, rs_entry_t *);
        rs_state_t st;
        int claimed, skip, force, slot = RS_SLOTS_FULL;
        task_t *t;

        apr_thread_mutex_lock(r->lock);
        skip = e->in_flight || e->local_next > now;
        force = e->cache_lost;
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
        claimed = rs_state_claim(&st, r->owner, now, &r->reg->sched, force);
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
        apr_thread_mutex_lock(r->lock);
        if (!claimed) {
            /* someone else is on it, or it is not due: look again then */
            e->local_next = st.next_attempt > now ? st.next_attempt : st.lease_until;
            apr_thread_mutex_unlock(r->lock);
            continue;
        }
        t = &r->tasks[i];
        t->slot = slot;
        e->in_flight = 1;
        e->local_next = st.lease_until;
        apr_thread_mutex_unlock(r->lock);
        if (apr_thread_pool_push(r->workers, fetch_task, t, APR_THREAD_TASK_PRIORITY_NORMAL,
                                 r) != APR_SUCCESS) {
            apr_thread_mutex_lock(r->lock);
            e->in_flight = 0;
            apr_thread_mutex_unlock(r->lock);
        }
    }
}

/* Time moves a certificate into "expiring" or "expired" without any fetch.
 * The shared state is only read when this child's own view changed. */
static void check_alerts(refresher_t *r, apr_time_t now, apr_pool_t *p)
{
    int i;
    for (i = 0; i < r->reg->entries->nelts && !apr_atomic_read32(&r->stopping); i++) {
        rs_entry_t *e = APR_ARRAY_IDX(r->reg->entries, i, rs_entry_t *);
        apr_time_t this_update, next_update;
        rs_alert_e mine;
        const char *event = NULL;
        rs_state_t st;

        rs_staple_times(e->staple, &this_update, &next_update);
        mine = rs_alert_of(this_update, next_update, rs_staple_revoked(e->staple), now);
        if ((int)mine == e->alert_seen)
            continue;
        e->alert_seen = (int)mine;
        if (apr_global_mutex_lock(r->reg->mutex) != APR_SUCCESS)
            continue;
        if (rs_shared_state_get(r->reg, e, &st)
            && (event = alert_transition(&st, now)) != NULL)
            rs_shared_state_put(r->reg, e, &st);
        apr_global_mutex_unlock(r->reg->mutex);
        if (event)
            report(r, e, event, &st, now, p);
    }
}

static apr_time_t next_wakeup(refresher_t *r, apr_time_t now)
{
    apr_time_t wake = now + SYNC_INTERVAL;
    int i;
    for (i = 0; i < r->reg->entries->nelts; i++) {
        rs_entry_t *e = APR_ARRAY_IDX(r->reg->entries, i, rs_entry_t *);
        apr_time_t this_update, next_update;
        if (!e->in_flight && e->local_next < wake)
            wake = e->local_next;
        rs_staple_times(e->staple, &this_update, &next_update);
        if (next_update <= now && now + SYNC_INTERVAL_EMPTY < wake)
            wake = now + SYNC_INTERVAL_EMPTY;
    }
    if (r->reg->fleet && r->fleet_next_poll < wake)
        wake = r->fleet_next_poll > now ? r->fleet_next_poll : now + FLEET_POLL;
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
        if (r->reg->fleet)
            fleet_tick(r, now);
        sync_from_cache(r, now, p);
        claim_due(r, now);
        check_alerts(r, now, p);

        apr_thread_mutex_lock(r->lock);
        wake = next_wakeup(r, apr_time_now());
        now = apr_time_now();
        if (!apr_atomic_read32(&r->stopping) && wake > now)
            apr_thread_cond_timedwait(r->cond, r->lock, wake - now);
        apr_thread_mutex_unlock(r->lock);
    }
    return NULL;
}

/* A pre-cleanup of pchild: runs before the subpools holding the lock and the
 * workers go away, and returns within one poll slice of a fetch in flight. */
static apr_status_t refresher_stop(void *data)
{
    refresher_t *r = data;
    apr_status_t trv;

    apr_thread_mutex_lock(r->lock);
    apr_atomic_set32(&r->stopping, 1);
    apr_thread_cond_broadcast(r->cond);
    apr_thread_mutex_unlock(r->lock);
    apr_thread_join(&trv, r->thread);
    apr_thread_pool_destroy(r->workers);
    return APR_SUCCESS;
}

apr_status_t rs_refresher_start(rs_registry_t *reg, apr_pool_t *pchild, server_rec *s,
                                rs_notifier_t *notifier)
{
    refresher_t *r = apr_pcalloc(pchild, sizeof(*r));
    apr_status_t rv;
    int i;

    /* everything the refresher's threads allocate from comes from r->pool:
     * pchild's allocator is not theirs to use (rs_thread_pool_create) */
    if ((rv = rs_thread_pool_create(&r->pool, pchild)) != APR_SUCCESS)
        return rv;
    r->reg = reg;
    r->notifier = notifier;
    r->scratch = apr_palloc(r->pool, RS_MAX_RESPONSE_LEN);
    r->tasks = apr_pcalloc(r->pool, sizeof(task_t) * (apr_size_t)reg->entries->nelts);
    for (i = 0; i < reg->entries->nelts; i++) {
        r->tasks[i].r = r;
        r->tasks[i].e = APR_ARRAY_IDX(reg->entries, i, rs_entry_t *);
    }
    r->s = s;
    apr_generate_random_bytes((unsigned char *)&r->owner, sizeof(r->owner));
    if ((rv = apr_thread_mutex_create(&r->lock, APR_THREAD_MUTEX_DEFAULT, r->pool))
               != APR_SUCCESS
        || (rv = apr_thread_cond_create(&r->cond, r->pool)) != APR_SUCCESS
        || (rv = apr_thread_pool_create(&r->workers, 0, (apr_size_t)reg->max_fetches, r->pool)) != APR_SUCCESS)
        return rv;
    /* Responses already in the cache (restored from the store, or fetched by
     * other children) are installed before this child takes its first
     * connection: right after a restart the first handshake is stapled. */
    {
        apr_pool_t *p;
        apr_pool_create(&p, r->pool);
        sync_from_cache(r, apr_time_now(), p);
        apr_pool_destroy(p);
    }
    if ((rv = apr_thread_create(&r->thread, NULL, scheduler, r, r->pool)) != APR_SUCCESS)
        return rv;
    apr_pool_pre_cleanup_register(pchild, r, refresher_stop);
    return APR_SUCCESS;
}
