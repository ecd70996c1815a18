/* mod_resilient_stapling_fleet_client.c: this server's steps with the
 * fleet (the cache several servers share, mod_resilient_stapling_fleet.c).
 *
 * Before a due certificate is fetched: take a newer response another
 * server published, wait while another server fetches, or take the fleet
 * lease (rs_fleet_lease.h decides; this file is its cache, clock and
 * sleep). After a fetch: publish what is new. And the leader polls the
 * fleet's generation record, comparing every certificate with the fleet
 * cache when it changed: what is newer there is adopted, what it lacks is
 * put back. Everything it takes becomes the server's through
 * rs_shared_offer, like a fetched response.
 *
 * All of it is per child (rs_fleet_client_t, made by the refresher); the
 * server-wide part is in the segment (rs_shared.h).
 */
#include <apr_atomic.h>
#include <apr_strings.h>
#include <apr_thread_pool.h>
#include <httpd.h>
#include <http_log.h>

#include "mod_resilient_stapling.h"
#include "rs_fleet_lease.h"
#include "rs_record.h"

APLOG_USE_MODULE(resilient_stapling);

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

struct rs_fleet_client_t {
    rs_registry_t *reg;
    server_rec *s;
    rs_fleet_t *fleet;        /* this child's calls of the fleet cache */
    apr_pool_t *pool;         /* the refresher's: its threads allocate from it */
    apr_uint64_t owner;       /* this child's lease token */
    rs_cancel_fn *stopping;   /* the child is stopping */
    void *stopping_baton;
    apr_uint32_t lease_gap;   /* atomic: usual lease read-to-write time, us */
    apr_uint32_t polling;     /* a fleet poll is queued or running; atomic */
    apr_time_t next_poll;     /* scheduler thread only */
};

rs_fleet_client_t *rs_fleet_client_make(rs_registry_t *reg, server_rec *s, apr_uint64_t owner,
                                        rs_cancel_fn *stopping, void *baton, apr_pool_t *pool)
{
    rs_fleet_client_t *c = apr_pcalloc(pool, sizeof(*c));
    c->reg = reg;
    c->s = s;
    c->pool = pool;
    c->owner = owner;
    c->stopping = stopping;
    c->stopping_baton = baton;
    c->fleet = rs_fleet_child_init(reg, s);
    return c;
}

void rs_fleet_client_stop(rs_fleet_client_t *c)
{
    rs_fleet_stop(c->fleet);
}

static int stopping(rs_fleet_client_t *c)
{
    return c->stopping(c->stopping_baton);
}

/* A response read from a cache is verified like one from the network: the
 * cache may be memcached or Redis, trusted no more than the network. code,
 * kind and desc name the cache in the log line when it is not valid. */
static void log_invalid(rs_fleet_client_t *c, rs_entry_t *e, const char *code, const char *kind,
                        const char *desc, const rs_ocsp_result_t *res)
{
    ap_log_error(APLOG_MARK, APLOG_WARNING, 0, c->s,
                 "%s: response for %s in the %s cache %s is not valid (%s: %s), ignored", code,
                 e->cert->subject, kind, desc, rs_verdict_name(res->verdict), res->detail);
}

/* A verified response another server stored in the fleet cache becomes
 * this server's, as if this server had fetched it: shared memory (every
 * child staples it), shared state, store. Releases this child's lease and slot
 * (slot < 0: none). Returns 1 if it was newer than ours. */
static int adopt(rs_fleet_client_t *c, rs_entry_t *e, const unsigned char *der, apr_size_t len,
                 const rs_ocsp_result_t *res, int slot, apr_time_t now, apr_time_t *next,
                 apr_pool_t *p)
{
    rs_offer_t o;
    rs_outcome_t out;

    memset(&o, 0, sizeof(o));
    o.origin = RS_ORIGIN_ADOPTED;
    o.index = e->index;
    o.owner = c->owner;
    o.slot = slot;
    o.now = now;
    o.jitter = rs_jitter();
    o.der = der;
    o.len = len;
    o.res = *res;
    if (rs_shared_offer(c->reg->shared, &o, &out) != APR_SUCCESS)
        return 0;
    if (next)
        *next = out.st.next_attempt;
    if (!out.installed)
        return 0;
    rs_store_write(c->reg, c->s, e, der, len, p);
    ap_log_error(APLOG_MARK, APLOG_INFO, 0, c->s,
                 "RS0603: took the %s response for %s (valid until %s) from the fleet cache %s",
                 rs_verdict_name(res->verdict), e->cert->subject, rs_fmt_time(p, res->next_update),
                 c->reg->fleet_desc);
    return 1;
}

/* Another server fetches this certificate: give back the lease and slot,
 * look again when its lease ends (its new response usually comes first,
 * through the fleet poll). */
