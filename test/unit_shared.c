/* Unit tests: a server's shared record (rs_shared.h), with the children of
 * a server played against one segment in plain memory. A race between
 * children is the order in which their transactions reach the lock: each
 * test stages one order that a fix was about and checks what the record
 * holds afterwards. The lock is a flag the copy callback checks, so a
 * response is only ever copied under it. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <apr_general.h>

#include "rs_shared.h"

#define S(x) apr_time_from_sec(x)
#define T0 S(1700000000)  /* a thisUpdate, in whole seconds as OCSP has them */
#define NCERTS 3
#define ARENA (64 * 1024)
#define CHILD_A 0xa
#define CHILD_B 0xb
#define CHILD_C 0xc

static const rs_sched_conf_t conf = {
    .renew_window_pct = 50, .retry_min = S(60), .retry_max = S(3600), .lease = S(20)};

static apr_pool_t *pool;

typedef struct {
    rs_shared_t *sh;
    void *mem;
    int locked;
    int puts;          /* responses copied into the segment */
    int no_room;       /* the copy fails with APR_ENOSPC */
    int lock_fails;
} fixture_t;

static fixture_t fx;

static apr_status_t fake_lock(void *baton)
{
    fixture_t *f = baton;
    if (f->lock_fails)
        return APR_EGENERAL;
    assert_false(f->locked); /* one transaction at a time, never nested */
    f->locked = 1;
    return APR_SUCCESS;
}

static void fake_unlock(void *baton)
{
    fixture_t *f = baton;
    assert_true(f->locked);
    f->locked = 0;
}

static apr_status_t fake_resp_put(void *baton, int index, const unsigned char *der,
                                  apr_size_t len, const rs_ocsp_result_t *res)
{
    fixture_t *f = baton;
    assert_true(f->locked); /* the copy and the state change are one step */
    if (f->no_room)
        return APR_ENOSPC;
    f->puts++;
    return rs_shm_staple_set(rs_shared_staples(f->sh), index, der, len, res->this_update,
                             res->next_update, res->verdict == RS_VERDICT_REVOKED);
}

static int setup(void **state)
{
    rs_shared_ops_t ops = {
        .baton = &fx, .lock = fake_lock, .unlock = fake_unlock, .resp_put = fake_resp_put};
    (void)state;
    memset(&fx, 0, sizeof(fx));
    fx.mem = malloc(rs_shared_size(NCERTS, ARENA));
    fx.sh = rs_shared_init(fx.mem, NCERTS, ARENA, &conf, &ops, pool);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    free(fx.mem);
    return 0;
}

/* a verified response valid from this_update for `life` */
static rs_ocsp_result_t good(apr_time_t this_update, apr_interval_time_t life)
{
    rs_ocsp_result_t res;
    memset(&res, 0, sizeof(res));
    res.verdict = RS_VERDICT_GOOD;
    res.this_update = this_update;
    res.next_update = this_update + life;
    return res;
}

/* distinct bytes per response, so that what is stapled can be told apart */
static const unsigned char *der_of(const rs_ocsp_result_t *res, apr_size_t *len)
{
    static unsigned char buf[8][64];
    static int next;
    unsigned char *d = buf[next++ % 8];
    memset(d, 0, 64);
    memcpy(d, &res->this_update, sizeof(res->this_update));
    memcpy(d + 8, &res->next_update, sizeof(res->next_update));
    *len = 64;
    return d;
}

static rs_offer_t offer_of(rs_origin_e origin, int index, apr_uint64_t owner, int slot,
                           apr_time_t now)
{
    rs_offer_t o;
    memset(&o, 0, sizeof(o));
    o.origin = origin;
    o.index = index;
    o.owner = owner;
    o.slot = slot;
    o.now = now;
    return o;
}

