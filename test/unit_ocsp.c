/* Unit tests: certificate facts, requests, and rs_ocsp_check() against every
 * kind of response the module must accept or reject. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <apr_general.h>
#include <openssl/ocsp.h>

#include "rs_ocsp.h"
#include "testpki.h"

static tpki_t *pki;
static apr_pool_t *pool;
static rs_cert_t *cert;
#define SKEW apr_time_from_sec(300)

static int setup(void **state)
{
    char err[256];
    (void)state;
    apr_initialize();
    apr_pool_create(&pool, NULL);
    pki = tpki_new();
    return rs_cert_make(&cert, pool, pki->leaf, pki->ca, err, sizeof(err)) == APR_SUCCESS ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    apr_pool_destroy(pool);
    tpki_free(pki);
    apr_terminate();
    return 0;
}

static rs_verdict_e check_opts(tp_resp_t o, rs_ocsp_result_t *r)
{
    int len;
    unsigned char *der = tpki_response(pki, &o, &len);
    rs_ocsp_check(cert, der, (apr_size_t)len, apr_time_now(), SKEW, r);
    OPENSSL_free(der);
    return r->verdict;
}

static rs_verdict_e check(tp_resp_t o)
{
    rs_ocsp_result_t r;
    return check_opts(o, &r);
}

static void test_cert_facts(void **state)
{
    unsigned char sha1[20];
    unsigned int n;
    (void)state;
    X509_digest(pki->leaf, EVP_sha1(), sha1, &n);
    assert_memory_equal(cert->id, sha1, 20);
    assert_string_equal(cert->aia_url, "http://127.0.0.1:1/ocsp");
    assert_true(cert->must_staple);
    assert_string_equal(cert->subject, "CN=leaf.unit.test");
    assert_string_equal(cert->issuer_name, "CN=Unit CA");
    assert_true(strlen(cert->serial) > 0);
    assert_true(cert->not_after > apr_time_now());
}

static void test_cert_without_aia(void **state)
{
    rs_cert_t *c;
    char err[256];
    (void)state;
    assert_int_equal(rs_cert_make(&c, pool, pki->leaf_noaia, pki->ca, err, sizeof(err)),
                     APR_SUCCESS);
    assert_null(c->aia_url);
    assert_false(c->must_staple);
}

static void test_cert_from_pem(void **state)
{
    rs_cert_t *c;
    char err[256];
    char *both = tpki_pem(pki->leaf, pki->ca), *alone = tpki_pem(pki->leaf, NULL);
    (void)state;
    apr_hash_t *issuers = apr_hash_make(pool);
    rs_cert_t *c2;
    unsigned char md[RS_ID_LEN];
    unsigned int mdlen = 0;
    assert_int_equal(rs_cert_from_pem(&c, pool, both, issuers, err, sizeof(err)), APR_SUCCESS);
    assert_memory_equal(c->id, cert->id, RS_ID_LEN);
    /* the leaf is parsed without decoding its key: the same facts as a
     * normally parsed one, and the id mod_ssl computes */
    assert_true(X509_digest(pki->leaf, EVP_sha1(), md, &mdlen) && mdlen == RS_ID_LEN);
    assert_memory_equal(c->id, md, RS_ID_LEN);
    assert_int_equal(OCSP_id_cmp(c->certid, cert->certid), 0);
    assert_string_equal(c->aia_url, cert->aia_url);
    assert_string_equal(c->serial, cert->serial);
    assert_string_equal(c->subject, cert->subject);
    assert_string_equal(c->issuer_name, cert->issuer_name);
    assert_true(c->not_after == cert->not_after && c->not_after > 0);
    assert_int_equal(c->must_staple, cert->must_staple);
    /* a second leaf of the same CA shares the parsed issuer */
    assert_int_equal(rs_cert_from_pem(&c2, pool, both, issuers, err, sizeof(err)), APR_SUCCESS);
    assert_ptr_equal(c->issuer, c2->issuer);
    assert_int_equal(apr_hash_count(issuers), 1);
    /* mod_ssl may prime without an issuer: a quiet skip, not an error */
    assert_int_equal(rs_cert_from_pem(&c, pool, alone, NULL, err, sizeof(err)), APR_ENOENT);
    assert_int_equal(rs_cert_from_pem(&c, pool, "garbage", NULL, err, sizeof(err)), APR_EINVAL);
    assert_true(strlen(err) > 0);
    free(both);
    free(alone);
}

