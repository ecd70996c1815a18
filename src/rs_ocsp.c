/* rs_ocsp.c: certificate facts, OCSP requests, and the validation of responses. */
#include <string.h>
#include <time.h>

#include <apr_strings.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/provider.h>
#include <openssl/sha.h>
#include <openssl/x509v3.h>

#include "rs_ocsp.h"

#define TLS_FEATURE_STATUS_REQUEST 5 /* RFC 7633: the Must-Staple feature */

static apr_status_t cert_cleanup(void *data)
{
    rs_cert_t *c = data;
    OCSP_CERTID_free(c->certid);
    X509_free(c->issuer);
    return APR_SUCCESS;
}

static apr_time_t asn1_to_apr_time(const ASN1_TIME *t)
{
    struct tm tm;
    if (!t || !ASN1_TIME_to_tm(t, &tm))
        return 0;
    return apr_time_from_sec(timegm(&tm));
}

/* The most recent OpenSSL error as text, for the reason of a failure. */
static void openssl_reason(char *buf, apr_size_t len, const char *what)
{
    unsigned long e = ERR_peek_last_error();
    if (e) {
        char ebuf[120];
        ERR_error_string_n(e, ebuf, sizeof(ebuf));
        apr_snprintf(buf, len, "%s: %s", what, ebuf);
    }
    else {
        apr_snprintf(buf, len, "%s", what);
    }
    ERR_clear_error();
}

static const char *name_oneline(apr_pool_t *p, const X509_NAME *name)
{
    BIO *b = BIO_new(BIO_s_mem());
    char *data = NULL;
    long n;
    const char *s;
    if (!b)
        return "";
    X509_NAME_print_ex(b, name, 0, XN_FLAG_RFC2253);
    n = BIO_get_mem_data(b, &data);
    s = n > 0 ? apr_pstrmemdup(p, data, (apr_size_t)n) : "";
    BIO_free(b);
    return s;
}

static const char *serial_hex(apr_pool_t *p, const X509 *x)
{
    BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL);
    char *hex = bn ? BN_bn2hex(bn) : NULL;
    const char *s = hex ? apr_pstrdup(p, hex) : "";
    OPENSSL_free(hex);
    BN_free(bn);
    return s;
}

static const char *first_http_ocsp_url(apr_pool_t *p, X509 *leaf)
{
    STACK_OF(OPENSSL_STRING) *urls = X509_get1_ocsp(leaf);
    const char *found = NULL;
    int i;
    for (i = 0; urls && i < sk_OPENSSL_STRING_num(urls); i++) {
        const char *u = sk_OPENSSL_STRING_value(urls, i);
        if (u && strncasecmp(u, "http://", 7) == 0) {
            found = apr_pstrdup(p, u);
            break;
        }
    }
    X509_email_free(urls);
    return found;
}

static int has_must_staple(X509 *leaf)
{
    TLS_FEATURE *features = X509_get_ext_d2i(leaf, NID_tlsfeature, NULL, NULL);
    int i, found = 0;
    for (i = 0; features && i < sk_ASN1_INTEGER_num(features); i++) {
        if (ASN1_INTEGER_get(sk_ASN1_INTEGER_value(features, i)) == TLS_FEATURE_STATUS_REQUEST)
            found = 1;
    }
    TLS_FEATURE_free(features);
    return found;
}

