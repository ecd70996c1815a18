/* rs_fetch.c: OCSP over HTTP with a total deadline (see rs_fetch.h). */
#include <errno.h>
#include <poll.h>
#include <string.h>

#include <apr_strings.h>
#include <openssl/err.h>
#include <openssl/http.h>
#include <openssl/ocsp.h>

#include "rs_fetch.h"

/* How often a wait looks at the cancel flag: child shutdown latency. */
#define POLL_SLICE_MS 100

typedef struct {
    apr_pool_t *pool;
    const rs_fetch_opts_t *opts;
    apr_time_t deadline;
    char *err;
    apr_size_t errlen;
} fetch_t;

static void set_err_openssl(fetch_t *f, const char *what)
{
    unsigned long e;
    const char *data = NULL;
    int flags = 0;
    char ebuf[120] = "";

    /* The last error is the most specific one (e.g. "received error" with
     * "code=500"); its data string carries the HTTP detail. */
    while ((e = ERR_get_error_all(NULL, NULL, NULL, &data, &flags)) != 0) {
        ERR_error_string_n(e, ebuf, sizeof(ebuf));
        if (!(flags & ERR_TXT_STRING))
            data = NULL;
        if (ERR_peek_error() == 0)
            break;
    }
    if (ebuf[0] && data && *data)
        apr_snprintf(f->err, f->errlen, "%s: %s (%s)", what,
                     ERR_reason_error_string(e) ? ERR_reason_error_string(e) : ebuf, data);
    else if (ebuf[0])
        apr_snprintf(f->err, f->errlen, "%s: %s", what,
                     ERR_reason_error_string(e) ? ERR_reason_error_string(e) : ebuf);
    else
        apr_snprintf(f->err, f->errlen, "%s", what);
    ERR_clear_error();
}

/* Wait until the socket is ready, the deadline passes or we are cancelled. */
static apr_status_t wait_io(fetch_t *f, BIO *bio, int for_write, const char *phase)
{
    int fd = -1;

    if (BIO_get_fd(bio, &fd) <= 0 || fd < 0) {
        apr_snprintf(f->err, f->errlen, "%s: no socket", phase);
        return APR_EGENERAL;
    }
    for (;;) {
        apr_time_t now = apr_time_now();
        apr_interval_time_t left = f->deadline - now;
        struct pollfd pfd;
        int ms, rc;

        if (f->opts->cancelled && f->opts->cancelled(f->opts->baton)) {
            apr_snprintf(f->err, f->errlen, "%s: cancelled (shutting down)", phase);
            return APR_EINTR;
        }
        if (left <= 0) {
            apr_snprintf(f->err, f->errlen, "%s: timed out after %" APR_TIME_T_FMT " ms",
                         phase, apr_time_as_msec(f->opts->timeout));
            return APR_TIMEUP;
        }
        ms = (int)apr_time_as_msec(left);
        if (ms > POLL_SLICE_MS)
            ms = POLL_SLICE_MS;
        if (ms < 1)
            ms = 1;
        pfd.fd = fd;
        pfd.events = for_write ? POLLOUT : POLLIN;
        pfd.revents = 0;
        rc = poll(&pfd, 1, ms);
        if (rc > 0)
            return APR_SUCCESS;
        if (rc < 0 && errno != EINTR) {
            apr_snprintf(f->err, f->errlen, "%s: poll: %s", phase, strerror(errno));
            return APR_FROM_OS_ERROR(errno);
        }
    }
}

static apr_status_t connect_bio(fetch_t *f, const char *host, const char *port, BIO **pbio)
{
    BIO *bio = BIO_new(BIO_s_connect());
    apr_status_t rv;

    *pbio = NULL;
    if (!bio)
        return APR_ENOMEM;
    /* an IPv6 literal goes in brackets, or its colons read as a port */
    BIO_set_conn_hostname(bio, strchr(host, ':') ? apr_pstrcat(f->pool, "[", host, "]", NULL)
                                                  : host);
    BIO_set_conn_port(bio, port);
    BIO_set_nbio(bio, 1);
    for (;;) {
        if (BIO_do_connect(bio) > 0)
            break;
        if (!BIO_should_retry(bio)) {
            char what[300];
            apr_snprintf(what, sizeof(what), "cannot connect to %s:%s", host, port);
            set_err_openssl(f, what);
            BIO_free_all(bio);
            return APR_ECONNREFUSED;
        }
        if ((rv = wait_io(f, bio, 1, "connect")) != APR_SUCCESS) {
            BIO_free_all(bio);
            return rv;
        }
    }
    *pbio = bio;
    return APR_SUCCESS;
}

