/* Unit tests: renewal timing, backoff, the replace rule, and the lease. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "rs_sched.h"

#define S(x) apr_time_from_sec(x)

static const rs_sched_conf_t conf = {
    .renew_window_pct = 50, .retry_min = S(60), .retry_max = S(3600), .lease = S(20)};

static void test_renew_at_half_life(void **state)
{
    (void)state;
    /* a 4-day response: renewed after 2 days, +-10 % of the 2-day window */
    assert_int_equal(rs_sched_renew_at(&conf, S(0), S(4 * 86400), 0, 0.0), S(2 * 86400));
    assert_int_equal(rs_sched_renew_at(&conf, S(0), S(4 * 86400), 0, 1.0),
                     S(2 * 86400) + S(17280));
    assert_int_equal(rs_sched_renew_at(&conf, S(0), S(4 * 86400), 0, -1.0),
                     S(2 * 86400) - S(17280));
}

static void test_renew_window_setting(void **state)
{
    rs_sched_conf_t c = conf;
    (void)state;
    c.renew_window_pct = 20; /* renew when 20 % remains: at 80 % of the life */
    assert_int_equal(rs_sched_renew_at(&c, S(1000), S(2000), S(1000), 0.0), S(1800));
}

static void test_renew_not_before_retry_min(void **state)
{
    (void)state;
    /* a 30 s response must not make us fetch every 15 s when retry_min is 60 */
    assert_int_equal(rs_sched_renew_at(&conf, S(100), S(130), S(100), 0.0), S(160));
}

static void test_backoff(void **state)
{
    apr_time_t now = S(1000);
    (void)state;
    assert_int_equal(rs_sched_retry_at(&conf, now, 1, 0.0), now + S(60));
    assert_int_equal(rs_sched_retry_at(&conf, now, 2, 0.0), now + S(120));
    assert_int_equal(rs_sched_retry_at(&conf, now, 3, 0.0), now + S(240));
    assert_int_equal(rs_sched_retry_at(&conf, now, 7, 0.0), now + S(3600));
    assert_int_equal(rs_sched_retry_at(&conf, now, 1000, 1.0), now + S(3600));
    /* jitter never goes below the minimum */
    assert_int_equal(rs_sched_retry_at(&conf, now, 1, -1.0), now + S(60));
    assert_int_equal(rs_sched_retry_at(&conf, now, 2, 1.0), now + S(132));
    assert_int_equal(rs_sched_retry_at(&conf, now, 2, -1.0), now + S(108));
}

static void test_fast_ladder(void **state)
{
    apr_time_t now = S(1000);
    rs_state_t st;
    rs_sched_conf_t fast = conf;
    unsigned i;
    (void)state;
    /* nothing held: 2, 4, 8, 16, 32 s, then the configured backoff from its start */
    rs_state_init(&st);
    for (i = 0; i < 5; i++) {
        rs_state_failure(&st, now, RS_VERDICT_RESPONDER_ERROR, 6, NULL, &conf, 0.0);
        assert_int_equal(st.next_attempt, now + S(2 << i));
    }
    rs_state_failure(&st, now, RS_VERDICT_RESPONDER_ERROR, 6, NULL, &conf, 0.0);
    assert_int_equal(st.next_attempt, now + S(60));
    rs_state_failure(&st, now, RS_VERDICT_RESPONDER_ERROR, 6, NULL, &conf, 0.0);
    assert_int_equal(st.next_attempt, now + S(120));
    /* never slower than a configured backoff that is faster */
    fast.retry_min = S(1);
    fast.retry_max = S(2);
    rs_state_init(&st);
    rs_state_failure(&st, now, RS_VERDICT_TRANSPORT, -1, NULL, &fast, 0.0);
    rs_state_failure(&st, now, RS_VERDICT_TRANSPORT, -1, NULL, &fast, 0.0);
    assert_int_equal(st.next_attempt, now + S(2));
    /* something valid held: the configured backoff, no ladder */
    rs_state_init(&st);
    st.resp_this_update = now - S(100);
    st.resp_next_update = now + S(86400);
    rs_state_failure(&st, now, RS_VERDICT_RESPONDER_ERROR, 6, NULL, &conf, 0.0);
    assert_int_equal(st.next_attempt, now + S(60));
}

