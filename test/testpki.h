/* testpki.h: an in-memory PKI for unit tests: a CA, a delegated OCSP
 * signer, a rogue CA with its own signer, leaves, and OCSP responses built
 * with any of the faults the module must reject. */
#ifndef TESTPKI_H
#define TESTPKI_H

#include <openssl/ocsp.h>
#include <openssl/x509.h>

typedef struct {
    EVP_PKEY *ca_key, *signer_key, *rogue_key, *rogue_signer_key, *plain_key;
    X509 *ca, *signer, *rogue, *rogue_signer;
    X509 *plain_signer; /* issued by the CA, but without id-kp-OCSPSigning */
    X509 *leaf;         /* AIA http://127.0.0.1:1/ocsp, Must-Staple */
    X509 *leaf_noaia;
} tpki_t;

typedef enum { TP_BY_SIGNER, TP_BY_CA, TP_BY_ROGUE, TP_BY_PLAIN } tp_signer_e;

typedef struct {
    int cert_status;   /* V_OCSP_CERTSTATUS_GOOD (default 0), REVOKED, UNKNOWN */
    long this_off;     /* seconds from now */
    long next_off;     /* seconds from now; ignored if no_next */
    int no_next;
    tp_signer_e signer;
    int about_other;   /* answer for leaf_noaia instead of leaf */
    int corrupt_sig;   /* flip the last signature byte (signer TP_BY_CA only) */
    int second;        /* a second SingleResponse for the leaf: its status + 1 (0: none) */
} tp_resp_t;

tpki_t *tpki_new(void);
void tpki_free(tpki_t *pki);
X509 *tpki_cert(X509 *issuer, EVP_PKEY *issuer_key, EVP_PKEY *key, const char *cn,
                const char **exts);
/* DER of a successful response; free with OPENSSL_free. */
unsigned char *tpki_response(const tpki_t *pki, const tp_resp_t *o, int *len);
char *tpki_pem(X509 *a, X509 *b); /* PEM of a then b (b may be NULL); free() */

#endif
