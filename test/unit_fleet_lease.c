/* Unit tests: the fleet's fetch lease, with servers played against one
 * simulated cache and clock. Hooks run another server's steps between two
 * of a server's cache calls, which is how the races are staged: the count
 * that matters is how many servers come out with RS_FLEET_FETCH. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "rs_fleet_lease.h"

#define MS(x) apr_time_from_msec(x)
#define S(x) apr_time_from_sec(x)
#define RTT MS(1) /* every cache call takes this long */

static const rs_sched_conf_t conf = {
    .renew_window_pct = 50, .retry_min = S(60), .retry_max = S(3600), .lease = S(20)};

/* the fleet cache and the clock all servers share */
static struct {
    int have_resp, have_lease;
    rs_ocsp_result_t resp;
    apr_uint64_t owner;
    apr_time_t until;
    apr_status_t fail; /* every call fails with this when set */
} cache;
static apr_time_t clock_now;

typedef struct server_t server_t;
typedef void hook_fn(server_t *s);
struct server_t {
    apr_uint64_t me;
    rs_state_t st;
    apr_interval_time_t usual_gap;
    hook_fn *before_get, *before_put, *while_sleeping; /* each runs once */
    apr_interval_time_t slept;
    int stopping;
    rs_fleet_lease_t out;
};

static void run_hook(server_t *s, hook_fn **hook)
{
    hook_fn *fn = *hook;
    *hook = NULL;
    if (fn)
        fn(s);
}

static apr_status_t sim_response(void *baton, apr_time_t now, rs_ocsp_result_t *res)
{
    (void)baton;
    (void)now;
    clock_now += RTT;
    if (cache.fail)
        return cache.fail;
    if (!cache.have_resp)
        return APR_NOTFOUND;
    *res = cache.resp;
    return APR_SUCCESS;
}

static apr_status_t sim_lease_get(void *baton, apr_uint64_t *owner, apr_time_t *until)
{
    server_t *s = baton;
    run_hook(s, &s->before_get);
    clock_now += RTT;
    if (cache.fail)
        return cache.fail;
    if (!cache.have_lease || cache.until <= clock_now)
        return APR_NOTFOUND;
    *owner = cache.owner;
    *until = cache.until;
    return APR_SUCCESS;
}

static apr_status_t sim_lease_put(void *baton, apr_uint64_t owner, apr_time_t until)
{
    server_t *s = baton;
    run_hook(s, &s->before_put);
    clock_now += RTT;
    if (cache.fail)
        return cache.fail;
    cache.have_lease = 1;
    cache.owner = owner;
    cache.until = until;
    return APR_SUCCESS;
}

static void sim_lease_remove(void *baton)
{
    (void)baton;
    clock_now += RTT;
    cache.have_lease = 0;
}

static void sim_state(void *baton, rs_state_t *st)
{
    *st = ((server_t *)baton)->st;
}

static apr_time_t sim_now(void *baton)
{
    (void)baton;
    return clock_now;
}

static int sim_sleep(void *baton, apr_interval_time_t t)
{
    server_t *s = baton;
    run_hook(s, &s->while_sleeping);
    clock_now += t;
    s->slept += t;
    return s->stopping;
}

static const rs_fleet_lease_ops_t ops_proto = {
    .response = sim_response, .lease_get = sim_lease_get, .lease_put = sim_lease_put,
    .lease_remove = sim_lease_remove, .state = sim_state, .now = sim_now, .sleep = sim_sleep};

static server_t servers[3];
static int fetchers;

static rs_fleet_action_e take(server_t *s)
{
    rs_fleet_lease_ops_t ops = ops_proto;
    rs_fleet_lease_args_t args = {.me = s->me, .hold = S(20), .fetch_max = S(10),
                                  .usual_gap = s->usual_gap, .spread = MS(50)};
    ops.baton = s;
    rs_fleet_lease_take(&ops, &conf, &args, &s->out);
    if (s->out.action == RS_FLEET_FETCH)
        fetchers++;
    return s->out.action;
}

/* what a server that fetched does afterwards: publish, drop the lease */
static void publish(void)
{
    cache.have_resp = 1;
    cache.resp.verdict = RS_VERDICT_GOOD;
    cache.resp.this_update = clock_now - S(1);
    cache.resp.next_update = clock_now + S(86400);
    cache.have_lease = 0;
}

static int setup(void **state)
{
    int i;
    (void)state;
    memset(&cache, 0, sizeof(cache));
    memset(servers, 0, sizeof(servers));
    clock_now = S(1000000);
    fetchers = 0;
    for (i = 0; i < 3; i++) {
        servers[i].me = 100 + (apr_uint64_t)i;
        rs_state_init(&servers[i].st);
    }
    return 0;
}