apr_status_t rs_fetch(apr_pool_t *p, const rs_fetch_opts_t *opts,
                      const unsigned char *req, apr_size_t req_len,
                      unsigned char **pbody, apr_size_t *plen,
                      char *err, apr_size_t errlen)
{
    fetch_t f;
    char *host = NULL, *port = NULL, *path = NULL, *phost = NULL, *pport = NULL;
    int use_ssl = 0;
    const unsigned char *rp = req;
    OCSP_REQUEST *oreq = NULL;
    OSSL_HTTP_REQ_CTX *rctx = NULL;
    BIO *bio = NULL;
    apr_status_t rv = APR_EGENERAL;
    const char *hosthdr;

    *pbody = NULL;
    *plen = 0;
    err[0] = '\0';
    f.pool = p;
    f.opts = opts;
    f.deadline = apr_time_now() + opts->timeout;
    f.err = err;
    f.errlen = errlen;

    if (!OSSL_HTTP_parse_url(opts->url, &use_ssl, NULL, &host, &port, NULL, &path,
                             NULL, NULL)) {
        set_err_openssl(&f, "cannot parse responder URL");
        rv = APR_EINVAL;
        goto out;
    }
    if (use_ssl) {
        apr_snprintf(err, errlen, "https responder URLs are not supported: %s", opts->url);
        rv = APR_ENOTIMPL;
        goto out;
    }
    if (opts->proxy && !OSSL_HTTP_parse_url(opts->proxy, NULL, NULL, &phost, &pport,
                                            NULL, NULL, NULL, NULL)) {
        set_err_openssl(&f, "cannot parse proxy URL");
        rv = APR_EINVAL;
        goto out;
    }
    oreq = d2i_OCSP_REQUEST(NULL, &rp, (long)req_len);
    if (!oreq) {
        set_err_openssl(&f, "invalid OCSP request");
        rv = APR_EINVAL;
        goto out;
    }
    if ((rv = connect_bio(&f, phost ? phost : host, phost ? pport : port, &bio)) != APR_SUCCESS)
        goto out;

    rv = APR_EGENERAL;
    rctx = OSSL_HTTP_REQ_CTX_new(bio, bio, 0);
    {
        const char *h = strchr(host, ':') ? apr_pstrcat(p, "[", host, "]", NULL) : host;
        hosthdr = strcmp(port, "80") == 0 ? h : apr_pstrcat(p, h, ":", port, NULL);
    }
    if (!rctx
        /* through a proxy the request line carries the absolute URI */
        || !OSSL_HTTP_REQ_CTX_set_request_line(rctx, 1, phost ? host : NULL,
                                               phost ? port : NULL, path)
        || !OSSL_HTTP_REQ_CTX_add1_header(rctx, "Host", hosthdr)
        || !OSSL_HTTP_REQ_CTX_set_expected(rctx, "application/ocsp-response",
                                           1 /* body is one DER object */, 0, 0)
        || !OSSL_HTTP_REQ_CTX_set1_req(rctx, "application/ocsp-request",
                                       ASN1_ITEM_rptr(OCSP_REQUEST), (ASN1_VALUE *)oreq)) {
        set_err_openssl(&f, "cannot build HTTP request");
        goto out;
    }
    OSSL_HTTP_REQ_CTX_set_max_response_length(rctx, (unsigned long)opts->max_len);

    for (;;) {
        int rc = OSSL_HTTP_REQ_CTX_nbio(rctx);
        if (rc == 1)
            break;
        if (rc == 0 || !BIO_should_retry(bio)) {
            if (ERR_peek_error() == 0)
                apr_snprintf(err, errlen, "responder closed the connection");
            else
                set_err_openssl(&f, "HTTP exchange failed");
            goto out;
        }
        if ((rv = wait_io(&f, bio, BIO_should_write(bio), "HTTP exchange")) != APR_SUCCESS)
            goto out;
        rv = APR_EGENERAL;
    }
    {
        BIO *mem = OSSL_HTTP_REQ_CTX_get0_mem_bio(rctx);
        char *data = NULL;
        long n = mem ? BIO_get_mem_data(mem, &data) : 0;
        if (n <= 0) {
            apr_snprintf(err, errlen, "empty HTTP response body");
            goto out;
        }
        if ((apr_size_t)n > opts->max_len) {
            apr_snprintf(err, errlen, "response body larger than %" APR_SIZE_T_FMT " bytes",
                         opts->max_len);
            goto out;
        }
        *pbody = apr_pmemdup(p, data, (apr_size_t)n);
        *plen = (apr_size_t)n;
        rv = APR_SUCCESS;
    }
out:
    OSSL_HTTP_REQ_CTX_free(rctx); /* does not free the BIOs */
    BIO_free_all(bio);
    OCSP_REQUEST_free(oreq);
    OPENSSL_free(host);
    OPENSSL_free(port);
    OPENSSL_free(path);
    OPENSSL_free(phost);
    OPENSSL_free(pport);
    ERR_clear_error();
    return rv;
}