static apr_time_t wait_for_fleet(rs_fleet_client_t *c, rs_entry_t *e, int slot, apr_time_t until)
{
    rs_shared_yield(c->reg->shared, e->index, c->owner, slot, until, apr_time_now());
    return until;
}

/* A record of e in the fleet cache that is not what its key says (kind
 * RS_KEY_RESPONSE or RS_KEY_LEASE): 1 if it is to be logged, once per key
 * and change: anyone can write to memcached, and a bad record stays there
 * while every server reads it at every scan. digest 0: the record is good
 * again. */
static int fleet_bad(rs_fleet_client_t *c, rs_entry_t *e, char kind, const unsigned char *data,
                     apr_size_t len, int valid)
{
    return rs_fleet_note_bad(c->reg, e, kind, valid ? 0 : rs_record_digest(kind, data, len))
           && !valid;
}

/* The fleet's response for e, read into buf (RS_MAX_RESPONSE_LEN; a larger
 * record is not even copied): APR_SUCCESS and *res when it verifies,
 * APR_NOTFOUND when it is missing, too large (RS0608) or does not verify
 * (RS0604), anything else when the cache failed. */
static apr_status_t fleet_response(rs_fleet_client_t *c, rs_entry_t *e, unsigned char *buf,
                                   apr_size_t *len, apr_time_t now, rs_ocsp_result_t *res)
{
    apr_status_t rv = rs_fleet_get(c->fleet, RS_KEY_RESPONSE, e, buf, RS_MAX_RESPONSE_LEN,
                                   len);
    int valid;

    if (rv == APR_ENOSPC) {
        if (fleet_bad(c, e, RS_KEY_RESPONSE, NULL, 0, 0))
            ap_log_error(APLOG_MARK, APLOG_WARNING, 0, c->s,
                         "RS0608: the fleet cache %s holds more than %d KiB under the response "
                         "key of %s: ignored (and replaced)", c->reg->fleet_desc,
                         RS_MAX_RESPONSE_LEN / 1024, e->cert->subject);
        return APR_NOTFOUND;
    }
    if (rv != APR_SUCCESS)
        return rv;
    rs_ocsp_check(e->cert, buf, *len, now, c->reg->skew, res);
    valid = rs_verdict_is_valid(res->verdict);
    if (fleet_bad(c, e, RS_KEY_RESPONSE, buf, *len, valid))
        log_invalid(c, e, "RS0604", "fleet", c->reg->fleet_desc, res);
    return valid ? APR_SUCCESS : APR_NOTFOUND;
}

static apr_status_t fleet_put_lease(rs_fleet_client_t *c, rs_entry_t *e, apr_uint64_t owner,
                                    apr_time_t until)
{
    unsigned char lease[RS_LEASE_WIRE_LEN];
    rs_lease_encode(owner, until, lease);
    return rs_fleet_put(c->fleet, RS_KEY_LEASE, e, lease, sizeof(lease), until);
}

/* rs_fleet_lease_take's view of the fleet cache, for one certificate */
typedef struct {
    rs_fleet_client_t *c;
    rs_entry_t *e;
    unsigned char *buf;       /* the last response read, RS_MAX_RESPONSE_LEN */
    apr_size_t len;
} lease_baton_t;

static apr_status_t lease_response(void *baton, apr_time_t now, rs_ocsp_result_t *res)
{
    lease_baton_t *b = baton;
    return fleet_response(b->c, b->e, b->buf, &b->len, now, res);
}

static apr_status_t lease_get(void *baton, apr_uint64_t *owner, apr_time_t *until)
{
    lease_baton_t *b = baton;
    unsigned char lease[RS_LEASE_WIRE_LEN];
    apr_size_t len;
    apr_status_t rv = rs_fleet_get(b->c->fleet, RS_KEY_LEASE, b->e, lease,
                                   sizeof(lease), &len);
    int valid;

    if (rv != APR_SUCCESS && rv != APR_ENOSPC)
        return rv;
    /* garbage in the shared cache is nobody's lease */
    valid = rv == APR_SUCCESS && rs_lease_decode(lease, len, owner, until) == APR_SUCCESS;
    if (fleet_bad(b->c, b->e, RS_KEY_LEASE, lease, rv == APR_SUCCESS ? len : 0, valid))
        ap_log_error(APLOG_MARK, APLOG_WARNING, 0, b->c->s,
                     "RS0608: the fleet cache %s holds a record under the lease key of %s that "
                     "is not a lease (%s): taken for no lease", b->c->reg->fleet_desc,
                     b->e->cert->subject, rv == APR_ENOSPC ? "too large" : "garbage");
    return valid ? APR_SUCCESS : APR_NOTFOUND;
}