apr_status_t rs_cert_make(rs_cert_t **pcert, apr_pool_t *p, X509 *leaf, X509 *issuer,
                          char *err, apr_size_t errlen)
{
    rs_cert_t *c;
    unsigned int idlen = 0;

    *pcert = NULL;
    if (!leaf || !issuer) {
        apr_snprintf(err, errlen, "no issuer certificate given");
        return APR_ENOENT;
    }
    c = apr_pcalloc(p, sizeof(*c));
    X509_up_ref(issuer);
    c->issuer = issuer;
    apr_pool_cleanup_register(p, c, cert_cleanup, apr_pool_cleanup_null);

    /* the SHA-1 of the DER, as X509_digest and mod_ssl compute it; not
     * X509_digest itself: a leaf from parse_leaf cannot fetch digests */
    {
        unsigned char *der = NULL;
        int len = i2d_X509(leaf, &der);
        int ok = len > 0 && EVP_Digest(der, (size_t)len, c->id, &idlen, EVP_sha1(), NULL)
                 && idlen == RS_ID_LEN;
        OPENSSL_free(der);
        if (!ok) {
            openssl_reason(err, errlen, "cannot digest certificate");
            return APR_EINVAL;
        }
    }
    c->certid = OCSP_cert_to_id(EVP_sha1(), leaf, issuer);
    if (!c->certid) {
        openssl_reason(err, errlen, "cannot build OCSP CertID");
        return APR_EINVAL;
    }
    c->aia_url = first_http_ocsp_url(p, leaf);
    c->must_staple = has_must_staple(leaf);
    c->subject = name_oneline(p, X509_get_subject_name(leaf));
    c->issuer_name = name_oneline(p, X509_get_subject_name(issuer));
    c->serial = serial_hex(p, leaf);
    c->not_after = asn1_to_apr_time(X509_get0_notAfter(leaf));
    *pcert = c;
    return APR_SUCCESS;
}

static apr_status_t issuer_cleanup(void *data)
{
    X509_free(data);
    return APR_SUCCESS;
}

/* The one parsed copy of an issuer, by the digest of its PEM text: with
 * OpenSSL 3 parsing a certificate (its public key through the decoder
 * framework) costs ~0.25 ms, which at 10,000 certificates of a few CAs is
 * seconds of startup spent parsing the same issuers again. */
static X509 *shared_issuer(apr_hash_t *issuers, apr_pool_t *p, BIO *b)
{
    unsigned char md[SHA_DIGEST_LENGTH], *key;
    unsigned int mdlen = 0;
    char *rest = NULL;
    long rest_len = BIO_get_mem_data(b, &rest);
    X509 *issuer;

    if (issuers && rest_len > 0
        && EVP_Digest(rest, (size_t)rest_len, md, &mdlen, EVP_sha1(), NULL)) {
        issuer = apr_hash_get(issuers, md, mdlen);
        if (issuer) {
            X509_up_ref(issuer);
            return issuer;
        }
    }
    issuer = PEM_read_bio_X509(b, NULL, NULL, NULL);
    ERR_clear_error(); /* end of PEM data is reported as an error */
    if (!issuer || !issuers || mdlen == 0)
        return issuer;
    key = apr_pmemdup(p, md, mdlen);
    X509_up_ref(issuer); /* the table's reference */
    apr_hash_set(issuers, key, mdlen, issuer);
    apr_pool_cleanup_register(p, issuer, issuer_cleanup, apr_pool_cleanup_null);
    return issuer;
}

/* A library context without any provider but "null": a certificate parsed
 * in it keeps its public key undecoded. OpenSSL 3 decodes the key of every
 * certificate it parses through the decoder framework (~0.15 ms, 85 % of
 * what priming a certificate cost: 1.5 s at 10,000); the leaf's key is never
 * used here (rs_cert_make takes its digest, serial, extensions and names;
 * the issuer, which verifies responses, is parsed normally). Made by the
 * parent at the first prime of a generation and freed with the pool of that
 * prime (the configuration's): httpd unloads the module at every restart,
 * and a context kept in a static alone was lost, one per reload. NULL if it
 * cannot be made. */
static OSSL_LIB_CTX *no_keys;
static OSSL_PROVIDER *no_keys_null;
static int no_keys_tried;

static apr_status_t no_keys_free(void *data)
{
    (void)data;
    OSSL_PROVIDER_unload(no_keys_null);
    OSSL_LIB_CTX_free(no_keys);
    no_keys = NULL;
    no_keys_null = NULL;
    no_keys_tried = 0;
    return APR_SUCCESS;
}