static void test_request(void **state)
{
    unsigned char *der;
    apr_size_t len;
    const unsigned char *p;
    OCSP_REQUEST *req;
    (void)state;
    assert_int_equal(rs_ocsp_request_der(cert, pool, &der, &len), APR_SUCCESS);
    p = der;
    req = d2i_OCSP_REQUEST(NULL, &p, (long)len);
    assert_non_null(req);
    assert_int_equal(OCSP_request_onereq_count(req), 1);
    assert_int_equal(OCSP_id_cmp(OCSP_onereq_get0_id(OCSP_request_onereq_get0(req, 0)),
                                 cert->certid), 0);
    OCSP_REQUEST_free(req);
}

static void test_good_delegated(void **state)
{
    rs_ocsp_result_t r;
    tp_resp_t o = {.this_off = -10, .next_off = 3600};
    (void)state;
    assert_int_equal(check_opts(o, &r), RS_VERDICT_GOOD);
    assert_true(r.next_update - r.this_update == apr_time_from_sec(3610));
    assert_int_equal(r.resp_status, 0);
}

static void test_good_signed_by_issuer(void **state)
{
    tp_resp_t o = {.this_off = -10, .next_off = 3600, .signer = TP_BY_CA};
    (void)state;
    assert_int_equal(check(o), RS_VERDICT_GOOD);
}

static void test_revoked_is_valid(void **state)
{
    rs_ocsp_result_t r;
    tp_resp_t o = {.cert_status = V_OCSP_CERTSTATUS_REVOKED, .this_off = -10, .next_off = 60};
    (void)state;
    assert_int_equal(check_opts(o, &r), RS_VERDICT_REVOKED);
    assert_true(rs_verdict_is_valid(r.verdict));
    assert_int_equal(r.revocation_reason, OCSP_REVOKED_STATUS_KEYCOMPROMISE);
}

static void test_unknown(void **state)
{
    tp_resp_t o = {.cert_status = V_OCSP_CERTSTATUS_UNKNOWN, .this_off = -10, .next_off = 60};
    (void)state;
    assert_int_equal(check(o), RS_VERDICT_UNKNOWN);
}

static void test_responder_errors(void **state)
{
    /* the 5-byte answers of the seed threads */
    static const unsigned char unauthorized[] = {0x30, 0x03, 0x0a, 0x01, 0x06};
    static const unsigned char trylater[] = {0x30, 0x03, 0x0a, 0x01, 0x03};
    static const unsigned char internal[] = {0x30, 0x03, 0x0a, 0x01, 0x02};
    rs_ocsp_result_t r;
    (void)state;
    rs_ocsp_check(cert, unauthorized, sizeof(unauthorized), apr_time_now(), SKEW, &r);
    assert_int_equal(r.verdict, RS_VERDICT_RESPONDER_ERROR);
    assert_non_null(strstr(r.detail, "unauthorized"));
    rs_ocsp_check(cert, trylater, sizeof(trylater), apr_time_now(), SKEW, &r);
    assert_int_equal(r.verdict, RS_VERDICT_RESPONDER_ERROR);
    assert_non_null(strstr(r.detail, "tryLater"));
    rs_ocsp_check(cert, internal, sizeof(internal), apr_time_now(), SKEW, &r);
    assert_int_equal(r.resp_status, OCSP_RESPONSE_STATUS_INTERNALERROR);
}

static void test_bytes_that_are_not_a_response(void **state)
{
    rs_ocsp_result_t r;
    static const unsigned char garbage[] = "<html>not ocsp</html>";
    unsigned char *big = calloc(1, RS_MAX_RESPONSE_LEN + 1);
    tp_resp_t o = {.this_off = -10, .next_off = 3600};
    int len;
    unsigned char *der = tpki_response(pki, &o, &len), *longer;
    (void)state;

    rs_ocsp_check(cert, NULL, 0, apr_time_now(), SKEW, &r);
    assert_int_equal(r.verdict, RS_VERDICT_EMPTY);
    rs_ocsp_check(cert, garbage, sizeof(garbage) - 1, apr_time_now(), SKEW, &r);
    assert_int_equal(r.verdict, RS_VERDICT_MALFORMED);
    rs_ocsp_check(cert, der, (apr_size_t)len / 2, apr_time_now(), SKEW, &r);
    assert_int_equal(r.verdict, RS_VERDICT_MALFORMED);
    rs_ocsp_check(cert, big, RS_MAX_RESPONSE_LEN + 1, apr_time_now(), SKEW, &r);
    assert_int_equal(r.verdict, RS_VERDICT_TOO_LARGE);
    longer = malloc((size_t)len + 1);
    memcpy(longer, der, (size_t)len);
    longer[len] = 0;
    rs_ocsp_check(cert, longer, (apr_size_t)len + 1, apr_time_now(), SKEW, &r);
    assert_int_equal(r.verdict, RS_VERDICT_MALFORMED);
    free(longer);
    free(big);
    OPENSSL_free(der);
}

