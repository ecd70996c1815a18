/* Unit tests: the due-time heap, against a plain array. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "rs_due.h"

static void test_all_due_at_start(void **state)
{
    void *mem = malloc(rs_due_size(5));
    rs_due_t *d = rs_due_init(mem, 5);
    int out[8];
    (void)state;
    assert_int_equal(rs_due_next(d), 0);
    assert_int_equal(rs_due_collect(d, 0, out, 8), 5);
    assert_int_equal(rs_due_collect(d, 0, out, 3), 3);
    free(mem);
}

static void test_next_and_collect(void **state)
{
    void *mem = malloc(rs_due_size(4));
    rs_due_t *d = rs_due_init(mem, 4);
    int out[4], n;
    (void)state;
    rs_due_set(d, 0, 40);
    rs_due_set(d, 1, 10);
    rs_due_set(d, 2, 30);
    rs_due_set(d, 3, 20);
    assert_int_equal(rs_due_next(d), 10);
    assert_int_equal(rs_due_collect(d, 9, out, 4), 0);
    n = rs_due_collect(d, 20, out, 4);
    assert_int_equal(n, 2);
    assert_true((out[0] == 1 && out[1] == 3) || (out[0] == 3 && out[1] == 1));
    /* moved later: no longer first */
    rs_due_set(d, 1, 50);
    assert_int_equal(rs_due_next(d), 20);
    assert_int_equal(rs_due_key(d, 1), 50);
    rs_due_set(d, 0, RS_DUE_NEVER);
    rs_due_set(d, 1, RS_DUE_NEVER);
    rs_due_set(d, 2, RS_DUE_NEVER);
    rs_due_set(d, 3, RS_DUE_NEVER);
    assert_int_equal(rs_due_next(d), RS_DUE_NEVER);
    assert_int_equal(rs_due_key(d, 7), RS_DUE_NEVER);
    free(mem);
}

/* random updates: the heap agrees with a brute-force minimum, and collect
 * finds exactly the keys <= now */
static void test_random_against_array(void **state)
{
    enum { N = 1000 };
    void *mem = malloc(rs_due_size(N));
    rs_due_t *d = rs_due_init(mem, N);
    apr_time_t ref[N];
    int out[N], i, round;
    unsigned seed = 7;
    (void)state;
    memset(ref, 0, sizeof(ref));
    for (round = 0; round < 20000; round++) {
        apr_time_t min = RS_DUE_NEVER, now;
        int expect = 0, got, k;
        seed = seed * 1103515245u + 12345u;
        i = (int)((seed >> 8) % N);
        ref[i] = (apr_time_t)((seed >> 4) % 100000);
        rs_due_set(d, i, ref[i]);
        if (round % 500)
            continue;
        for (k = 0; k < N; k++)
            if (ref[k] < min)
                min = ref[k];
        assert_int_equal(rs_due_next(d), min);
        now = (apr_time_t)(seed % 20000);
        for (k = 0; k < N; k++)
            expect += ref[k] <= now;
        got = rs_due_collect(d, now, out, N);
        assert_int_equal(got, expect);
        for (k = 0; k < got; k++)
            assert_true(ref[out[k]] <= now);
    }
    free(mem);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_all_due_at_start),
        cmocka_unit_test(test_next_and_collect),
        cmocka_unit_test(test_random_against_array),
    };
    return cmocka_run_group_tests_name("rs_due", tests, NULL, NULL);
}