static OSSL_LIB_CTX *no_keys_ctx(apr_pool_t *p)
{
    if (!no_keys_tried) {
        no_keys_tried = 1;
        no_keys = OSSL_LIB_CTX_new();
        if (no_keys && !(no_keys_null = OSSL_PROVIDER_load(no_keys, "null"))) {
            OSSL_LIB_CTX_free(no_keys);
            no_keys = NULL;
        }
        ERR_clear_error();
        if (no_keys)
            apr_pool_cleanup_register(p, NULL, no_keys_free, apr_pool_cleanup_null);
    }
    return no_keys;
}

static X509 *parse_leaf(BIO *b, apr_pool_t *p)
{
    OSSL_LIB_CTX *ctx = no_keys_ctx(p);
    X509 *x = ctx ? X509_new_ex(ctx, NULL) : NULL;

    if (x && !PEM_read_bio_X509(b, &x, NULL, NULL)) {
        X509_free(x);
        return NULL;
    }
    if (!x)
        x = PEM_read_bio_X509(b, NULL, NULL, NULL);
    return x;
}

apr_status_t rs_cert_from_pem(rs_cert_t **pcert, apr_pool_t *p, const char *pem,
                              apr_hash_t *issuers, char *err, apr_size_t errlen)
{
    BIO *b = BIO_new_mem_buf(pem, -1);
    X509 *leaf = NULL, *issuer = NULL;
    apr_status_t rv;

    *pcert = NULL;
    if (!b)
        return APR_ENOMEM;
    leaf = parse_leaf(b, p);
    if (!leaf) {
        openssl_reason(err, errlen, "cannot parse certificate PEM");
        BIO_free(b);
        return APR_EINVAL;
    }
    issuer = shared_issuer(issuers, p, b);
    BIO_free(b);
    rv = rs_cert_make(pcert, p, leaf, issuer, err, errlen);
    X509_free(leaf);
    X509_free(issuer);
    return rv;
}

apr_status_t rs_ocsp_request_der(const rs_cert_t *cert, apr_pool_t *p,
                                 unsigned char **pder, apr_size_t *plen)
{
    OCSP_REQUEST *req = OCSP_REQUEST_new();
    OCSP_CERTID *id = OCSP_CERTID_dup(cert->certid);
    unsigned char *der = NULL;
    int len;

    *pder = NULL;
    *plen = 0;
    if (!req || !id || !OCSP_request_add0_id(req, id)) {
        OCSP_CERTID_free(id);
        OCSP_REQUEST_free(req);
        return APR_ENOMEM;
    }
    /* No nonce: responders of public CAs serve pre-signed responses and
     * ignore it, and a nonce would defeat their caches (RFC 5019). */
    len = i2d_OCSP_REQUEST(req, &der);
    OCSP_REQUEST_free(req);
    if (len <= 0)
        return APR_EGENERAL;
    *pder = apr_pmemdup(p, der, (apr_size_t)len);
    *plen = (apr_size_t)len;
    OPENSSL_free(der);
    return APR_SUCCESS;
}

/* The signer must be the issuer itself or a responder the issuer certified
 * for OCSP signing (RFC 6960 4.2.2.2); the issuer is the trust anchor even
 * when it is an intermediate, because the admin configured it. */
static int signature_ok(OCSP_BASICRESP *bs, const rs_cert_t *cert, apr_time_t now,
                        char *detail, apr_size_t len)
{
    X509_STORE *store = X509_STORE_new();
    STACK_OF(X509) *untrusted = sk_X509_new_null();
    int ok = 0;

    if (store && untrusted && X509_STORE_add_cert(store, cert->issuer)
        && sk_X509_push(untrusted, cert->issuer)) {
        X509_VERIFY_PARAM *vp = X509_STORE_get0_param(store);
        X509_VERIFY_PARAM_set_flags(vp, X509_V_FLAG_PARTIAL_CHAIN);
        X509_VERIFY_PARAM_set_time(vp, (time_t)apr_time_sec(now));
        ok = OCSP_basic_verify(bs, untrusted, store, 0) > 0;
    }
    if (!ok)
        openssl_reason(detail, len, "signature does not verify against the issuer");
    sk_X509_free(untrusted);
    X509_STORE_free(store);
    return ok;
}