static server_t *const A = &servers[0], *const B = &servers[1], *const C = &servers[2];

static void test_alone_fetches_after_settling(void **state)
{
    (void)state;
    assert_int_equal(take(A), RS_FLEET_FETCH);
    /* the lease is A's, read back after longer than a write may be late */
    assert_true(cache.have_lease && cache.owner == A->me);
    assert_true(A->slept > RS_LEASE_LATE);
    assert_true(A->out.gap <= A->out.late);
}

static void test_newer_response_is_adopted(void **state)
{
    (void)state;
    publish();
    assert_int_equal(take(A), RS_FLEET_ADOPT);
    assert_int_equal(A->out.res.this_update, cache.resp.this_update);
    assert_false(cache.have_lease); /* nothing written */
    assert_int_equal(A->slept, 0);
}

static void test_live_lease_is_waited_for(void **state)
{
    (void)state;
    cache.have_lease = 1;
    cache.owner = B->me;
    cache.until = clock_now + S(15);
    assert_int_equal(take(A), RS_FLEET_WAIT);
    assert_int_equal(A->out.wait_until, cache.until);
    assert_int_equal(cache.owner, B->me);
}

static void b_takes(server_t *s)
{
    (void)s;
    take(B);
}

/* B starts while A settles: B sees A's lease. */
static void test_second_server_sees_the_lease(void **state)
{
    (void)state;
    A->while_sleeping = b_takes;
    assert_int_equal(take(A), RS_FLEET_FETCH);
    assert_int_equal(B->out.action, RS_FLEET_WAIT);
    assert_int_equal(fetchers, 1);
}

/* B read "nobody" before A wrote, and its write lands while A settles (in
 * time): A reads back B's lease and leaves the fetch to B. */
static void b_writes_in_time(server_t *s)
{
    (void)s;
    clock_now += MS(20);
    cache.have_lease = 1;
    cache.owner = B->me;
    cache.until = clock_now + S(20);
}

static void test_last_writer_wins(void **state)
{
    (void)state;
    A->while_sleeping = b_writes_in_time;
    assert_int_equal(take(A), RS_FLEET_WAIT);
    assert_int_equal(A->out.wait_until, cache.until);
}

/* A read "nobody", then stalled 300 ms before its write landed; meanwhile
 * B went all the way through and fetches. A overwrote B's lease, so its
 * read-back alone would make A a second fetcher. */
static void stall_while_b_takes(server_t *s)
{
    (void)s;
    clock_now += MS(300);
    take(B);
}

static void test_late_write_does_not_fetch(void **state)
{
    (void)state;
    A->before_put = stall_while_b_takes;
    assert_int_equal(take(A), RS_FLEET_WAIT);
    assert_int_equal(B->out.action, RS_FLEET_FETCH);
    assert_int_equal(fetchers, 1);
    assert_true(A->out.gap > A->out.late);
    /* A looks again once B, whatever its responder does, has published */
    assert_true(A->out.wait_until >= clock_now + S(10));
}

/* A server whose cache is far away is slow every time, not stalled: its
 * bound grows with its usual read-to-write time. */
static void slow_cache(server_t *s)
{
    (void)s;
    clock_now += MS(150);
}

static void test_slow_cache_still_fetches(void **state)
{
    (void)state;
    A->usual_gap = MS(150);
    A->before_put = slow_cache;
    assert_int_equal(take(A), RS_FLEET_FETCH);
    assert_true(A->slept > A->out.late);
}

/* B published and dropped its lease between A's response read and A's
 * lease read: A saw neither. It must take B's response, not fetch. */
static void b_publishes(server_t *s)
{
    (void)s;
    publish();
}

static void test_publish_between_reads_is_adopted(void **state)
{
    (void)state;
    A->before_get = b_publishes;
    assert_int_equal(take(A), RS_FLEET_ADOPT);
    assert_int_equal(fetchers, 0);
    assert_false(cache.have_lease); /* A's own lease is dropped again */
}

/* Three servers, each starting while the one before settles. */
static void c_takes(server_t *s)
{
    (void)s;
    take(C);
}

static void b_takes_then_c(server_t *s)
{
    (void)s;
    B->while_sleeping = c_takes;
    take(B);
}

static void test_three_servers_one_fetch(void **state)
{
    (void)state;
    A->before_put = b_takes_then_c; /* B and C run between A's read and write */
    take(A);
    assert_int_equal(fetchers, 1);
}

static void test_cache_failure_fetches(void **state)
{
    (void)state;
    cache.fail = APR_EGENERAL;
    assert_int_equal(take(A), RS_FLEET_FETCH);
    assert_int_equal(A->slept, 0);
}

