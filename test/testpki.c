/* testpki.c: see testpki.h. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "testpki.h"

static EVP_PKEY *newkey(void)
{
    return EVP_EC_gen("P-256");
}

X509 *tpki_cert(X509 *issuer, EVP_PKEY *issuer_key, EVP_PKEY *key, const char *cn,
                const char **exts)
{
    static long serial = 1000;
    X509 *x = X509_new();
    X509_NAME *name = X509_NAME_new();
    X509V3_CTX ctx;

    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), serial++);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
    X509_set_subject_name(x, name);
    X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : name);
    X509_NAME_free(name);
    X509_gmtime_adj(X509_getm_notBefore(x), -86400);
    X509_gmtime_adj(X509_getm_notAfter(x), 86400 * 365);
    X509_set_pubkey(x, key);
    X509V3_set_ctx(&ctx, issuer ? issuer : x, x, NULL, NULL, 0);
    for (; exts && *exts; exts += 2) {
        X509_EXTENSION *ext = X509V3_EXT_conf(NULL, &ctx, exts[0], exts[1]);
        if (ext) {
            X509_add_ext(x, ext, -1);
            X509_EXTENSION_free(ext);
        }
    }
    X509_sign(x, issuer_key, EVP_sha256());
    return x;
}

tpki_t *tpki_new(void)
{
    static const char *ca_ext[] = {"basicConstraints", "critical,CA:TRUE",
                                   "keyUsage", "critical,keyCertSign,cRLSign", NULL};
    static const char *signer_ext[] = {"basicConstraints", "critical,CA:FALSE",
                                       "extendedKeyUsage", "OCSPSigning", NULL};
    static const char *plain_ext[] = {"basicConstraints", "critical,CA:FALSE",
                                      "extendedKeyUsage", "serverAuth", NULL};
    static const char *leaf_ext[] = {"basicConstraints", "critical,CA:FALSE",
                                     "authorityInfoAccess", "OCSP;URI:http://127.0.0.1:1/ocsp",
                                     "tlsfeature", "status_request", NULL};
    static const char *noaia_ext[] = {"basicConstraints", "critical,CA:FALSE", NULL};
    tpki_t *p = calloc(1, sizeof(*p));
    EVP_PKEY *lk = newkey(), *nk = newkey();

    p->ca_key = newkey();
    p->signer_key = newkey();
    p->rogue_key = newkey();
    p->rogue_signer_key = newkey();
    p->plain_key = newkey();
    p->ca = tpki_cert(NULL, p->ca_key, p->ca_key, "Unit CA", ca_ext);
    p->rogue = tpki_cert(NULL, p->rogue_key, p->rogue_key, "Unit CA", ca_ext); /* same name! */
    p->signer = tpki_cert(p->ca, p->ca_key, p->signer_key, "Unit OCSP", signer_ext);
    p->rogue_signer = tpki_cert(p->rogue, p->rogue_key, p->rogue_signer_key, "Unit OCSP",
                                signer_ext);
    p->plain_signer = tpki_cert(p->ca, p->ca_key, p->plain_key, "Unit server", plain_ext);
    p->leaf = tpki_cert(p->ca, p->ca_key, lk, "leaf.unit.test", leaf_ext);
    p->leaf_noaia = tpki_cert(p->ca, p->ca_key, nk, "noaia.unit.test", noaia_ext);
    EVP_PKEY_free(lk);
    EVP_PKEY_free(nk);
    return p;
}

void tpki_free(tpki_t *p)
{
    X509_free(p->ca);
    X509_free(p->signer);
    X509_free(p->rogue);
    X509_free(p->rogue_signer);
    X509_free(p->plain_signer);
    X509_free(p->leaf);
    X509_free(p->leaf_noaia);
    EVP_PKEY_free(p->ca_key);
    EVP_PKEY_free(p->signer_key);
    EVP_PKEY_free(p->rogue_key);
    EVP_PKEY_free(p->rogue_signer_key);
    EVP_PKEY_free(p->plain_key);
    free(p);
}

unsigned char *tpki_response(const tpki_t *p, const tp_resp_t *o, int *len)
{
    OCSP_BASICRESP *bs = OCSP_BASICRESP_new();
    OCSP_CERTID *id = OCSP_cert_to_id(EVP_sha1(), o->about_other ? p->leaf_noaia : p->leaf,
                                      p->ca);
    time_t now = time(NULL);
    ASN1_TIME *thisupd = ASN1_TIME_adj(NULL, now, 0, o->this_off);
    ASN1_TIME *nextupd = o->no_next ? NULL : ASN1_TIME_adj(NULL, now, 0, o->next_off);
    ASN1_TIME *revtime = ASN1_TIME_adj(NULL, now, 0, -3600);
    X509 *signer = p->signer;
    EVP_PKEY *key = p->signer_key;
    STACK_OF(X509) *certs = sk_X509_new_null();
    unsigned long flags = 0;
    OCSP_RESPONSE *resp;
    unsigned char *der = NULL;

    switch (o->signer) {
    case TP_BY_SIGNER: break;
    case TP_BY_CA: signer = p->ca; key = p->ca_key; flags = OCSP_NOCERTS; break;
    case TP_BY_ROGUE: signer = p->rogue_signer; key = p->rogue_signer_key; break;
    case TP_BY_PLAIN: signer = p->plain_signer; key = p->plain_key; break;
    }
    OCSP_basic_add1_status(bs, id, o->cert_status, OCSP_REVOKED_STATUS_KEYCOMPROMISE,
                           o->cert_status == V_OCSP_CERTSTATUS_REVOKED ? revtime : NULL,
                           thisupd, nextupd);
    if (o->second) {
        OCSP_CERTID *id2 = OCSP_cert_to_id(EVP_sha1(), p->leaf, p->ca);
        OCSP_basic_add1_status(bs, id2, o->second - 1, OCSP_REVOKED_STATUS_KEYCOMPROMISE,
                               o->second - 1 == V_OCSP_CERTSTATUS_REVOKED ? revtime : NULL,
                               thisupd, nextupd);
        OCSP_CERTID_free(id2);
    }
    OCSP_basic_sign(bs, signer, key, EVP_sha256(), certs, flags);
    resp = OCSP_response_create(OCSP_RESPONSE_STATUS_SUCCESSFUL, bs);
    *len = i2d_OCSP_RESPONSE(resp, &der);
    if (o->corrupt_sig && *len > 0)
        der[*len - 1] ^= 0x01; /* no certificates follow: the last byte is signature */
    OCSP_RESPONSE_free(resp);
    OCSP_BASICRESP_free(bs);
    OCSP_CERTID_free(id);
    ASN1_TIME_free(thisupd);
    ASN1_TIME_free(nextupd);
    ASN1_TIME_free(revtime);
    sk_X509_free(certs);
    return der;
}

char *tpki_pem(X509 *a, X509 *b)
{
    BIO *bio = BIO_new(BIO_s_mem());
    char *data, *out;
    long n;
    PEM_write_bio_X509(bio, a);
    if (b)
        PEM_write_bio_X509(bio, b);
    n = BIO_get_mem_data(bio, &data);
    out = malloc((size_t)n + 1);
    memcpy(out, data, (size_t)n);
    out[n] = '\0';
    BIO_free(bio);
    return out;
}