static apr_status_t lease_put(void *baton, apr_uint64_t owner, apr_time_t until)
{
    lease_baton_t *b = baton;
    return fleet_put_lease(b->c, b->e, owner, until);
}

static void lease_remove(void *baton)
{
    lease_baton_t *b = baton;
    rs_fleet_remove(b->c->fleet, RS_KEY_LEASE, b->e);
}

static void lease_state(void *baton, rs_state_t *st)
{
    lease_baton_t *b = baton;
    /* a lock that fails reads as nothing known: fetch */
    rs_shared_read(b->c->reg->shared, b->e->index, st);
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
    while (apr_time_now() < until && !stopping(b->c))
        apr_sleep(apr_time_from_msec(10));
    return stopping(b->c);
}

/* Before fetching a due certificate: take the fleet's newer response, wait
 * while another server fetches, or take the fleet lease
 * (rs_fleet_lease.h). Returns RS_FLEET_FETCH when this child should fetch
 * (also whenever the fleet cache fails: the server fends for itself);
 * otherwise lease and slot are given back and *until is when to look again. */
rs_fleet_action_e rs_fleet_before_fetch(rs_fleet_client_t *c, rs_entry_t *e, int slot,
                                        apr_time_t *until, apr_pool_t *p)
{
    lease_baton_t b = { c, e, apr_palloc(p, RS_MAX_RESPONSE_LEN), 0 };
    const rs_fleet_lease_ops_t ops = {
        .baton = &b, .response = lease_response, .lease_get = lease_get, .lease_put = lease_put,
        .lease_remove = lease_remove, .state = lease_state, .now = lease_now,
        .sleep = lease_sleep};
    rs_fleet_lease_args_t args;
    rs_fleet_lease_t out;
    apr_uint32_t v = 0;

    /* a fleet cache that is down: the server fends for itself */
    if (rs_fleet_down(c->fleet))
        return RS_FLEET_FETCH;
    apr_generate_random_bytes((unsigned char *)&v, sizeof(v));
    args.me = c->owner;
    args.hold = c->reg->sched.lease;
    args.fetch_max = c->reg->timeout;
    args.usual_gap = (apr_interval_time_t)apr_atomic_read32(&c->lease_gap);
    args.spread = apr_time_from_msec(v % FLEET_SETTLE_SPREAD_MS);
    rs_fleet_lease_take(&ops, &c->reg->sched, &args, &out);
    /* a call that hung (a frozen memcached) says nothing about the usual
     * gap; capped, it also fits the 32-bit average */
    if (out.gap)
        apr_atomic_set32(&c->lease_gap,
                         (apr_uint32_t)((3 * args.usual_gap
                                         + (out.gap < LEASE_GAP_MAX ? out.gap : LEASE_GAP_MAX))
                                        / 4));

    if (out.bogus_until && rs_fleet_note_bogus_lease(c->reg))
        ap_log_error(APLOG_MARK, APLOG_WARNING, 0, c->s,
                     "RS0607: the fleet lease for %s runs until %s, beyond what any server may "
                     "hold it (%ld s): planted in the cache, or written by a server whose clock "
                     "is ahead; ignored (logged once per server)", e->cert->subject,
                     rs_fmt_time(p, out.bogus_until), (long)apr_time_sec(args.hold));
    if (out.action == RS_FLEET_ADOPT) {
        adopt(c, e, b.buf, b.len, &out.res, slot, apr_time_now(), until, p);
        return RS_FLEET_ADOPT;
    }
    if (out.action == RS_FLEET_WAIT) {
        if (out.gap > out.late)
            ap_log_error(APLOG_MARK, APLOG_INFO, 0, c->s,
                         "RS0606: the fleet lease for %s was written %ld ms after it was read "
                         "(more than %ld ms): another server may be fetching it; looking again "
                         "after the responder timeout", e->cert->subject,
                         (long)apr_time_as_msec(out.gap), (long)apr_time_as_msec(out.late));
        *until = wait_for_fleet(c, e, slot, out.wait_until);
    }
    return out.action;
}

/* After this server fetched: a new response is published (response, then
 * generation, then the lease is dropped); after a failure the lease is
 * kept a lease's length at most (rs_fleet_lease_after_failure), so the
 * fleet does not rush a responder that just failed, yet is not held back
 * by a failure that may be this server's alone. */
void rs_fleet_after_fetch(rs_fleet_client_t *c, rs_entry_t *e, int published,
                              const unsigned char *der, apr_size_t len, apr_time_t next_update,
                              int failed, apr_time_t retry_at)
{
    rs_registry_t *reg = c->reg;
    if (rs_fleet_down(c->fleet))
        return;
    if (published) {
        if (rs_fleet_put(c->fleet, RS_KEY_RESPONSE, e, der, len, next_update) == APR_SUCCESS)
            rs_fleet_bump(c->fleet);
        rs_fleet_remove(c->fleet, RS_KEY_LEASE, e);
    }
    else if (failed) {
        fleet_put_lease(c, e, c->owner,
                        rs_fleet_lease_after_failure(apr_time_now(), retry_at, reg->sched.lease));
    }
    else {
        rs_fleet_remove(c->fleet, RS_KEY_LEASE, e);
    }
}