static void test_never_past_held_next_update(void **state)
{
    /* seen: a response valid until 00:45:49, an older answer at 00:45:09
     * scheduled the next attempt 60 s later, at 00:46:09 */
    apr_time_t next = S(45 * 60 + 49), now = S(45 * 60 + 9);
    rs_ocsp_result_t older;
    rs_state_t st;
    (void)state;
    rs_state_init(&st);
    st.resp_this_update = next - S(3600);
    st.resp_next_update = next;
    memset(&older, 0, sizeof(older));
    older.verdict = RS_VERDICT_NOT_NEWER;
    rs_state_failure(&st, now, older.verdict, 0, "not newer", &conf, 1.0);
    assert_true(st.next_attempt < next);
    assert_true(st.next_attempt >= now + S(1));
    assert_int_equal(st.failures, 1);
    assert_int_equal(rs_result_of(&older, 0), RS_RESULT_NOT_NEWER);
    /* and a success that did not replace (the old path) keeps the bound too */
    older.verdict = RS_VERDICT_GOOD;
    older.this_update = next - S(7200);
    older.next_update = next - S(3600);
    rs_state_success(&st, now, &older, 0, &conf, 1.0);
    assert_true(st.next_attempt < next);
    /* far from nextUpdate: the margin (a tenth, at most 5 min) is the limit */
    st.resp_this_update = now;
    st.resp_next_update = now + S(600);
    for (int i = 0; i < 20; i++)
        rs_state_failure(&st, now, RS_VERDICT_TRANSPORT, -1, NULL, &conf, 1.0);
    assert_int_equal(st.next_attempt, now + S(540));
}

static void test_replace_rule(void **state)
{
    apr_time_t now = S(5000);
    (void)state;
    assert_true(rs_sched_should_replace(0, 0, S(4000), S(9000), now));            /* none */
    assert_true(rs_sched_should_replace(S(1000), S(4000), S(100), S(9000), now)); /* expired */
    assert_true(rs_sched_should_replace(S(4000), S(9000), S(4500), S(9500), now));
    assert_false(rs_sched_should_replace(S(4500), S(9500), S(4000), S(9000), now)); /* older */
    assert_true(rs_sched_should_replace(S(4000), S(9000), S(4000), S(9900), now));
    assert_false(rs_sched_should_replace(S(4000), S(9000), S(4000), S(9000), now)); /* same */
    /* the same one again, after it expired (accepted within the clock skew) */
    assert_false(rs_sched_should_replace(S(1000), S(4000), S(1000), S(4000), now));
}

static void test_lease(void **state)
{
    rs_state_t st;
    (void)state;
    rs_state_init(&st);
    assert_true(rs_state_claim(&st, 111, S(10), &conf, 0)); /* new: due at once */
    assert_int_equal(st.lease_until, S(30));
    assert_false(rs_state_claim(&st, 222, S(15), &conf, 0)); /* held by another child */
    assert_true(rs_state_claim(&st, 111, S(15), &conf, 0));  /* its own */
    assert_true(rs_state_claim(&st, 222, S(36), &conf, 0));  /* holder died: expired (15 + 20) */
    st.next_attempt = S(100);
    st.lease_until = 0;
    assert_false(rs_state_claim(&st, 222, S(50), &conf, 0)); /* not due */
    assert_true(rs_state_claim(&st, 222, S(50), &conf, 1));  /* forced: cache lost it */
    assert_false(rs_state_claim(&st, 333, S(51), &conf, 1)); /* forced, but leased */
}

