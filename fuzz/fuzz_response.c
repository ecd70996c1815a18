/* libFuzzer target: bytes from a responder (or a store file, or a shared
 * cache) -> rs_ocsp_check(). Besides crashes and sanitizer reports, it
 * fails on any accepted response that breaks the stapling invariants. */
#include <stdint.h>
#include <stdlib.h>

#include <apr_general.h>
#include <sanitizer/lsan_interface.h>

#include "rs_ocsp.h"
#include "testpki.h"

static rs_cert_t *cert;
static tpki_t *pki; /* lives as long as the fuzzer */

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    static apr_pool_t *pool;
    char err[256];
    (void)argc;
    (void)argv;
    /* setup lives for the whole run, partly in APR pool memory, which
     * LeakSanitizer does not scan: not a leak. Inputs are still checked. */
    __lsan_disable();
    apr_initialize();
    apr_pool_create(&pool, NULL);
    pki = tpki_new();
    if (rs_cert_make(&cert, pool, pki->leaf, pki->ca, err, sizeof(err)) != APR_SUCCESS)
        abort();
    __lsan_enable();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    rs_ocsp_result_t r;
    apr_time_t now = apr_time_now(), skew = apr_time_from_sec(300);

    rs_ocsp_check(cert, data, size, now, skew, &r);
    if (rs_verdict_is_valid(r.verdict)
        && (r.next_update <= now || r.this_update > now + skew || r.resp_status != 0
            || (r.verdict == RS_VERDICT_GOOD) != (r.cert_status == 0)))
        abort(); /* something invalid would have been stapled */
    return 0;
}