/* A child's fetch round that brought res (one GET), offered as it ends. */
static rs_outcome_t fetched(int index, apr_uint64_t owner, int slot, apr_time_t now,
                            rs_ocsp_result_t res, rs_attempt_t *attempt)
{
    rs_offer_t o = offer_of(RS_ORIGIN_FETCHED, index, owner, slot, now);
    rs_outcome_t out;
    memset(attempt, 0, sizeof(*attempt));
    attempt->method = RS_METHOD_GET;
    attempt->result = rs_verdict_is_valid(res.verdict) ? RS_RESULT_OK : RS_RESULT_TRANSPORT;
    attempt->res = res;
    o.res = res;
    if (rs_verdict_is_valid(res.verdict))
        o.der = der_of(&res, &o.len);
    o.attempts = attempt;
    o.nattempts = 1;
    assert_int_equal(rs_shared_offer(fx.sh, &o, &out), APR_SUCCESS);
    return out;
}

/* The fleet's response, taken by a child (slot -1: the fleet scan). */
static rs_outcome_t adopted(int index, apr_uint64_t owner, int slot, apr_time_t now,
                            rs_ocsp_result_t res)
{
    rs_offer_t o = offer_of(RS_ORIGIN_ADOPTED, index, owner, slot, now);
    rs_outcome_t out;
    o.res = res;
    o.der = der_of(&res, &o.len);
    assert_int_equal(rs_shared_offer(fx.sh, &o, &out), APR_SUCCESS);
    return out;
}

static rs_outcome_t restored(int index, apr_time_t now, const rs_ocsp_result_t *res,
                             const rs_state_t *stored)
{
    rs_offer_t o = offer_of(RS_ORIGIN_RESTORED, index, 0, -1, now);
    rs_outcome_t out;
    o.stored = stored;
    if (res) {
        o.res = *res;
        o.der = der_of(res, &o.len);
    }
    assert_int_equal(rs_shared_offer(fx.sh, &o, &out), APR_SUCCESS);
    return out;
}

/* What every child's handshakes staple for index. */
static void assert_stapled(int index, apr_time_t this_update, apr_time_t next_update)
{
    apr_time_t tu, nu;
    rs_shm_staple_times(rs_shared_staples(fx.sh), index, &tu, &nu, NULL);
    assert_int_equal(tu, this_update);
    assert_int_equal(nu, next_update);
}

static rs_state_t state_of(int index)
{
    rs_state_t st;
    assert_int_equal(rs_shared_read(fx.sh, index, &st), APR_SUCCESS);
    return st;
}

static int claim(int index, apr_uint64_t owner, int max, apr_time_t now, rs_claim_e expect)
{
    int slot;
    assert_int_equal(rs_shared_claim(fx.sh, index, owner, 1, max, now, &slot), expect);
    return slot;
}

/* ca35749: thisUpdate has whole seconds. A child's fetch and another
 * child's pickup of a fleet response from the same second, differing in
 * nextUpdate only: whichever reaches the record first, the longer one is
 * what every child staples, and the other is not newer. */
static void test_fetch_and_pickup_same_second(void **state)
{
    rs_ocsp_result_t shorter = good(T0, S(6)), longer = good(T0, S(8));
    rs_attempt_t a;
    rs_outcome_t out;
    apr_time_t now = T0 + S(1);
    int slot;
    (void)state;

    /* the pickup first, then the fetch */
    slot = claim(0, CHILD_A, 8, now, RS_CLAIM_TAKEN);
    out = adopted(0, CHILD_B, -1, now, longer);
    assert_true(out.installed);
    out = fetched(0, CHILD_A, slot, now, shorter, &a);
    assert_false(out.installed);
    assert_true(out.not_newer);
    assert_int_equal(a.result, RS_RESULT_NOT_NEWER);
    assert_int_equal(a.res.verdict, RS_VERDICT_NOT_NEWER);
    assert_stapled(0, T0, T0 + S(8));
    assert_int_equal(out.st.resp_next_update, T0 + S(8));

    /* the fetch first, then the pickup */
    slot = claim(1, CHILD_A, 8, now, RS_CLAIM_TAKEN);
    out = fetched(1, CHILD_A, slot, now, shorter, &a);
    assert_true(out.installed);
    out = adopted(1, CHILD_B, -1, now, longer);
    assert_true(out.installed);
    assert_stapled(1, T0, T0 + S(8));
    assert_int_equal(state_of(1).resp_next_update, T0 + S(8));
}