static void test_unclaim(void **state)
{
    rs_state_t st;
    (void)state;
    rs_state_init(&st);
    assert_true(rs_state_claim(&st, 222, S(10), &conf, 0));
    rs_state_unclaim(&st, 111); /* not 111's: kept */
    assert_int_equal(st.lease_owner, 222);
    rs_state_unclaim(&st, 222);
    assert_int_equal(st.lease_owner, 0);
    assert_int_equal(st.lease_until, 0);
    assert_true(rs_state_claim(&st, 333, S(11), &conf, 0)); /* free for the next */
}

static void test_success_and_failure(void **state)
{
    rs_state_t st;
    rs_ocsp_result_t good = {.verdict = RS_VERDICT_GOOD, .resp_status = 0,
                             .this_update = S(1000), .next_update = S(1000 + 86400)};
    (void)state;
    rs_state_init(&st);
    assert_true(rs_state_claim(&st, 1, S(1000), &conf, 0));
    rs_state_success(&st, S(1000), &good, 1, &conf, 0.0);
    assert_int_equal(st.lease_until, 0);
    assert_int_equal(st.resp_this_update, S(1000));
    assert_int_equal(st.next_attempt, S(1000 + 43200));
    assert_int_equal(st.fetches, 1);

    rs_state_failure(&st, S(50000), RS_VERDICT_RESPONDER_ERROR, 6, "responder answered unauthorized",
                     &conf, 0.0);
    rs_state_failure(&st, S(50060), RS_VERDICT_TRANSPORT, -1, "timed out", &conf, 0.0);
    assert_int_equal(st.failures, 2);
    assert_int_equal(st.fetch_failures, 2);
    assert_int_equal(st.next_attempt, S(50060 + 120));
    assert_string_equal(st.last_error, "timed out");
    /* the stored response is untouched by failures */
    assert_int_equal(st.resp_this_update, S(1000));
    assert_int_equal(st.resp_next_update, S(1000 + 86400));

    /* an older valid answer is a success for backoff, but does not replace */
    rs_ocsp_result_t older = good;
    older.this_update = S(500);
    older.next_update = S(500 + 86400);
    rs_state_success(&st, S(50200), &older, 0, &conf, 0.0);
    assert_int_equal(st.failures, 0);
    assert_int_equal(st.resp_this_update, S(1000));
    assert_int_equal(st.next_attempt, S(50200 + 60)); /* renewal overdue: retry_min */
}

static void test_slots_bound_and_isolation(void **state)
{
    rs_slots_t slots;
    apr_uint32_t hung = rs_responder_key("http://hung.example/"), ok = rs_responder_key("http://ok.example/");
    (void)state;
    memset(&slots, 0, sizeof(slots));
    /* max 4: the hung responder gets 2, the others still get theirs */
    assert_int_equal(rs_slots_take(&slots, 4, hung, 1, S(10), S(30)), 0);
    assert_int_equal(rs_slots_take(&slots, 4, hung, 1, S(10), S(30)), 1);
    assert_int_equal(rs_slots_take(&slots, 4, hung, 1, S(10), S(30)), RS_SLOTS_RESPONDER_FULL);
    assert_int_equal(rs_slots_take(&slots, 4, ok, 2, S(10), S(30)), 2);
    assert_int_equal(rs_slots_take(&slots, 4, ok, 2, S(10), S(30)), 3);
    assert_int_equal(rs_slots_take(&slots, 4, ok, 2, S(10), S(30)), RS_SLOTS_FULL);
    /* only the owner releases; an expired slot is free again */
    rs_slots_release(&slots, 3, 1);
    assert_int_equal(rs_slots_take(&slots, 4, ok, 2, S(10), S(30)), RS_SLOTS_FULL);
    rs_slots_release(&slots, 3, 2);
    assert_int_equal(rs_slots_take(&slots, 4, ok, 2, S(10), S(30)), 3);
    assert_int_equal(rs_slots_take(&slots, 4, hung, 1, S(31), S(50)), 0);
    /* max 1: one fetch at a time, whoever asks */
    memset(&slots, 0, sizeof(slots));
    assert_int_equal(rs_slots_take(&slots, 1, ok, 2, S(10), S(30)), 0);
    assert_int_equal(rs_slots_take(&slots, 1, hung, 2, S(10), S(30)), RS_SLOTS_FULL);
}

