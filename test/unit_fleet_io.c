/* Unit tests: bounded calls to the fleet cache. The "cache" is a function
 * run on the I/O thread that the tests make answer, hang (a frozen
 * memcached) or answer late; what matters is how long each caller waits.
 * Wall-clock based: not run under valgrind. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include <apr_general.h>
#include <apr_thread_cond.h>
#include <apr_thread_mutex.h>
#include <apr_thread_proc.h>

#include "rs_fleet_io.h"

#define MS(x) apr_time_from_msec(x)

static apr_pool_t *pool;
static apr_thread_mutex_t *lock;
static apr_thread_cond_t *cond;
static int frozen;                 /* the cache hangs until thawed */
static apr_interval_time_t delay;  /* each call takes this long */
static int calls;

static apr_status_t fake_cache(void *baton, rs_fleet_io_call_t *c, apr_pool_t *p)
{
    (void)baton;
    (void)p;
    apr_thread_mutex_lock(lock);
    calls++;
    while (frozen)
        apr_thread_cond_wait(cond, lock);
    apr_thread_mutex_unlock(lock);
    if (delay)
        apr_sleep(delay);
    if (c->op != RS_FLEET_IO_GET)
        return APR_SUCCESS;
    if (c->cap < 5)
        return APR_ENOMEM;
    memcpy(c->data, "hello", 5);
    c->len = 5;
    return APR_SUCCESS;
}

static void set_frozen(int f)
{
    apr_thread_mutex_lock(lock);
    frozen = f;
    apr_thread_cond_broadcast(cond);
    apr_thread_mutex_unlock(lock);
}

/* LeakSanitizer (the sanitized build of the unit tests): the I/O thread's
 * pool and allocator are never destroyed, by design (a call that hangs may
 * still use them after its caller gave up), so they are not leaks to report. */
const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void)
{
    return "leak:rs_fleet_io\nleak:unit_fleet_io.c\n";
}

static rs_fleet_io_t *start(void)
{
    rs_fleet_io_t *io = NULL;
    frozen = 0;
    delay = 0;
    calls = 0;
    assert_int_equal(rs_fleet_io_start(&io, fake_cache, NULL, 64), APR_SUCCESS);
    return io;
}

static apr_status_t get(rs_fleet_io_t *io, apr_interval_time_t bound, apr_interval_time_t *took)
{
    unsigned char buf[64];
    apr_size_t len = 0;
    apr_time_t t0 = apr_time_now();
    apr_status_t rv = rs_fleet_io_call(io, RS_FLEET_IO_GET, (const unsigned char *)"k", 1, buf,
                                       &len, sizeof(buf), 0, bound);
    *took = apr_time_now() - t0;
    if (rv == APR_SUCCESS) {
        assert_int_equal(len, 5);
        assert_memory_equal(buf, "hello", 5);
    }
    return rv;
}

static void test_answers(void **state)
{
    rs_fleet_io_t *io = start();
    apr_interval_time_t took;
    unsigned char small[4];
    apr_size_t len = 0;
    (void)state;

    assert_int_equal(get(io, MS(1000), &took), APR_SUCCESS);
    assert_int_equal(get(io, MS(1000), &took), APR_SUCCESS);
    assert_int_equal(calls, 2);
    /* a value larger than the caller's room is the cache's answer, passed on */
    assert_int_equal(rs_fleet_io_call(io, RS_FLEET_IO_GET, (const unsigned char *)"k", 1, small,
                                      &len, sizeof(small), 0, MS(1000)),
                     APR_ENOMEM);
    rs_fleet_io_stop(io);
}

/* More than the buffer, or a key too long: refused before the thread sees it. */
static void test_caps(void **state)
{
    rs_fleet_io_t *io = start();
    unsigned char big[128], key[RS_FLEET_IO_KEY_MAX + 1];
    apr_size_t len = sizeof(big);
    (void)state;

    memset(big, 'x', sizeof(big));
    memset(key, 'k', sizeof(key));
    assert_int_equal(rs_fleet_io_call(io, RS_FLEET_IO_PUT, key, 1, big, &len, 0, 0, MS(100)),
                     APR_EINVAL);
    len = 1;
    assert_int_equal(rs_fleet_io_call(io, RS_FLEET_IO_PUT, key, sizeof(key), big, &len, 0, 0,
                                      MS(100)),
                     APR_EINVAL);
    len = 0;
    assert_int_equal(rs_fleet_io_call(io, RS_FLEET_IO_GET, key, 1, big, &len, sizeof(big), 0,
                                      MS(100)),
                     APR_EINVAL);
    assert_int_equal(calls, 0);
    rs_fleet_io_stop(io);
}