/* 85803b9: a child puts back the response it had (the store's, the fleet
 * cache's older copy) after another child fetched a newer one: the older
 * one never replaces it, whatever path brings it back. */
static void test_put_back_against_newer_fetch(void **state)
{
    rs_ocsp_result_t older = good(T0, S(3600)), newer = good(T0 + S(600), S(3600));
    rs_attempt_t a;
    rs_outcome_t out;
    apr_time_t now = T0 + S(700);
    rs_state_t before;
    int slot;
    (void)state;

    slot = claim(0, CHILD_A, 8, now, RS_CLAIM_TAKEN);
    out = fetched(0, CHILD_A, slot, now, newer, &a);
    assert_true(out.installed);
    before = state_of(0);

    out = adopted(0, CHILD_B, -1, now + S(1), older);
    assert_false(out.installed);
    assert_true(out.not_newer);
    out = restored(0, now + S(1), &older, NULL);
    assert_false(out.installed);
    assert_true(out.not_newer);
    assert_stapled(0, T0 + S(600), T0 + S(4200));
    /* the refused ones left the record as the fetch made it */
    assert_memory_equal(&before, &out.st, sizeof(before));
    assert_int_equal(fx.puts, 1);
}

/* d0cd6e8: the same response (same thisUpdate and nextUpdate) offered
 * again, by the fleet scan or a CDN's cached GET, even once it expired, is
 * never installed again: nothing changes, and whoever logs or republishes
 * what it installs would do so forever. */
static void test_same_response_twice(void **state)
{
    rs_ocsp_result_t r = good(T0, S(60));
    rs_attempt_t a;
    rs_outcome_t out;
    int slot;
    (void)state;

    slot = claim(0, CHILD_A, 8, T0, RS_CLAIM_TAKEN);
    assert_true(fetched(0, CHILD_A, slot, T0, r, &a).installed);
    assert_false(adopted(0, CHILD_B, -1, T0 + S(1), r).installed);
    /* expired by now: still the same one */
    assert_false(adopted(0, CHILD_B, -1, T0 + S(120), r).installed);
    slot = claim(0, CHILD_A, 8, T0 + S(120), RS_CLAIM_TAKEN);
    out = fetched(0, CHILD_A, slot, T0 + S(120), r, &a);
    assert_false(out.installed);
    assert_int_equal(a.result, RS_RESULT_NOT_NEWER);
    assert_int_equal(fx.puts, 1);
}

/* A child that holds lease and slot finds the fleet's response is the one
 * it fetched itself (it published it): nothing is adopted, and lease and
 * slot are given back, or the certificate would wait for a lease that no
 * fetch ends and the slot would be lost to the server until it expires. */
static void test_adopt_against_own_fetch(void **state)
{
    rs_ocsp_result_t r = good(T0, S(3600));
    rs_attempt_t a;
    rs_outcome_t out;
    apr_time_t now = T0 + S(1);
    int slot;
    (void)state;

    slot = claim(0, CHILD_A, 1, now, RS_CLAIM_TAKEN);
    assert_true(fetched(0, CHILD_A, slot, now, r, &a).installed);
    /* the leader's fleet scan reads back what A published */
    assert_false(adopted(0, CHILD_B, -1, now + S(1), r).installed);

    /* due again; the fleet still holds the one this server has */
    now = state_of(0).next_attempt;
    slot = claim(0, CHILD_A, 1, now, RS_CLAIM_TAKEN);
    out = adopted(0, CHILD_A, slot, now, r);
    assert_false(out.installed);
    assert_int_equal(out.st.lease_owner, 0);
    assert_int_equal(out.st.lease_until, 0);
    /* the one slot of the server is free again */
    claim(1, CHILD_C, 1, now, RS_CLAIM_TAKEN);
}

/* The store's response comes back at startup with its counters, never
 * with a lease; a fetch that brings the same one is not newer, a newer one
 * replaces it. */
