/* Writes the seed corpus (fuzz/corpus/): responses of every kind the module
 * must tell apart, and state records. Run by hand when the formats change:
 *   make fuzz-seeds */
#include <stdio.h>
#include <string.h>

#include <apr_general.h>

#include "rs_record.h"
#include "testpki.h"

static void put(const char *dir, const char *name, const unsigned char *d, size_t n)
{
    char path[512];
    FILE *f;
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    f = fopen(path, "wb");
    if (f) {
        fwrite(d, 1, n, f);
        fclose(f);
    }
}

int main(int argc, char **argv)
{
    const char *dir = argc > 1 ? argv[1] : "fuzz/corpus";
    char rdir[256], sdir[256];
    static const unsigned char unauthorized[] = {0x30, 0x03, 0x0a, 0x01, 0x06};
    static const struct { const char *name; tp_resp_t o; } kinds[] = {
        {"good.der", {.this_off = -10, .next_off = 3600}},
        {"good-by-ca.der", {.this_off = -10, .next_off = 3600, .signer = TP_BY_CA}},
        {"revoked.der", {.cert_status = 1, .this_off = -10, .next_off = 3600}},
        {"unknown.der", {.cert_status = 2, .this_off = -10, .next_off = 3600}},
        {"expired.der", {.this_off = -7200, .next_off = -3600}},
        {"no-next.der", {.this_off = -10, .no_next = 1}},
        {"other-cert.der", {.this_off = -10, .next_off = 3600, .about_other = 1}},
        {"bad-sig.der", {.this_off = -10, .next_off = 3600, .signer = TP_BY_CA, .corrupt_sig = 1}},
    };
    tpki_t *pki;
    rs_state_t st;
    unsigned char rec[RS_STATE_WIRE_LEN];
    size_t i;

    apr_initialize();
    pki = tpki_new();
    snprintf(rdir, sizeof(rdir), "%s/response", dir);
    snprintf(sdir, sizeof(sdir), "%s/record", dir);
    for (i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
        int len;
        unsigned char *der = tpki_response(pki, &kinds[i].o, &len);
        put(rdir, kinds[i].name, der, (size_t)len);
        OPENSSL_free(der);
    }
    put(rdir, "unauthorized.der", unauthorized, sizeof(unauthorized));
    rs_state_init(&st);
    rs_state_encode(&st, rec);
    put(sdir, "fresh.state", rec, sizeof(rec));
    st.failures = 3;
    st.fetches = 10;
    st.next_attempt = 1234567;
    strcpy(st.last_error, "responder answered tryLater");
    rs_state_encode(&st, rec);
    put(sdir, "failing.state", rec, sizeof(rec));
    {
        unsigned char lease[RS_LEASE_WIRE_LEN];
        rs_lease_encode(0x0123456789abcdefULL, (apr_time_t)1700000000000000LL, lease);
        put(sdir, "held.lease", lease, sizeof(lease));
    }
    tpki_free(pki);
    return 0;
}