/* OCSP_resp_find_status reads the first SingleResponse about the
 * certificate; a response may carry more (RFC 6960 4.2.1). They must all
 * give the same status, or none of them is believed. */
static int single_answers_agree(OCSP_BASICRESP *bs, OCSP_CERTID *id, int status)
{
    int i = -1;
    while ((i = OCSP_resp_find(bs, id, i + 1)) >= 0) {
        OCSP_SINGLERESP *single = OCSP_resp_get0(bs, i);
        if (!single || OCSP_single_get0_status(single, NULL, NULL, NULL, NULL) != status)
            return 0;
    }
    return 1;
}

static void fail(rs_ocsp_result_t *r, rs_verdict_e v, const char *detail)
{
    r->verdict = v;
    if (detail)
        apr_cpystrn(r->detail, detail, sizeof(r->detail));
}

void rs_ocsp_check(const rs_cert_t *cert, const unsigned char *der, apr_size_t len,
                   apr_time_t now, apr_interval_time_t skew, rs_ocsp_result_t *r)
{
    const unsigned char *pp = der;
    OCSP_RESPONSE *resp = NULL;
    OCSP_BASICRESP *bs = NULL;
    ASN1_GENERALIZEDTIME *thisupd = NULL, *nextupd = NULL, *revtime = NULL;
    int status = -1, reason = -1;

    memset(r, 0, sizeof(*r));
    r->resp_status = r->cert_status = r->revocation_reason = -1;

    if (!der || len == 0) {
        fail(r, RS_VERDICT_EMPTY, "empty response");
        return;
    }
    if (len > RS_MAX_RESPONSE_LEN) {
        fail(r, RS_VERDICT_TOO_LARGE, "response larger than the size cap");
        return;
    }
    resp = d2i_OCSP_RESPONSE(NULL, &pp, (long)len);
    if (!resp || pp != der + len) {
        fail(r, RS_VERDICT_MALFORMED, resp ? "trailing bytes after the response"
                                           : "not a DER OCSP response");
        ERR_clear_error();
        goto out;
    }
    r->resp_status = OCSP_response_status(resp);
    if (r->resp_status != OCSP_RESPONSE_STATUS_SUCCESSFUL) {
        /* The 5-byte "unauthorized" of the seed threads ends here: it is a
         * responder error, never something to hand to a client. */
        apr_snprintf(r->detail, sizeof(r->detail), "responder answered %s",
                     rs_ocsp_resp_status_name(r->resp_status));
        r->verdict = RS_VERDICT_RESPONDER_ERROR;
        goto out;
    }
    bs = OCSP_response_get1_basic(resp);
    if (!bs) {
        fail(r, RS_VERDICT_NOT_BASIC, "not a basic OCSP response");
        ERR_clear_error();
        goto out;
    }
    if (!signature_ok(bs, cert, now, r->detail, sizeof(r->detail))) {
        r->verdict = RS_VERDICT_BAD_SIGNATURE;
        goto out;
    }
    if (!OCSP_resp_find_status(bs, cert->certid, &status, &reason, &revtime,
                               &thisupd, &nextupd)) {
        fail(r, RS_VERDICT_WRONG_CERT, "response is not about this certificate");
        goto out;
    }
    if (!single_answers_agree(bs, cert->certid, status)) {
        fail(r, RS_VERDICT_MALFORMED,
             "the response holds answers for this certificate that disagree");
        goto out;
    }
    r->cert_status = status;
    r->revocation_reason = reason;
    r->this_update = asn1_to_apr_time(thisupd);
    r->next_update = nextupd ? asn1_to_apr_time(nextupd) : 0;
    r->revocation_time = revtime ? asn1_to_apr_time(revtime) : 0;

    if (status == V_OCSP_CERTSTATUS_UNKNOWN) {
        fail(r, RS_VERDICT_UNKNOWN, "responder does not know the certificate");
    }
    else if (!thisupd || r->this_update > now + skew) {
        fail(r, RS_VERDICT_NOT_YET_VALID, "thisUpdate is in the future");
    }
    else if (!nextupd) {
        /* Without nextUpdate nobody can tell when to stop stapling it. */
        fail(r, RS_VERDICT_NO_NEXT_UPDATE, "response has no nextUpdate");
    }
    else if (r->next_update <= r->this_update) {
        fail(r, RS_VERDICT_MALFORMED, "nextUpdate is not after thisUpdate");
    }
    else if (now >= r->next_update) {
        fail(r, RS_VERDICT_EXPIRED, "nextUpdate has passed");
    }
    else if (status == V_OCSP_CERTSTATUS_REVOKED) {
        fail(r, RS_VERDICT_REVOKED, "certificate is revoked");
    }
    else {
        fail(r, RS_VERDICT_GOOD, "good");
    }
out:
    OCSP_BASICRESP_free(bs);
    OCSP_RESPONSE_free(resp);
}

