/* Unit tests: the shared-cache record layout. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "rs_record.h"

static void test_roundtrip(void **state)
{
    rs_state_t a, b;
    unsigned char buf[RS_STATE_WIRE_LEN];
    (void)state;
    rs_state_init(&a);
    a.next_attempt = 1234567890123456LL;
    a.last_attempt = -5;
    a.last_success = 42;
    a.lease_until = 7;
    a.lease_owner = 0xfedcba9876543210ULL;
    a.resp_this_update = 111;
    a.resp_next_update = 222;
    a.resp_revoked = 1;
    a.alert = 2;
    a.failures = 3;
    a.fetches = 99;
    a.fetch_failures = 4;
    a.last_verdict = RS_VERDICT_BAD_SIGNATURE;
    a.last_resp_status = -1;
    strcpy(a.last_error, "responder answered tryLater");
    rs_state_encode(&a, buf);
    assert_int_equal(rs_state_decode(&b, buf, sizeof(buf)), APR_SUCCESS);
    assert_memory_equal(&a, &b, sizeof(a));
}

static void test_little_endian_on_the_wire(void **state)
{
    rs_state_t a;
    unsigned char buf[RS_STATE_WIRE_LEN];
    (void)state;
    rs_state_init(&a);
    a.next_attempt = 0x0102030405060708LL;
    rs_state_encode(&a, buf);
    assert_memory_equal(buf, "RSS2", 4);
    assert_int_equal(buf[4], 0x08);
    assert_int_equal(buf[11], 0x01);
}

static void test_rejects_foreign_records(void **state)
{
    rs_state_t a, b;
    unsigned char buf[RS_STATE_WIRE_LEN];
    (void)state;
    rs_state_init(&a);
    rs_state_encode(&a, buf);
    assert_int_not_equal(rs_state_decode(&b, buf, sizeof(buf) - 1), APR_SUCCESS);
    assert_int_not_equal(rs_state_decode(&b, buf, 0), APR_SUCCESS);
    buf[0] = 'X';
    assert_int_not_equal(rs_state_decode(&b, buf, sizeof(buf)), APR_SUCCESS);
    buf[0] = 'R';
    /* an error text length beyond its field */
    buf[RS_STATE_WIRE_LEN - RS_ERR_LEN - 2] = 0xff;
    buf[RS_STATE_WIRE_LEN - RS_ERR_LEN - 1] = 0x00;
    assert_int_not_equal(rs_state_decode(&b, buf, sizeof(buf)), APR_SUCCESS);
    /* a NUL inside the declared error text (found by fuzzing) */
    buf[RS_STATE_WIRE_LEN - RS_ERR_LEN - 2] = 4;
    memcpy(buf + RS_STATE_WIRE_LEN - RS_ERR_LEN, "ab\0d", 4);
    assert_int_not_equal(rs_state_decode(&b, buf, sizeof(buf)), APR_SUCCESS);
}

static void test_error_text_is_bounded(void **state)
{
    rs_state_t a, b;
    unsigned char buf[RS_STATE_WIRE_LEN];
    (void)state;
    rs_state_init(&a);
    memset(a.last_error, 'x', sizeof(a.last_error)); /* not even terminated */
    rs_state_encode(&a, buf);
    assert_int_equal(rs_state_decode(&b, buf, sizeof(buf)), APR_SUCCESS);
    assert_int_equal(strlen(b.last_error), RS_ERR_LEN - 1);
}

static void test_keys(void **state)
{
    unsigned char id[RS_ID_LEN], k1[RS_KEY_LEN], k2[RS_KEY_LEN];
    (void)state;
    memset(id, 0xab, sizeof(id));
    rs_record_key(k1, RS_KEY_RESPONSE, id);
    id[5] = 0;
    rs_record_key(k2, RS_KEY_RESPONSE, id);
    /* the random id leads, so shmcb spreads records over its subcaches */
    assert_int_equal(k1[0], 0xab);
    assert_int_equal(k1[RS_ID_LEN], 'R');
    assert_memory_not_equal(k1, k2, RS_KEY_LEN);
}

static void test_u64(void **state)
{
    unsigned char b[8];
    (void)state;
    rs_u64_encode(0x1122334455667788ULL, b);
    assert_int_equal(b[0], 0x88);
    assert_true(rs_u64_decode(b) == 0x1122334455667788ULL);
}

static void test_lease(void **state)
{
    unsigned char buf[RS_LEASE_WIRE_LEN];
    apr_uint64_t owner;
    apr_time_t until;
    (void)state;
    rs_lease_encode(0x0123456789abcdefULL, 1700000000000000LL, buf);
    assert_int_equal(rs_lease_decode(buf, sizeof(buf), &owner, &until), APR_SUCCESS);
    assert_true(owner == 0x0123456789abcdefULL);
    assert_true(until == 1700000000000000LL);
    /* a foreign or truncated record from a shared cache is not a lease */
    assert_int_equal(rs_lease_decode(buf, sizeof(buf) - 1, &owner, &until), APR_EINVAL);
    buf[0] = 'X';
    assert_int_equal(rs_lease_decode(buf, sizeof(buf), &owner, &until), APR_EINVAL);
}

/* Bad fleet records are logged once per key and change: the digest tells
 * records apart, kinds apart, and is never 0 ("nothing logged"). */
static void test_digest(void **state)
{
    const unsigned char a[] = "garbage", b[] = "garbagf";
    (void)state;
    assert_int_equal(rs_record_digest('R', a, 7), rs_record_digest('R', a, 7));
    assert_int_not_equal(rs_record_digest('R', a, 7), rs_record_digest('R', b, 7));
    assert_int_not_equal(rs_record_digest('R', a, 7), rs_record_digest('L', a, 7));
    assert_int_not_equal(rs_record_digest('R', NULL, 0), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_little_endian_on_the_wire),
        cmocka_unit_test(test_rejects_foreign_records),
        cmocka_unit_test(test_error_text_is_bounded),
        cmocka_unit_test(test_keys),
        cmocka_unit_test(test_u64),
        cmocka_unit_test(test_lease),
        cmocka_unit_test(test_digest),
    };
    return cmocka_run_group_tests_name("rs_record", tests, NULL, NULL);
}