/* Compare every certificate with the fleet cache: take what is newer there,
 * put back what it lacks or holds older (it was flushed, restarted, or
 * evicted it; or this server fetched while it was down). */
static void fleet_scan(rs_fleet_client_t *c, apr_pool_t *p)
{
    rs_registry_t *reg = c->reg;
    unsigned char *buf = apr_palloc(p, RS_MAX_RESPONSE_LEN);
    apr_pool_t *ip;
    int i, pushed = 0;

    apr_pool_create(&ip, p);
    for (i = 0; i < reg->entries->nelts && !stopping(c) && !rs_fleet_down(c->fleet); i++) {
        rs_entry_t *e = APR_ARRAY_IDX(reg->entries, i, rs_entry_t *);
        apr_time_t now = apr_time_now(), this_update, next_update;
        rs_ocsp_result_t res;
        unsigned char *der;
        apr_size_t len;
        apr_status_t rv;
        int valid;

        apr_pool_clear(ip);
        rv = fleet_response(c, e, buf, &len, now, &res);
        if (rv != APR_SUCCESS && rv != APR_NOTFOUND)
            break;
        valid = rv == APR_SUCCESS;
        if (valid)
            adopt(c, e, buf, len, &res, -1, now, NULL, ip);
        /* ours is put back when the fleet's is missing, invalid or older */
        if (rs_shm_staple_copy(reg->staples, e->index, ip, &der, &len, &this_update,
                               &next_update) != APR_SUCCESS
            || next_update <= now
            || (valid && !rs_sched_should_replace(res.this_update, res.next_update,
                                                  this_update, next_update, now)))
            continue;
        if (rs_fleet_put(c->fleet, RS_KEY_RESPONSE, e, der, len, next_update) == APR_SUCCESS)
            pushed++;
    }
    apr_pool_destroy(ip);
    if (pushed) {
        ap_log_error(APLOG_MARK, APLOG_INFO, 0, c->s,
                     "RS0605: put %d response(s) the fleet cache %s lacked back into it",
                     pushed, reg->fleet_desc);
        rs_fleet_bump(c->fleet);
    }
}

/* One per child at a time, on the worker pool: cache calls may hang, and
 * the scheduler thread must go on serving this server's children. */
static void *APR_THREAD_FUNC fleet_poll_task(apr_thread_t *thread, void *data)
{
    rs_fleet_client_t *c = data;
    rs_registry_t *reg = c->reg;
    rs_shared_fleet_t *sf = rs_shared_fleet(reg->shared);
    apr_time_t now = apr_time_now();
    apr_uint32_t gen, seen;
    apr_pool_t *p;
    int audit = 0;
    (void)thread;

    apr_pool_create(&p, c->pool);
    if (rs_fleet_down(c->fleet)) {
        if (rs_fleet_claim_probe(c->fleet, now) && rs_fleet_probe(c->fleet) == APR_SUCCESS)
            rs_fleet_rejoin(c->fleet);
        goto done;
    }
    if (rs_fleet_generation(c->fleet, &gen) != APR_SUCCESS)
        goto done;
    audit = rs_shared_fleet_audit(reg->shared, now, FLEET_AUDIT);
    seen = apr_atomic_read32(&sf->seen);
    /* one child per server scans a new generation */
    if ((gen != seen && apr_atomic_cas32(&sf->seen, gen, seen) == seen) || audit)
        fleet_scan(c, p);
done:
    apr_pool_destroy(p);
    apr_atomic_set32(&c->polling, 0);
    return NULL;
}

void rs_fleet_tick(rs_fleet_client_t *c, apr_thread_pool_t *workers, apr_time_t now)
{
    if (now < c->next_poll || apr_atomic_read32(&c->polling))
        return;
    c->next_poll = now + FLEET_POLL;
    apr_atomic_set32(&c->polling, 1);
    if (apr_thread_pool_push(workers, fleet_poll_task, c, APR_THREAD_TASK_PRIORITY_HIGH, c)
        != APR_SUCCESS)
        apr_atomic_set32(&c->polling, 0);
}
apr_time_t rs_fleet_wake(const rs_fleet_client_t *c, apr_time_t now, apr_time_t wake)
{
    if (c->next_poll < wake)
        wake = c->next_poll > now ? c->next_poll : now + FLEET_POLL;
    return wake;
}
