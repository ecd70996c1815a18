/* Unit tests: the metrics renderer (both formats, escaping, histogram),
 * subject CNs, relative times; and its cost for many certificates
 * (RS_METRICS_BENCH=N certificates, 10,000 by default; the time is printed). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <apr_general.h>
#include <apr_strings.h>

#include "rs_metrics.h"

#define S(x) apr_time_from_sec(x)

/* collects the output in a pool string; counts the writes */
typedef struct {
    apr_pool_t *p;
    char *buf;
    apr_size_t len, cap;
    int writes;
} sink_t;

static void sink_write(void *baton, const char *data, apr_size_t len)
{
    sink_t *k = baton;
    if (k->len + len + 1 > k->cap) {
        apr_size_t cap = (k->cap + len + 1) * 2;
        char *b = apr_palloc(k->p, cap);
        if (k->len)
            memcpy(b, k->buf, k->len);
        k->buf = b;
        k->cap = cap;
    }
    memcpy(k->buf + k->len, data, len);
    k->len += len;
    k->buf[k->len] = '\0';
    k->writes++;
}

static void count_write(void *baton, const char *data, apr_size_t len)
{
    (void)data;
    *(apr_size_t *)baton += len;
}

static void test_hist(void **state)
{
    rs_hist_t h;
    (void)state;
    memset(&h, 0, sizeof(h));
    rs_hist_observe(&h, 0);
    rs_hist_observe(&h, apr_time_from_msec(10)); /* le="0.010" is inclusive */
    rs_hist_observe(&h, apr_time_from_msec(11));
    rs_hist_observe(&h, S(60));
    rs_hist_observe(&h, -5); /* a clock step: counted as 0 */
    assert_int_equal(h.bucket[0], 3);
    assert_int_equal(h.bucket[1], 1);
    assert_int_equal(h.bucket[RS_HIST_BUCKETS], 1);
    assert_int_equal(h.count, 5);
    assert_int_equal(h.sum_usec, 10000 + 11000 + 60000000);
}

static void test_negotiate(void **state)
{
    (void)state;
    assert_int_equal(rs_metrics_negotiate(NULL), RS_METRICS_PROMETHEUS);
    assert_int_equal(rs_metrics_negotiate("text/html,*/*;q=0.8"), RS_METRICS_PROMETHEUS);
    assert_int_equal(rs_metrics_negotiate("application/openmetrics-text;version=1.0.0,"
                                          "text/plain;version=0.0.4;q=0.5,*/*;q=0.1"),
                     RS_METRICS_OPENMETRICS);
    assert_non_null(strstr(rs_metrics_content_type(RS_METRICS_OPENMETRICS), "version=1.0.0"));
    assert_non_null(strstr(rs_metrics_content_type(RS_METRICS_PROMETHEUS), "version=0.0.4"));
}