static void test_responder_key(void **state)
{
    (void)state;
    assert_true(rs_responder_key("http://r3.o.lencr.org/abc") == rs_responder_key("HTTP://R3.o.lencr.org/xyz"));
    assert_true(rs_responder_key("http://127.0.0.1:18529/a") != rs_responder_key("http://127.0.0.1:18530/a"));
}

static rs_ocsp_result_t good(apr_time_t this_update, apr_time_t next_update)
{
    rs_ocsp_result_t r;
    memset(&r, 0, sizeof(r));
    r.verdict = RS_VERDICT_GOOD;
    r.this_update = this_update;
    r.next_update = next_update;
    return r;
}

static void test_fleet_decide(void **state)
{
    rs_state_t st;
    rs_ocsp_result_t fresh = good(S(1000), S(1000 + 86400)), due = good(S(0), S(1200));
    rs_ocsp_result_t bad = fresh;
    const apr_uint64_t me = 7, other = 9;
    const apr_time_t now = S(1100);
    apr_time_t until;
    (void)state;
    bad.verdict = RS_VERDICT_BAD_SIGNATURE;
    rs_state_init(&st);
    /* nothing here: take a fresh response from the fleet */
    assert_int_equal(rs_fleet_decide(&conf, &st, &fresh, 0, 0, me, now, &until), RS_FLEET_ADOPT);
    /* an invalid one is never taken; nobody leases: fetch */
    assert_int_equal(rs_fleet_decide(&conf, &st, &bad, 0, 0, me, now, &until), RS_FLEET_FETCH);
    /* the fleet's is newer but itself due: fetch rather than adopt */
    assert_int_equal(rs_fleet_decide(&conf, &st, &due, 0, 0, me, now, &until), RS_FLEET_FETCH);
    /* another server's live lease: wait; an expired one or ours: fetch */
    assert_int_equal(rs_fleet_decide(&conf, &st, NULL, other, now + S(5), me, now, &until),
                     RS_FLEET_WAIT);
    assert_int_equal(until, now + S(5));
    assert_int_equal(rs_fleet_decide(&conf, &st, NULL, other, now - 1, me, now, &until),
                     RS_FLEET_FETCH);
    assert_int_equal(rs_fleet_decide(&conf, &st, NULL, me, now + S(5), me, now, &until),
                     RS_FLEET_FETCH);
    /* the fleet holds what we hold already: not adopted again */
    rs_state_adopt(&st, now, &fresh, &conf, 0.0);
    st.next_attempt = now; /* a refresh was asked for */
    assert_int_equal(rs_fleet_decide(&conf, &st, &fresh, 0, 0, me, now, &until), RS_FLEET_FETCH);
    /* another child of this server stored a response meanwhile: no fetch */
    st.next_attempt = now + S(60);
    assert_int_equal(rs_fleet_decide(&conf, &st, NULL, 0, 0, me, now, &until), RS_FLEET_WAIT);
    assert_int_equal(until, now + S(60));
}

static void test_adopt(void **state)
{
    rs_state_t st;
    rs_ocsp_result_t fresh = good(S(1000), S(1000 + 86400));
    (void)state;
    rs_state_init(&st);
    st.failures = 3;
    st.fetches = 5;
    st.lease_owner = 7;
    st.lease_until = S(2000);
    rs_state_adopt(&st, S(1100), &fresh, &conf, 0.0);
    assert_int_equal(st.resp_this_update, S(1000));
    assert_int_equal(st.resp_next_update, S(1000 + 86400));
    assert_int_equal(st.failures, 0);
    assert_int_equal(st.fetches, 5); /* no responder request was made */
    assert_int_equal(st.lease_owner, 0);
    assert_int_equal(st.lease_until, 0);
    assert_int_equal(st.next_attempt, S(1000 + 43200));
}

