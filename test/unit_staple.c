/* Unit tests: what a handshake is handed. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include <apr_general.h>
#include <apr_thread_proc.h>

#include "rs_staple.h"

typedef struct {
    int calls;
    apr_size_t len;
    unsigned char data[64];
    int got_null;
} sink_t;

static void copy_cb(const unsigned char *der, apr_size_t len, void *userdata)
{
    sink_t *s = userdata;
    s->calls++;
    s->got_null = der == NULL;
    s->len = len;
    if (der && len <= sizeof(s->data))
        memcpy(s->data, der, len);
}

#define S(x) apr_time_from_sec(x)

static void test_nothing_installed(void **state)
{
    apr_pool_t *p;
    rs_staple_t *st;
    sink_t sink = {0};
    (void)state;
    apr_pool_create(&p, NULL);
    assert_int_equal(rs_staple_create(&st, p), APR_SUCCESS);
    assert_int_equal(rs_staple_serve(st, S(10), copy_cb, &sink), 0);
    /* the hook contract: exactly one call, with (NULL, 0) */
    assert_int_equal(sink.calls, 1);
    assert_true(sink.got_null);
    assert_int_equal(sink.len, 0);
    apr_pool_destroy(p);
}

static void test_served_until_next_update(void **state)
{
    apr_pool_t *p;
    rs_staple_t *st;
    sink_t sink = {0};
    apr_time_t t, n;
    (void)state;
    apr_pool_create(&p, NULL);
    rs_staple_create(&st, p);
    rs_staple_set(st, (const unsigned char *)"DER1", 4, S(100), S(200), 0);
    assert_int_equal(rs_staple_serve(st, S(150), copy_cb, &sink), 1);
    assert_int_equal(sink.calls, 1);
    assert_memory_equal(sink.data, "DER1", 4);
    /* at nextUpdate and after: nothing, even though it is still installed */
    memset(&sink, 0, sizeof(sink));
    assert_int_equal(rs_staple_serve(st, S(200), copy_cb, &sink), 0);
    assert_int_equal(sink.calls, 1);
    assert_true(sink.got_null);
    rs_staple_times(st, &t, &n);
    assert_int_equal(t, S(100));
    assert_int_equal(n, S(200));
    apr_pool_destroy(p);
}

static void test_replaced_copy_is_independent(void **state)
{
    apr_pool_t *p;
    rs_staple_t *st;
    sink_t sink = {0};
    unsigned char buf[5] = "ABCD";
    unsigned char *der;
    apr_size_t len;
    apr_time_t t, n;
    (void)state;
    apr_pool_create(&p, NULL);
    rs_staple_create(&st, p);
    assert_int_equal(rs_staple_copy(st, p, &der, &len, &t, &n), APR_ENOENT);
    rs_staple_set(st, buf, 4, S(1), S(1000), 0);
    assert_false(rs_staple_revoked(st));
    buf[0] = 'Z'; /* the staple holds its own copy */
    rs_staple_serve(st, S(2), copy_cb, &sink);
    assert_memory_equal(sink.data, "ABCD", 4);
    rs_staple_set(st, (const unsigned char *)"EFGH", 4, S(2), S(2000), 1);
    assert_true(rs_staple_revoked(st));
    assert_int_equal(rs_staple_copy(st, p, &der, &len, &t, &n), APR_SUCCESS);
    assert_memory_equal(der, "EFGH", 4);
    assert_int_equal(n, S(2000));
    apr_pool_destroy(p);
}

/* Handshake threads read while the refresher replaces: every read sees one
 * whole response, never a mix. */
typedef struct {
    rs_staple_t *st;
    int torn;
} race_t;

static void race_cb(const unsigned char *der, apr_size_t len, void *userdata)
{
    race_t *r = userdata;
    apr_size_t i;
    for (i = 1; der && i < len; i++)
        if (der[i] != der[0])
            r->torn++;
}

static void *APR_THREAD_FUNC reader(apr_thread_t *t, void *data)
{
    race_t *r = data;
    int i;
    for (i = 0; i < 20000; i++)
        rs_staple_serve(r->st, S(5), race_cb, r);
    apr_thread_exit(t, APR_SUCCESS);
    return NULL;
}

static void test_concurrent_readers(void **state)
{
    apr_pool_t *p;
    race_t r = {0};
    apr_thread_t *th[4];
    apr_status_t rv;
    unsigned char buf[48];
    int i;
    (void)state;
    apr_pool_create(&p, NULL);
    rs_staple_create(&r.st, p);
    for (i = 0; i < 4; i++)
        apr_thread_create(&th[i], NULL, reader, &r, p);
    for (i = 0; i < 20000; i++) {
        memset(buf, 'a' + i % 26, sizeof(buf));
        rs_staple_set(r.st, buf, sizeof(buf), S(1), S(10), 0);
    }
    for (i = 0; i < 4; i++)
        apr_thread_join(&rv, th[i]);
    assert_int_equal(r.torn, 0);
    apr_pool_destroy(p);
}

static void test_offer_keeps_the_newer(void **state)
{
    apr_pool_t *p;
    rs_staple_t *st;
    sink_t sink = {0};
    apr_time_t t, n;
    (void)state;
    apr_pool_create(&p, NULL);
    rs_staple_create(&st, p);
    /* nothing installed: taken */
    assert_int_equal(rs_staple_offer(st, (const unsigned char *)"NEW", 3, S(100), S(200), 0,
                                     S(150)), 1);
    /* an older one, late from another thread: refused */
    assert_int_equal(rs_staple_offer(st, (const unsigned char *)"OLD", 3, S(50), S(300), 0,
                                     S(150)), 0);
    rs_staple_times(st, &t, &n);
    assert_int_equal(t, S(100));
    assert_int_equal(rs_staple_serve(st, S(150), copy_cb, &sink), 1);
    assert_memory_equal(sink.data, "NEW", 3);
    /* once the installed one expired, any valid one is taken */
    assert_int_equal(rs_staple_offer(st, (const unsigned char *)"OLD", 3, S(50), S(300), 0,
                                     S(250)), 1);
    rs_staple_times(st, &t, &n);
    assert_int_equal(t, S(50));
    apr_pool_destroy(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_nothing_installed),
        cmocka_unit_test(test_served_until_next_update),
        cmocka_unit_test(test_replaced_copy_is_independent),
        cmocka_unit_test(test_concurrent_readers),
        cmocka_unit_test(test_offer_keeps_the_newer),
    };
    int rc;
    apr_initialize();
    rc = cmocka_run_group_tests_name("rs_staple", tests, NULL, NULL);
    apr_terminate();
    return rc;
}