/* A frozen cache: the caller is back after its bound, the next ones at
 * once, and the cache is used again once it answers. */
static void test_frozen(void **state)
{
    rs_fleet_io_t *io = start();
    apr_interval_time_t took;
    (void)state;

    set_frozen(1);
    assert_int_equal(get(io, MS(200), &took), APR_TIMEUP);
    assert_true(took >= MS(190) && took < MS(1000));
    assert_true(rs_fleet_io_hung(io));
    assert_int_equal(get(io, MS(200), &took), APR_TIMEUP);
    assert_true(took < MS(50));
    assert_int_equal(calls, 1); /* nothing queued behind the hung call */
    set_frozen(0);
    apr_sleep(MS(50));
    assert_false(rs_fleet_io_hung(io));
    assert_int_equal(get(io, MS(1000), &took), APR_SUCCESS);
    rs_fleet_io_stop(io);
}

/* A slow but working cache: callers of several threads take turns within
 * their bound. */
typedef struct {
    rs_fleet_io_t *io;
    apr_status_t rv;
} caller_t;

static void *APR_THREAD_FUNC caller(apr_thread_t *t, void *data)
{
    caller_t *c = data;
    apr_interval_time_t took;
    (void)t;
    c->rv = get(c->io, MS(2000), &took);
    return NULL;
}

static void test_turns(void **state)
{
    rs_fleet_io_t *io = start();
    caller_t c[4];
    apr_thread_t *t[4];
    apr_status_t trv;
    int i;
    (void)state;

    delay = MS(30);
    for (i = 0; i < 4; i++) {
        c[i].io = io;
        c[i].rv = APR_EGENERAL;
        assert_int_equal(apr_thread_create(&t[i], NULL, caller, &c[i], pool), APR_SUCCESS);
    }
    for (i = 0; i < 4; i++) {
        apr_thread_join(&trv, t[i]);
        assert_int_equal(c[i].rv, APR_SUCCESS);
    }
    assert_int_equal(calls, 4);
    rs_fleet_io_stop(io);
}

/* A slow call that overruns a short bound: its caller gives up, the one
 * behind it gets its turn once the call ends. */
static void test_late_answer(void **state)
{
    rs_fleet_io_t *io = start();
    apr_interval_time_t took;
    (void)state;

    delay = MS(300);
    assert_int_equal(get(io, MS(50), &took), APR_TIMEUP);
    delay = 0;
    apr_sleep(MS(400));
    assert_int_equal(get(io, MS(1000), &took), APR_SUCCESS);
    rs_fleet_io_stop(io);
}

/* A child that exits waits for no call: those waiting and all later ones
 * get APR_EOF at once. */
static void *APR_THREAD_FUNC stopper(apr_thread_t *t, void *data)
{
    (void)t;
    apr_sleep(MS(100));
    rs_fleet_io_stop(data);
    return NULL;
}

static void test_stop(void **state)
{
    rs_fleet_io_t *io = start();
    apr_interval_time_t took;
    apr_thread_t *t;
    apr_status_t trv;
    (void)state;

    set_frozen(1);
    assert_int_equal(apr_thread_create(&t, NULL, stopper, io, pool), APR_SUCCESS);
    assert_int_equal(get(io, MS(5000), &took), APR_EOF);
    assert_true(took < MS(1000));
    apr_thread_join(&trv, t);
    assert_int_equal(get(io, MS(5000), &took), APR_EOF);
    assert_true(took < MS(50));
    set_frozen(0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_answers),   cmocka_unit_test(test_caps),
        cmocka_unit_test(test_frozen),    cmocka_unit_test(test_turns),
        cmocka_unit_test(test_late_answer), cmocka_unit_test(test_stop),
    };
    apr_initialize();
    apr_pool_create(&pool, NULL);
    apr_thread_mutex_create(&lock, APR_THREAD_MUTEX_DEFAULT, pool);
    apr_thread_cond_create(&cond, pool);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