static void test_restore_then_fetch(void **state)
{
    rs_ocsp_result_t stored_resp = good(T0, S(3600)), newer = good(T0 + S(1800), S(3600));
    rs_state_t stored;
    rs_attempt_t a;
    rs_outcome_t out;
    apr_time_t now = T0 + S(2000);
    int slot;
    (void)state;

    rs_state_init(&stored);
    stored.fetches = 3;
    stored.lease_owner = CHILD_A; /* a child of the last run was fetching */
    stored.lease_until = now + S(10);
    out = restored(0, now, &stored_resp, &stored);
    assert_true(out.installed);
    assert_int_equal(out.st.fetches, 3);
    assert_int_equal(out.st.lease_owner, 0);
    assert_int_equal(out.st.resp_next_update, T0 + S(3600));
    /* past its renewal: due at once */
    assert_true(out.st.next_attempt <= now);

    slot = claim(0, CHILD_B, 8, now, RS_CLAIM_TAKEN);
    out = fetched(0, CHILD_B, slot, now, stored_resp, &a);
    assert_false(out.installed);
    assert_int_equal(a.result, RS_RESULT_NOT_NEWER);
    slot = claim(0, CHILD_B, 8, out.st.next_attempt, RS_CLAIM_TAKEN);
    out = fetched(0, CHILD_B, slot, out.st.next_attempt, newer, &a);
    assert_true(out.installed);
    assert_stapled(0, T0 + S(1800), T0 + S(5400));

    /* nothing stored, no counters: nothing written, due at once */
    out = restored(1, now, NULL, NULL);
    assert_false(out.written);
    claim(1, CHILD_B, 8, now, RS_CLAIM_TAKEN);
}

/* An admin's refresh while a child's fetch is in flight: it is due now,
 * but no second child fetches alongside the first (its lease is live);
 * the fetch that ends clears the request. A second refresh within the
 * minimum interval is refused (a refresh button must not hammer the
 * responder). */
static void test_refresh_now_while_in_flight(void **state)
{
    rs_ocsp_result_t held = good(T0, S(3600)), newer = good(T0 + S(10), S(3600));
    rs_attempt_t a;
    rs_outcome_t out;
    apr_time_t now = T0 + S(5);
    int slot;
    (void)state;

    slot = claim(0, CHILD_A, 8, T0, RS_CLAIM_TAKEN);
    assert_true(fetched(0, CHILD_A, slot, T0, held, &a).installed);
    slot = claim(0, CHILD_A, 8, now, RS_CLAIM_NOT_DUE); /* renewal is far off */

    assert_true(rs_shared_refresh_now(fx.sh, 0, now, S(60)));
    assert_true(state_of(0).refresh_asked);
    slot = claim(0, CHILD_A, 8, now, RS_CLAIM_TAKEN);
    /* in flight: the admin asks again, another child looks */
    assert_false(rs_shared_refresh_now(fx.sh, 0, now + S(1), S(60)));
    claim(0, CHILD_B, 8, now + S(1), RS_CLAIM_NOT_DUE);

    out = fetched(0, CHILD_A, slot, now + S(10), newer, &a);
    assert_true(out.installed);
    assert_false(out.st.refresh_asked);
    assert_int_equal(out.st.forced_next, 0);
    assert_int_equal(out.st.lease_owner, 0);
    assert_true(out.st.next_attempt > now + S(10));
}

/* A child died holding a fetch slot: the slot is the server's again when
 * its lease ends, and what the dead child's fetch would still release
 * (a child that was only slow) never frees the slot its successor holds. */
static void test_slot_held_by_dead_owner(void **state)
{
    rs_ocsp_result_t r = good(T0, S(3600));
    rs_attempt_t a;
    apr_time_t now = T0 + S(1);
    int dead, slot;
    (void)state;

    dead = claim(0, CHILD_A, 1, now, RS_CLAIM_TAKEN);
    claim(1, CHILD_B, 1, now + S(1), RS_CLAIM_SLOTS_FULL);
    /* the certificate too: nobody else fetches it while the lease is live */
    claim(0, CHILD_B, 1, now + S(1), RS_CLAIM_NOT_DUE);

    now += conf.lease + S(1);
    slot = claim(1, CHILD_B, 1, now, RS_CLAIM_TAKEN);
    assert_int_equal(slot, dead); /* the same slot, now B's */

    /* A was only slow: its late result still counts as a response... */
    assert_true(fetched(0, CHILD_A, dead, now, r, &a).installed);
    /* ...but B's slot stays B's */
    claim(2, CHILD_C, 1, now, RS_CLAIM_SLOTS_FULL);
    assert_true(fetched(1, CHILD_B, slot, now, r, &a).installed);
    claim(2, CHILD_C, 1, now, RS_CLAIM_TAKEN);
}