/* A next attempt a year ahead (a state file from before a clock step, a
 * record another process wrote) is pulled in; one the held response's
 * renewal explains is not; a lease longer than any lease is dropped. */
static void test_bound_times(void **state)
{
    rs_state_t st;
    apr_time_t now = S(1000000);
    (void)state;

    rs_state_init(&st);
    st.next_attempt = now + S(365 * 86400);
    st.lease_until = now + S(365 * 86400);
    st.lease_owner = 7;
    assert_int_equal(rs_state_bound(&st, now, &conf), 1);
    assert_int_equal(st.next_attempt, now + conf.retry_max + S(60));
    assert_int_equal(st.lease_until, 0);
    assert_int_equal(st.lease_owner, 0);
    /* stored once, it stays put: the scheduler claims it when that time comes */
    assert_int_equal(rs_state_bound(&st, now + S(10), &conf), 0);
    assert_int_equal(rs_state_claim(&st, 1, now + conf.retry_max + S(60), &conf, 0), 1);

    /* a 4-day response fetched now is renewed in about 2 days: kept */
    rs_state_init(&st);
    st.resp_this_update = now;
    st.resp_next_update = now + S(4 * 86400);
    st.next_attempt = rs_sched_renew_at(&conf, st.resp_this_update, st.resp_next_update, now,
                                        0.9);
    {
        apr_time_t scheduled = st.next_attempt;
        assert_int_equal(rs_state_bound(&st, now, &conf), 0);
        assert_int_equal(st.next_attempt, scheduled);
    }
    /* but not beyond its latest renewal */
    st.next_attempt = now + S(4 * 86400);
    rs_state_bound(&st, now, &conf);
    assert_int_equal(st.next_attempt,
                     rs_sched_renew_at(&conf, st.resp_this_update, st.resp_next_update, 0, 1.0)
                         + S(60));
    /* a live lease of normal length stays, also one another child took a
     * moment after this one read the clock (two children fetched at once
     * when the bound had no slack) */
    st.lease_until = now + conf.lease + S(2);
    st.lease_owner = 9;
    assert_int_equal(rs_state_bound(&st, now, &conf), 0);
    assert_int_equal(st.lease_owner, 9);
    assert_int_equal(rs_state_claim(&st, 1, now, &conf, 1), 0);
}

/* The refresh button: due now, at most once per interval, and a failure
 * of the forced attempt leaves the backoff as the schedule had it. */
static void test_forced_refresh(void **state)
{
    rs_state_t st;
    apr_time_t now = S(5000), forced_at = 0, scheduled;
    (void)state;

    rs_state_init(&st);
    /* a valid response held: the configured backoff (no short ladder) */
    st.resp_this_update = now - S(100);
    st.resp_next_update = now + S(86400);
    rs_state_failure(&st, now, RS_VERDICT_RESPONDER_ERROR, 3, "tryLater", &conf, 0.0);
    rs_state_failure(&st, now, RS_VERDICT_RESPONDER_ERROR, 3, "tryLater", &conf, 0.0);
    assert_int_equal(st.failures, 2);
    scheduled = st.next_attempt;
    assert_true(scheduled > now);

    assert_int_equal(rs_state_force(&st, now, &forced_at, S(10)), 1);
    assert_int_equal(st.next_attempt, 0);
    assert_int_equal(rs_state_claim(&st, 1, now, &conf, 0), 1);
    rs_state_failure(&st, now + S(1), RS_VERDICT_RESPONDER_ERROR, 3, "tryLater", &conf, 0.0);
    assert_int_equal(st.failures, 2);           /* not counted into the backoff */
    assert_int_equal(st.next_attempt, scheduled); /* the schedule's own time */
    assert_int_equal(st.fetch_failures, 3);     /* but counted as an attempt */
    assert_int_equal(st.forced_next, 0);

    /* a second press within 10 s does nothing, after 10 s it works again */
    assert_int_equal(rs_state_force(&st, now + S(5), &forced_at, S(10)), 0);
    assert_int_equal(st.next_attempt, scheduled);
    assert_int_equal(rs_state_force(&st, now + S(10), &forced_at, S(10)), 1);
    /* two presses before the fetch ran keep the first schedule */
    forced_at = 0;
    assert_int_equal(rs_state_force(&st, now + S(30), &forced_at, S(10)), 1);
    assert_int_equal(st.forced_next, scheduled);

    /* forced when the schedule had it due anyway: an ordinary attempt */
    rs_state_init(&st);
    forced_at = 0;
    st.next_attempt = now - S(1);
    rs_state_force(&st, now, &forced_at, S(10));
    rs_state_claim(&st, 1, now, &conf, 0);
    rs_state_failure(&st, now + S(1), RS_VERDICT_TRANSPORT, -1, "refused", &conf, 0.0);
    assert_int_equal(st.failures, 1);
    /* nothing held: the first step of the short ladder */
    assert_int_equal(st.next_attempt, now + S(1) + RS_FAST_FIRST);
}

