/* Unit tests: certificate states, alert transitions, JSON strings. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <apr_general.h>

#include "rs_status.h"

#define S(x) apr_time_from_sec(x)

static void test_classify(void **state)
{
    (void)state;
    /* a 100 s response, renewal window 50 % */
    assert_int_equal(rs_status_classify(0, 0, 0, 0, 50, S(10)), RS_CERT_NONE);
    assert_int_equal(rs_status_classify(0, 0, 0, 3, 50, S(10)), RS_CERT_NONE);
    assert_int_equal(rs_status_classify(S(0), S(100), 0, 0, 50, S(10)), RS_CERT_GOOD);
    assert_int_equal(rs_status_classify(S(0), S(100), 0, 1, 50, S(10)), RS_CERT_STALE);
    assert_int_equal(rs_status_classify(S(0), S(100), 0, 0, 50, S(60)), RS_CERT_STALE);
    assert_int_equal(rs_status_classify(S(0), S(100), 1, 0, 50, S(10)), RS_CERT_REVOKED);
    assert_int_equal(rs_status_classify(S(0), S(100), 1, 0, 50, S(100)), RS_CERT_EXPIRED);
    assert_int_equal(rs_status_classify(S(0), S(100), 0, 0, 50, S(200)), RS_CERT_EXPIRED);
    assert_true(RS_CERT_EXPIRED < RS_CERT_NONE && RS_CERT_STALE < RS_CERT_GOOD);
    assert_string_equal(rs_cert_state_name(RS_CERT_STALE), "stale-but-valid");
    assert_string_equal(rs_cert_state_name(RS_CERT_NO_URL), "no-ocsp-url");
}

static void test_alerts(void **state)
{
    (void)state;
    assert_int_equal(rs_alert_of(0, 0, 0, S(5)), RS_ALERT_OK);
    assert_int_equal(rs_alert_of(S(0), S(100), 0, S(74)), RS_ALERT_OK);
    assert_int_equal(rs_alert_of(S(0), S(100), 0, S(75)), RS_ALERT_EXPIRING);
    assert_int_equal(rs_alert_of(S(0), S(100), 0, S(100)), RS_ALERT_EXPIRED);
    assert_int_equal(rs_alert_of(S(0), S(100), 1, S(10)), RS_ALERT_REVOKED);
    assert_null(rs_alert_event(RS_ALERT_OK, RS_ALERT_OK));
    assert_string_equal(rs_alert_event(RS_ALERT_OK, RS_ALERT_EXPIRING), "expiring");
    assert_string_equal(rs_alert_event(RS_ALERT_EXPIRING, RS_ALERT_EXPIRED), "expired");
    assert_string_equal(rs_alert_event(RS_ALERT_EXPIRED, RS_ALERT_OK), "recovered");
    assert_string_equal(rs_alert_event(RS_ALERT_OK, RS_ALERT_REVOKED), "revoked");
}

static void test_json_string(void **state)
{
    apr_pool_t *p;
    (void)state;
    apr_pool_create(&p, NULL);
    assert_string_equal(rs_json_string(p, "CN=a,O=\"b\\c\""), "\"CN=a,O=\\\"b\\\\c\\\"\"");
    assert_string_equal(rs_json_string(p, "x\ny\x01"), "\"x\\u000ay\\u0001\"");
    assert_string_equal(rs_json_string(p, NULL), "\"\"");
    apr_pool_destroy(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_classify),
        cmocka_unit_test(test_alerts),
        cmocka_unit_test(test_json_string),
    };
    int rc;
    apr_initialize();
    rc = cmocka_run_group_tests_name("rs_status", tests, NULL, NULL);
    apr_terminate();
    return rc;
}