/* A fetch that brings nothing verified backs off and keeps the response
 * held; no room in the shared memory for a newer one keeps the old one
 * stapled (RS0204), and a lock that fails changes nothing. */
static void test_failure_no_room_and_lock(void **state)
{
    rs_ocsp_result_t held = good(T0, S(3600)), bad, newer = good(T0 + S(600), S(3600));
    rs_attempt_t a;
    rs_outcome_t out;
    rs_offer_t o;
    apr_time_t now = T0 + S(2000);
    int slot;
    (void)state;

    slot = claim(0, CHILD_A, 8, T0, RS_CLAIM_TAKEN);
    assert_true(fetched(0, CHILD_A, slot, T0, held, &a).installed);
    memset(&bad, 0, sizeof(bad));
    bad.verdict = RS_VERDICT_TRANSPORT;
    slot = claim(0, CHILD_A, 8, now, RS_CLAIM_TAKEN);
    out = fetched(0, CHILD_A, slot, now, bad, &a);
    assert_false(out.installed);
    assert_int_equal(out.st.failures, 1);
    assert_true(out.st.next_attempt > now);
    assert_stapled(0, T0, T0 + S(3600));

    fx.no_room = 1;
    slot = claim(0, CHILD_A, 8, out.st.next_attempt, RS_CLAIM_TAKEN);
    out = fetched(0, CHILD_A, slot, out.st.next_attempt, newer, &a);
    assert_false(out.installed);
    assert_true(out.no_room);
    assert_int_equal(out.st.resp_this_update, T0);
    assert_stapled(0, T0, T0 + S(3600));
    fx.no_room = 0;

    fx.lock_fails = 1;
    o = offer_of(RS_ORIGIN_ADOPTED, 0, CHILD_B, -1, now);
    o.res = newer;
    o.der = der_of(&newer, &o.len);
    assert_int_not_equal(rs_shared_offer(fx.sh, &o, &out), APR_SUCCESS);
    assert_false(out.installed);
    fx.lock_fails = 0;
    assert_stapled(0, T0, T0 + S(3600));
}

/* One child leads the scheduling at a time; a term that ran out (its child
 * died) is taken over, and a resigning leader hands it on at once. */
static void test_leader(void **state)
{
    (void)state;
    assert_true(rs_shared_lead(fx.sh, CHILD_A, T0, S(5)));
    assert_false(rs_shared_lead(fx.sh, CHILD_B, T0 + S(1), S(5)));
    assert_true(rs_shared_lead(fx.sh, CHILD_A, T0 + S(1), S(5)));
    assert_true(rs_shared_lead(fx.sh, CHILD_B, T0 + S(7), S(5)));
    rs_shared_resign(fx.sh, CHILD_A); /* not the leader: changes nothing */
    assert_false(rs_shared_lead(fx.sh, CHILD_C, T0 + S(8), S(5)));
    rs_shared_resign(fx.sh, CHILD_B);
    assert_true(rs_shared_lead(fx.sh, CHILD_C, T0 + S(8), S(5)));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_fetch_and_pickup_same_second, setup, teardown),
        cmocka_unit_test_setup_teardown(test_put_back_against_newer_fetch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_same_response_twice, setup, teardown),
        cmocka_unit_test_setup_teardown(test_adopt_against_own_fetch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_restore_then_fetch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refresh_now_while_in_flight, setup, teardown),
        cmocka_unit_test_setup_teardown(test_slot_held_by_dead_owner, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failure_no_room_and_lock, setup, teardown),
        cmocka_unit_test_setup_teardown(test_leader, setup, teardown),
    };
    int rc;
    apr_initialize();
    apr_pool_create(&pool, NULL);
    rc = cmocka_run_group_tests(tests, NULL, NULL);
    apr_pool_destroy(pool);
    apr_terminate();
    return rc;
}