int rs_verdict_is_valid(rs_verdict_e v)
{
    return v == RS_VERDICT_GOOD || v == RS_VERDICT_REVOKED;
}

const char *rs_verdict_name(rs_verdict_e v)
{
    switch (v) {
    case RS_VERDICT_GOOD: return "good";
    case RS_VERDICT_REVOKED: return "revoked";
    case RS_VERDICT_EMPTY: return "empty";
    case RS_VERDICT_TOO_LARGE: return "too-large";
    case RS_VERDICT_MALFORMED: return "malformed";
    case RS_VERDICT_RESPONDER_ERROR: return "responder-error";
    case RS_VERDICT_NOT_BASIC: return "not-basic";
    case RS_VERDICT_BAD_SIGNATURE: return "bad-signature";
    case RS_VERDICT_WRONG_CERT: return "wrong-certificate";
    case RS_VERDICT_UNKNOWN: return "unknown";
    case RS_VERDICT_NOT_YET_VALID: return "not-yet-valid";
    case RS_VERDICT_NO_NEXT_UPDATE: return "no-nextupdate";
    case RS_VERDICT_EXPIRED: return "expired";
    case RS_VERDICT_TRANSPORT: return "transport";
    case RS_VERDICT_HTTP: return "http";
    case RS_VERDICT_NOT_NEWER: return "not-newer";
    }
    return "invalid";
}

const char *rs_ocsp_resp_status_name(int status)
{
    switch (status) {
    case OCSP_RESPONSE_STATUS_SUCCESSFUL: return "successful";
    case OCSP_RESPONSE_STATUS_MALFORMEDREQUEST: return "malformedRequest";
    case OCSP_RESPONSE_STATUS_INTERNALERROR: return "internalError";
    case OCSP_RESPONSE_STATUS_TRYLATER: return "tryLater";
    case OCSP_RESPONSE_STATUS_SIGREQUIRED: return "sigRequired";
    case OCSP_RESPONSE_STATUS_UNAUTHORIZED: return "unauthorized";
    }
    return "unknown-status";
}

const char *rs_id_hex(const unsigned char *id, char *buf)
{
    static const char hex[] = "0123456789abcdef";
    int i;
    for (i = 0; i < RS_ID_LEN; i++) {
        buf[2 * i] = hex[id[i] >> 4];
        buf[2 * i + 1] = hex[id[i] & 0xf];
    }
    buf[2 * RS_ID_LEN] = '\0';
    return buf;
}
