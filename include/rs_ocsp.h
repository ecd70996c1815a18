/* rs_ocsp.h: what the module knows about a certificate, how it asks about
 * it, and the one place that decides whether an OCSP response may be served.
 *
 * Every response, whether fresh from a responder or read back from a shared
 * cache, goes through rs_ocsp_check(): nothing is trusted for being stored.
 * No httpd types here, so unit tests and fuzzers drive it directly.
 */
#ifndef RS_OCSP_H
#define RS_OCSP_H

#include <apr_hash.h>
#include <apr_pools.h>
#include <apr_time.h>
#include <openssl/ocsp.h>
#include <openssl/x509.h>

#define RS_ID_LEN 20 /* mod_ssl's certificate id: SHA-1 of the leaf DER */

/* Upper bound for a response we accept. Real responses (with a delegated
 * signer chain) stay below 4 KiB; mod_ssl uses 10 KiB. */
#define RS_MAX_RESPONSE_LEN (64 * 1024)

typedef enum {
    RS_VERDICT_GOOD = 0,
    RS_VERDICT_REVOKED,
    /* everything below is a failed attempt that never reaches a client */
    RS_VERDICT_EMPTY,
    RS_VERDICT_TOO_LARGE,
    RS_VERDICT_MALFORMED,
    RS_VERDICT_RESPONDER_ERROR, /* OCSPResponseStatus other than successful */
    RS_VERDICT_NOT_BASIC,
    RS_VERDICT_BAD_SIGNATURE,
    RS_VERDICT_WRONG_CERT,
    RS_VERDICT_UNKNOWN,
    RS_VERDICT_NOT_YET_VALID,
    RS_VERDICT_NO_NEXT_UPDATE,
    RS_VERDICT_EXPIRED,
    RS_VERDICT_TRANSPORT, /* set by the fetcher, never by rs_ocsp_check */
    RS_VERDICT_HTTP,      /* the fetcher: an HTTP answer that is no OCSP response */
    RS_VERDICT_NOT_NEWER, /* the fetcher: verified, but not newer than the held one */
} rs_verdict_e;

typedef struct {
    rs_verdict_e verdict;
    int resp_status;       /* OCSPResponseStatus, -1 if not parsed */
    int cert_status;       /* V_OCSP_CERTSTATUS_*, -1 if not found */
    int revocation_reason; /* OCSP_REVOKED_STATUS_*, -1 if none */
    apr_time_t this_update;
    apr_time_t next_update;
    apr_time_t revocation_time;
    char detail[192]; /* why, for the log line and the status page */
} rs_ocsp_result_t;

/* A primed certificate: what is derived from leaf and issuer once at
 * configuration time. The leaf itself is not kept; the issuer (the trust
 * anchor for its responses) may be shared by all its leaves. Owned by the
 * pool it was made in. */
typedef struct {
    unsigned char id[RS_ID_LEN];
    X509 *issuer;
    OCSP_CERTID *certid;
    const char *aia_url;  /* first http:// OCSP URL of the AIA, or NULL */
    int must_staple;      /* TLS feature status_request (RFC 7633) */
    const char *subject;  /* one-line RFC 2253 form */
    const char *issuer_name;
    const char *serial;   /* hex */
    apr_time_t not_after;
} rs_cert_t;

/* Parse the PEM mod_ssl primes with (leaf first, then issuer). A missing
 * issuer is APR_ENOENT (the caller skips the certificate quietly); anything
 * unparseable is APR_EINVAL. err receives a sentence for the log.
 * issuers (may be NULL) maps digests of the issuer PEM to parsed issuers, so that
 * a thousand leaves of one CA share one X509, parsed once (entries live as
 * long as p). */
apr_status_t rs_cert_from_pem(rs_cert_t **pcert, apr_pool_t *p, const char *pem,
                              apr_hash_t *issuers, char *err, apr_size_t errlen);

/* Same, from already parsed certificates (unit tests, fuzzers). Takes its
 * own references. */
apr_status_t rs_cert_make(rs_cert_t **pcert, apr_pool_t *p, X509 *leaf, X509 *issuer,
                          char *err, apr_size_t errlen);

/* The DER of an OCSP request for this certificate, allocated from p. */
apr_status_t rs_ocsp_request_der(const rs_cert_t *cert, apr_pool_t *p,
                                 unsigned char **pder, apr_size_t *plen);

/* The single validation rule for a response (docs/DESIGN.md section 2,
 * rules 4-6): fills result; result->verdict is GOOD or REVOKED only if the response is
 * successful, basic, signed by the issuer or a responder it delegated to,
 * about this certificate, not unknown, thisUpdate <= now + skew and
 * now < nextUpdate. */
void rs_ocsp_check(const rs_cert_t *cert, const unsigned char *der, apr_size_t len,
                   apr_time_t now, apr_interval_time_t skew, rs_ocsp_result_t *result);

int rs_verdict_is_valid(rs_verdict_e v);
const char *rs_verdict_name(rs_verdict_e v);
/* "successful", "unauthorized", ... for an OCSPResponseStatus. */
const char *rs_ocsp_resp_status_name(int status);

/* Hex of an id, for file names, logs and the status page. buf >= 2*RS_ID_LEN+1 */
const char *rs_id_hex(const unsigned char *id, char *buf);

#endif
