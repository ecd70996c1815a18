/* rs_fetch.h: one OCSP request over HTTP, bounded in time and size.
 *
 * Uses OpenSSL's HTTP client (OSSL_HTTP_REQ_CTX) on a non-blocking socket,
 * polled in short slices so that a hung responder costs at most the total
 * deadline and a stopping child is never held up by a fetch in flight.
 */
#ifndef RS_FETCH_H
#define RS_FETCH_H

#include <apr_pools.h>
#include <apr_time.h>

typedef int rs_cancel_fn(void *baton);

typedef struct {
    const char *url;               /* http://host[:port]/path */
    const char *proxy;             /* http://host:port, or NULL */
    apr_interval_time_t timeout;   /* total: resolve + connect + send + receive */
    apr_size_t max_len;            /* response body cap */
    rs_cancel_fn *cancelled;       /* polled while waiting; may be NULL */
    void *baton;
} rs_fetch_opts_t;

/* POST the DER request; on APR_SUCCESS *pbody holds the response body
 * (allocated from p). On failure err holds one sentence naming the cause:
 * APR_TIMEUP (deadline), APR_ECONNREFUSED-like socket errors, APR_EGENERAL
 * (HTTP status, content type, size, framing), APR_EINTR (cancelled). */
apr_status_t rs_fetch(apr_pool_t *p, const rs_fetch_opts_t *opts,
                      const unsigned char *req, apr_size_t req_len,
                      unsigned char **pbody, apr_size_t *plen,
                      char *err, apr_size_t errlen);

#endif