static void test_label_value(void **state)
{
    apr_pool_t *p;
    (void)state;
    apr_pool_create(&p, NULL);
    assert_string_equal(rs_metrics_label_value(p, "a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    assert_string_equal(rs_metrics_label_value(p, NULL), "");
    assert_string_equal(rs_metrics_label_value(p, "caf\xc3\xa9 \xe2\x82\xac"), "caf\xc3\xa9 \xe2\x82\xac");
    /* Latin-1, a lone continuation byte, an overlong slash, a surrogate */
    assert_string_equal(rs_metrics_label_value(p, "caf\xe9!"), "caf\xef\xbf\xbd!");
    assert_string_equal(rs_metrics_label_value(p, "\x80"), "\xef\xbf\xbd");
    assert_string_equal(rs_metrics_label_value(p, "\xc0\xaf"), "\xef\xbf\xbd\xef\xbf\xbd");
    assert_string_equal(rs_metrics_label_value(p, "\xed\xa0\x80"),
                        "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd");
    assert_string_equal(rs_metrics_label_value(p, "x\xe2\x82"), "x\xef\xbf\xbd\xef\xbf\xbd");
    apr_pool_destroy(p);
}

static void test_subject_cn(void **state)
{
    apr_pool_t *p;
    (void)state;
    apr_pool_create(&p, NULL);
    assert_string_equal(rs_subject_cn(p, "CN=www.example.org,O=Example"), "www.example.org");
    assert_string_equal(rs_subject_cn(p, "O=Example,CN=late"), "late");
    assert_string_equal(rs_subject_cn(p, "CN=a\\,b \\\"q\\\" \\\\x,O=Org"), "a,b \"q\" \\x");
    assert_string_equal(rs_subject_cn(p, "CN=caf\\C3\\A9"), "caf\xc3\xa9");
    /* "CN=" inside a value is not an attribute */
    assert_string_equal(rs_subject_cn(p, "O=x\\,CN=fake,CN=real"), "real");
    assert_string_equal(rs_subject_cn(p, "OU=CN=no+CN=multi"), "multi");
    assert_string_equal(rs_subject_cn(p, "O=none"), "");
    assert_string_equal(rs_subject_cn(p, NULL), "");
    assert_string_equal(rs_subject_cn(p, "CN=trailing\\"), "trailing\\");
    apr_pool_destroy(p);
}

static void test_relative(void **state)
{
    char b[RS_REL_LEN];
    (void)state;
    rs_relative_time(b, S(100), S(100));
    assert_string_equal(b, "now");
    rs_relative_time(b, S(142), S(100));
    assert_string_equal(b, "in 42 s");
    rs_relative_time(b, S(100), S(100 + 3 * 60 + 59));
    assert_string_equal(b, "3 min ago");
    rs_relative_time(b, S(100 + 27 * 60), S(100));
    assert_string_equal(b, "in 27 min");
    rs_relative_time(b, S(5 * 3600 + 12 * 60), 0);
    assert_string_equal(b, "in 5 h 12 min");
    rs_relative_time(b, 0, S(2 * 86400 + 3 * 3600 + 5));
    assert_string_equal(b, "2 d 3 h ago");
    rs_relative_time(b, S(10000000000LL), 0);
    assert_string_equal(b, "in ages");
}

/* Two certificates: one good with a quoting subject, one never fetched. */
static const char *render(apr_pool_t *p, rs_metrics_format_e fmt, int *writes)
{
    static rs_state_t st[2];
    rs_metrics_cert_t c[2];
    rs_metrics_server_t srv;
    rs_out_t *o = apr_palloc(p, sizeof(*o));
    sink_t k = {p, NULL, 0, 0, 0};

    rs_state_init(&st[0]);
    rs_state_init(&st[1]);
    st[0].resp_this_update = S(1000);
    st[0].resp_next_update = S(1000 + 3600);
    st[0].last_success = S(1000);
    st[0].next_attempt = S(2800);
    rs_state_count(&st[0], RS_METHOD_POST, RS_RESULT_OK);
    rs_state_count(&st[0], RS_METHOD_GET, RS_RESULT_HTTP);
    rs_state_count(&st[0], RS_METHOD_GET, RS_RESULT_HTTP);
    st[1].failures = 3;
    memset(&srv, 0, sizeof(srv));
    srv.now = S(1600);
    srv.per_state[RS_CERT_GOOD] = 1;
    srv.per_state[RS_CERT_NONE] = 1;
    srv.per_state[RS_CERT_NO_URL] = 2;
    srv.store = 1;
    srv.fleet = -1;
    srv.slots_in_use = 1;
    srv.slots_limit = 8;
    rs_hist_observe(&srv.hist, apr_time_from_msec(30));
    rs_hist_observe(&srv.hist, apr_time_from_msec(1500));
    c[0] = (rs_metrics_cert_t){"ab01", "CN=We \\\"quote\\\" \\\\ it,O=X", "a.test b.test", 1,
                               RS_CERT_GOOD, &st[0]};
    c[1] = (rs_metrics_cert_t){"cd02", "O=no cn", "c.test", 0, RS_CERT_NONE, &st[1]};
    rs_out_init(o, sink_write, &k);
    rs_metrics_render(o, p, fmt, &srv, c, 2);
    assert_int_equal(o->total, k.len);
    *writes = k.writes;
    return k.buf;
}

#define HAS(doc, line) assert_non_null(strstr(doc, line "\n"))

static void test_render(void **state)
{
    apr_pool_t *p;
    const char *d, *lbl = "{id=\"ab01\",cn=\"We \\\"quote\\\" \\\\ it\",vhost=\"a.test\","
                          "must_staple=\"true\"";
    int writes;
    (void)state;
    apr_pool_create(&p, NULL);

    d = render(p, RS_METRICS_PROMETHEUS, &writes);
    assert_int_equal(writes, 1);
    HAS(d, "# TYPE resilient_stapling_fetch_attempts_total counter");
    HAS(d, "# TYPE resilient_stapling_certificate_state gauge");
    HAS(d, "# TYPE resilient_stapling_fetch_duration_seconds histogram");
    HAS(d, "resilient_stapling_certificates{state=\"no-ocsp-url\"} 2");
    HAS(d, "resilient_stapling_store_up 1");
    assert_null(strstr(d, "fleet_up"));
    HAS(d, "resilient_stapling_fetch_slots_in_use 1");
    HAS(d, "resilient_stapling_fetch_duration_seconds_bucket{le=\"0.010\"} 0");
    HAS(d, "resilient_stapling_fetch_duration_seconds_bucket{le=\"0.050\"} 1");
    HAS(d, "resilient_stapling_fetch_duration_seconds_bucket{le=\"2.500\"} 2");
    HAS(d, "resilient_stapling_fetch_duration_seconds_bucket{le=\"+Inf\"} 2");
    HAS(d, "resilient_stapling_fetch_duration_seconds_sum 1.530000");
    HAS(d, "resilient_stapling_fetch_duration_seconds_count 2");
    assert_non_null(strstr(d, apr_pstrcat(p, "resilient_stapling_certificate_state", lbl,
                                          ",state=\"good\"} 1\n", NULL)));
    assert_non_null(strstr(d, apr_pstrcat(p, "resilient_stapling_certificate_state", lbl,
                                          ",state=\"expired\"} 0\n", NULL)));
    assert_null(strstr(d, "state=\"no-ocsp-url\"} 0"));
    assert_non_null(strstr(d, apr_pstrcat(p, "resilient_stapling_response_expires_in_seconds",
                                          lbl, "} 3000\n", NULL)));
    assert_non_null(strstr(d, apr_pstrcat(p, "resilient_stapling_response_age_seconds", lbl,
                                          "} 600\n", NULL)));
    assert_non_null(strstr(d, apr_pstrcat(p, "resilient_stapling_response_lifetime_seconds",
                                          lbl, "} 3600\n", NULL)));
    assert_non_null(strstr(d, apr_pstrcat(p, "resilient_stapling_next_attempt_in_seconds", lbl,
                                          "} 1200\n", NULL)));
    assert_non_null(strstr(d, apr_pstrcat(p, "resilient_stapling_last_success_timestamp_seconds",
                                          lbl, "} 1000\n", NULL)));
    assert_non_null(strstr(d, apr_pstrcat(p, "resilient_stapling_fetch_attempts_total", lbl,
                                          ",method=\"GET\",result=\"http\"} 2\n", NULL)));
    assert_non_null(strstr(d, apr_pstrcat(p, "resilient_stapling_fetch_attempts_total", lbl,
                                          ",method=\"POST\",result=\"ok\"} 1\n", NULL)));
    /* the one never fetched: no expiry, no age, no last success; a CN of "" */
    HAS(d, "resilient_stapling_consecutive_failures{id=\"cd02\",cn=\"\",vhost=\"c.test\","
           "must_staple=\"false\"} 3");
    HAS(d, "resilient_stapling_next_attempt_in_seconds{id=\"cd02\",cn=\"\",vhost=\"c.test\","
           "must_staple=\"false\"} 0");
    assert_null(strstr(d, "expires_in_seconds{id=\"cd02\""));
    assert_null(strstr(d, "last_success_timestamp_seconds{id=\"cd02\""));
    assert_null(strstr(d, "# EOF"));

    d = render(p, RS_METRICS_OPENMETRICS, &writes);
    HAS(d, "# TYPE resilient_stapling_fetch_attempts counter");
    HAS(d, "# HELP resilient_stapling_fetch_attempts Fetches since the server started, by "
           "method and result (ok, transport, http, responder-error, invalid, not-newer).");
    assert_null(strstr(d, "# TYPE resilient_stapling_fetch_attempts_total"));
    assert_non_null(strstr(d, "resilient_stapling_fetch_attempts_total{id=\"cd02\""));
    assert_true(strlen(d) > 6 && !strcmp(d + strlen(d) - 6, "# EOF\n"));
    assert_int_equal(strstr(d, "# EOF") - d, (long)strlen(d) - 6); /* once, at the end */
    apr_pool_destroy(p);
}

/* A small buffer's worth of output at a time gives the same bytes. */
static void test_out_chunks(void **state)
{
    apr_pool_t *p;
    rs_out_t *o;
    sink_t k;
    char big[RS_OUT_BUF * 2 + 100];
    int i;
    (void)state;
    apr_pool_create(&p, NULL);
    k = (sink_t){p, NULL, 0, 0, 0};
    o = apr_palloc(p, sizeof(*o));
    for (i = 0; i < (int)sizeof(big); i++)
        big[i] = (char)('a' + i % 26);
    rs_out_init(o, sink_write, &k);
    rs_out_str(o, "x");
    rs_out_mem(o, big, sizeof(big));
    rs_out_flush(o);
    rs_out_flush(o);
    assert_int_equal(k.len, sizeof(big) + 1);
    assert_int_equal(k.writes, 3);
    assert_memory_equal(k.buf + 1, big, sizeof(big));
    apr_pool_destroy(p);
}

/* The cost of one scrape of N certificates, each with a response held,
 * counters set and a subject and vhost of ordinary length. */
static void test_bench(void **state)
{
    const char *env = getenv("RS_METRICS_BENCH");
    int n = env ? atoi(env) : 10000, i;
    apr_pool_t *p;
    rs_state_t *st;
    rs_metrics_cert_t *c;
    rs_metrics_server_t srv;
    rs_out_t *o;
    apr_size_t bytes = 0;
    apr_time_t t0, t1;
    (void)state;
    if (n <= 0)
        skip();
    apr_pool_create(&p, NULL);
    st = apr_pcalloc(p, sizeof(*st) * (apr_size_t)n);
    c = apr_pcalloc(p, sizeof(*c) * (apr_size_t)n);
    memset(&srv, 0, sizeof(srv));
    srv.now = S(1700000000);
    srv.store = 1;
    srv.fleet = 1;
    srv.slots_limit = 8;
    for (i = 0; i < n; i++) {
        rs_state_init(&st[i]);
        st[i].resp_this_update = srv.now - S(3600);
        st[i].resp_next_update = srv.now + S(7 * 86400);
        st[i].last_success = srv.now - S(3600);
        st[i].next_attempt = srv.now + S(3 * 86400);
        st[i].attempts[RS_METHOD_POST][RS_RESULT_OK] = 42;
        c[i].id = apr_psprintf(p, "%040x", i);
        c[i].subject = apr_psprintf(p, "CN=www%d.customer-example.org,O=Example Hosting GmbH", i);
        c[i].vhost = apr_psprintf(p, "www%d.customer-example.org", i);
        c[i].must_staple = i % 10 == 0;
        c[i].state = RS_CERT_GOOD;
        c[i].st = &st[i];
        srv.per_state[RS_CERT_GOOD]++;
    }
    o = apr_palloc(p, sizeof(*o));
    rs_out_init(o, count_write, &bytes);
    t0 = apr_time_now();
    rs_metrics_render(o, p, RS_METRICS_OPENMETRICS, &srv, c, n);
    t1 = apr_time_now();
    fprintf(stderr, "# metrics for %d certificates: %.1f ms, %.1f MB (%.0f bytes each)\n", n,
            (double)(t1 - t0) / 1000.0, (double)bytes / 1e6, (double)bytes / n);
    assert_true(bytes > (apr_size_t)n * 1000);
    apr_pool_destroy(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hist),
        cmocka_unit_test(test_negotiate),
        cmocka_unit_test(test_label_value),
        cmocka_unit_test(test_subject_cn),
        cmocka_unit_test(test_relative),
        cmocka_unit_test(test_render),
        cmocka_unit_test(test_out_chunks),
        cmocka_unit_test(test_bench),
    };
    int rc;
    apr_initialize();
    rc = cmocka_run_group_tests(tests, NULL, NULL);
    apr_terminate();
    return rc;
}