static void test_wrong_certificate(void **state)
{
    tp_resp_t o = {.this_off = -10, .next_off = 3600, .about_other = 1};
    (void)state;
    assert_int_equal(check(o), RS_VERDICT_WRONG_CERT);
}

static void test_two_answers_for_one_certificate(void **state)
{
    tp_resp_t disagree = {.this_off = -10, .next_off = 3600,
                          .second = V_OCSP_CERTSTATUS_REVOKED + 1};
    tp_resp_t disagree2 = {.this_off = -10, .next_off = 3600,
                           .cert_status = V_OCSP_CERTSTATUS_REVOKED,
                           .second = V_OCSP_CERTSTATUS_GOOD + 1};
    tp_resp_t agree = {.this_off = -10, .next_off = 3600, .second = V_OCSP_CERTSTATUS_GOOD + 1};
    (void)state;
    /* good first and revoked second (or the reverse): neither is believed */
    assert_int_equal(check(disagree), RS_VERDICT_MALFORMED);
    assert_int_equal(check(disagree2), RS_VERDICT_MALFORMED);
    assert_int_equal(check(agree), RS_VERDICT_GOOD);
}

static void test_signatures(void **state)
{
    tp_resp_t corrupt = {.this_off = -10, .next_off = 3600, .signer = TP_BY_CA, .corrupt_sig = 1};
    tp_resp_t rogue = {.this_off = -10, .next_off = 3600, .signer = TP_BY_ROGUE};
    tp_resp_t plain = {.this_off = -10, .next_off = 3600, .signer = TP_BY_PLAIN};
    (void)state;
    assert_int_equal(check(corrupt), RS_VERDICT_BAD_SIGNATURE);
    /* a signer from another CA that even has the same name */
    assert_int_equal(check(rogue), RS_VERDICT_BAD_SIGNATURE);
    /* certified by the issuer, but not for OCSP signing (RFC 6960 4.2.2.2) */
    assert_int_equal(check(plain), RS_VERDICT_BAD_SIGNATURE);
}

static void test_times(void **state)
{
    tp_resp_t expired = {.this_off = -7200, .next_off = -3600};
    tp_resp_t future = {.this_off = 3600, .next_off = 7200};
    tp_resp_t skewed = {.this_off = 60, .next_off = 7200}; /* within 300 s */
    tp_resp_t no_next = {.this_off = -10, .no_next = 1};
    tp_resp_t inverted = {.this_off = -10, .next_off = -20};
    rs_ocsp_result_t r;
    int len;
    unsigned char *der;
    (void)state;
    assert_int_equal(check(expired), RS_VERDICT_EXPIRED);
    assert_int_equal(check(future), RS_VERDICT_NOT_YET_VALID);
    assert_int_equal(check(skewed), RS_VERDICT_GOOD);
    assert_int_equal(check(no_next), RS_VERDICT_NO_NEXT_UPDATE);
    assert_int_equal(check(inverted), RS_VERDICT_MALFORMED);

    /* the same response, checked at two moments: valid, then past nextUpdate */
    tp_resp_t shortlived = {.this_off = -10, .next_off = 30};
    der = tpki_response(pki, &shortlived, &len);
    rs_ocsp_check(cert, der, (apr_size_t)len, apr_time_now(), SKEW, &r);
    assert_int_equal(r.verdict, RS_VERDICT_GOOD);
    rs_ocsp_check(cert, der, (apr_size_t)len, r.next_update, SKEW, &r);
    assert_int_equal(r.verdict, RS_VERDICT_EXPIRED);
    OPENSSL_free(der);
}

static void test_names(void **state)
{
    (void)state;
    assert_string_equal(rs_ocsp_resp_status_name(6), "unauthorized");
    assert_string_equal(rs_ocsp_resp_status_name(3), "tryLater");
    assert_string_equal(rs_verdict_name(RS_VERDICT_BAD_SIGNATURE), "bad-signature");
    assert_false(rs_verdict_is_valid(RS_VERDICT_EXPIRED));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cert_facts),
        cmocka_unit_test(test_cert_without_aia),
        cmocka_unit_test(test_cert_from_pem),
        cmocka_unit_test(test_request),
        cmocka_unit_test(test_good_delegated),
        cmocka_unit_test(test_good_signed_by_issuer),
        cmocka_unit_test(test_revoked_is_valid),
        cmocka_unit_test(test_unknown),
        cmocka_unit_test(test_responder_errors),
        cmocka_unit_test(test_bytes_that_are_not_a_response),
        cmocka_unit_test(test_wrong_certificate),
        cmocka_unit_test(test_signatures),
        cmocka_unit_test(test_two_answers_for_one_certificate),
        cmocka_unit_test(test_times),
        cmocka_unit_test(test_names),
    };
    return cmocka_run_group_tests_name("rs_ocsp", tests, setup, teardown);
}