/* Every attempt lands in one counter, by method and result. */
static void test_counters(void **state)
{
    rs_state_t st;
    rs_ocsp_result_t res;
    (void)state;

    rs_state_init(&st);
    assert_int_equal(st.last_method, -1);
    memset(&res, 0, sizeof(res));
    res.verdict = RS_VERDICT_GOOD;
    assert_int_equal(rs_result_of(&res, 1), RS_RESULT_OK);
    assert_int_equal(rs_result_of(&res, 0), RS_RESULT_NOT_NEWER);
    res.verdict = RS_VERDICT_TRANSPORT;
    assert_int_equal(rs_result_of(&res, 0), RS_RESULT_TRANSPORT);
    res.verdict = RS_VERDICT_RESPONDER_ERROR;
    assert_int_equal(rs_result_of(&res, 0), RS_RESULT_RESPONDER_ERROR);
    res.verdict = RS_VERDICT_BAD_SIGNATURE;
    assert_int_equal(rs_result_of(&res, 0), RS_RESULT_INVALID);
    rs_state_count(&st, RS_METHOD_GET, RS_RESULT_INVALID);
    rs_state_count(&st, RS_METHOD_POST, RS_RESULT_OK);
    rs_state_count(&st, RS_METHOD_POST, RS_RESULT_OK);
    rs_state_count(&st, RS_METHOD_COUNT, RS_RESULT_OK); /* ignored */
    assert_int_equal(st.attempts[RS_METHOD_GET][RS_RESULT_INVALID], 1);
    assert_int_equal(st.attempts[RS_METHOD_POST][RS_RESULT_OK], 2);
    assert_int_equal(st.last_method, RS_METHOD_POST);
    assert_string_equal(rs_result_name(RS_RESULT_NOT_NEWER), "not-newer");
    assert_string_equal(rs_method_name(RS_METHOD_GET), "GET");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_renew_at_half_life),
        cmocka_unit_test(test_renew_window_setting),
        cmocka_unit_test(test_renew_not_before_retry_min),
        cmocka_unit_test(test_backoff),
        cmocka_unit_test(test_replace_rule),
        cmocka_unit_test(test_lease),
        cmocka_unit_test(test_unclaim),
        cmocka_unit_test(test_success_and_failure),
        cmocka_unit_test(test_slots_bound_and_isolation),
        cmocka_unit_test(test_responder_key),
        cmocka_unit_test(test_fleet_decide),
        cmocka_unit_test(test_adopt),
        cmocka_unit_test(test_bound_times),
        cmocka_unit_test(test_forced_refresh),
        cmocka_unit_test(test_counters),
        cmocka_unit_test(test_fast_ladder),
        cmocka_unit_test(test_never_past_held_next_update),
    };
    return cmocka_run_group_tests_name("rs_sched", tests, NULL, NULL);
}