static void test_stopping_gives_the_lease_back(void **state)
{
    (void)state;
    A->stopping = 1;
    assert_int_equal(take(A), RS_FLEET_WAIT);
    assert_true(A->out.wait_until <= clock_now); /* looks again at once */
    assert_false(cache.have_lease);
}

/* A server of this server's own children stored a response meanwhile. */
static void test_not_due_waits(void **state)
{
    (void)state;
    A->st.next_attempt = clock_now + S(60);
    assert_int_equal(take(A), RS_FLEET_WAIT);
    assert_int_equal(A->out.wait_until, clock_now - 2 * RTT + S(60));
    assert_false(cache.have_lease);
}

/* A lease nobody may hold: planted in memcached (no authentication), or
 * written by a server whose clock is an hour ahead. It is nobody's: the
 * certificate is fetched, and the bogus lease replaced by ours. */
static void test_far_future_lease_is_ignored(void **state)
{
    (void)state;
    cache.have_lease = 1;
    cache.owner = B->me;
    cache.until = S(253402300799); /* 9999-12-31 */
    assert_int_equal(take(A), RS_FLEET_FETCH);
    assert_int_equal(A->out.bogus_until, S(253402300799));
    assert_true(cache.have_lease && cache.owner == A->me && cache.until <= clock_now + S(20));
}

static void test_clock_an_hour_ahead_is_ignored(void **state)
{
    (void)state;
    cache.have_lease = 1;
    cache.owner = B->me;
    cache.until = clock_now + S(3600) + S(20);
    assert_int_equal(take(A), RS_FLEET_FETCH);
    assert_true(A->out.bogus_until != 0);
}

/* The rule's edges: a lease written now by a clock a little ahead holds. */
static void test_plausible_edges(void **state)
{
    apr_time_t now = S(1000);
    (void)state;
    assert_true(rs_fleet_lease_plausible(now + S(20), now, S(20)));
    assert_true(rs_fleet_lease_plausible(now + S(20) + RS_LEASE_CLOCK_SLACK, now, S(20)));
    assert_false(rs_fleet_lease_plausible(now + S(20) + RS_LEASE_CLOCK_SLACK + 1, now, S(20)));
    assert_true(rs_fleet_lease_plausible(0, now, S(20)));
}

/* After a failure a server keeps the lease a lease's length at most, not
 * until its retry an hour later. */
static void test_failure_holds_briefly(void **state)
{
    apr_time_t now = S(1000);
    (void)state;
    assert_int_equal(rs_fleet_lease_after_failure(now, now + S(3600), S(20)), now + S(20));
    assert_int_equal(rs_fleet_lease_after_failure(now, now + S(5), S(20)), now + S(5));
}

/* POST refresh: another server's live lease does not hold it back, nor
 * does the fleet's newer response; the lease is written (the others wait
 * for this fetch) and nobody settles. */
static void test_refresh_is_not_held_back(void **state)
{
    (void)state;
    cache.have_lease = 1;
    cache.owner = B->me;
    cache.until = clock_now + S(15);
    rs_state_request_refresh(&A->st);
    assert_int_equal(take(A), RS_FLEET_FETCH);
    assert_true(cache.owner == A->me);
    assert_int_equal(A->slept, 0);
    /* B, not asked, waits for A */
    assert_int_equal(take(B), RS_FLEET_WAIT);
    publish();
    assert_int_equal(take(A), RS_FLEET_FETCH);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_alone_fetches_after_settling, setup),
        cmocka_unit_test_setup(test_newer_response_is_adopted, setup),
        cmocka_unit_test_setup(test_live_lease_is_waited_for, setup),
        cmocka_unit_test_setup(test_second_server_sees_the_lease, setup),
        cmocka_unit_test_setup(test_last_writer_wins, setup),
        cmocka_unit_test_setup(test_late_write_does_not_fetch, setup),
        cmocka_unit_test_setup(test_slow_cache_still_fetches, setup),
        cmocka_unit_test_setup(test_publish_between_reads_is_adopted, setup),
        cmocka_unit_test_setup(test_three_servers_one_fetch, setup),
        cmocka_unit_test_setup(test_cache_failure_fetches, setup),
        cmocka_unit_test_setup(test_stopping_gives_the_lease_back, setup),
        cmocka_unit_test_setup(test_not_due_waits, setup),
        cmocka_unit_test_setup(test_far_future_lease_is_ignored, setup),
        cmocka_unit_test_setup(test_clock_an_hour_ahead_is_ignored, setup),
        cmocka_unit_test_setup(test_plausible_edges, setup),
        cmocka_unit_test_setup(test_failure_holds_briefly, setup),
        cmocka_unit_test_setup(test_refresh_is_not_held_back, setup),
    };
    return cmocka_run_group_tests_name("rs_fleet_lease", tests, NULL, NULL);
}
