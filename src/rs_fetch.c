/* rs_fetch.c: one OCSP request over HTTP with a total deadline (see
 * rs_fetch.h): OpenSSL's HTTP client through a filter BIO that bounds what
 * is read. The connection and the deadline are in rs_fetch_net.c, the
 * round of requests in rs_fetch_round.c. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>

#include <apr_strings.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/http.h>
#include <openssl/httperr.h>
#include <openssl/ocsp.h>

#include "rs_fetch_net.h"

/* The most the status line and headers of an answer may take: a responder
 * that sends more is cut (OpenSSL 3.0 bounds the length of a header line,
 * not their number). */
#define MAX_HEADER_BYTES (16 * 1024)
#define OCSP_RESPONSE_TYPE "application/ocsp-response"

/* The OpenSSL error chosen for the message (0 if none): callers tell an
 * HTTP error from a transport one by it. */
static unsigned long set_err_openssl(rs_fetch_ctx_t *f, const char *what)
{
    unsigned long e, chosen = 0;
    const char *data = NULL;
    int flags = 0;
    char ebuf[120] = "";

    /* The last error is the most specific one (e.g. "received error" with
     * "code=500"); its data string carries the HTTP detail. */
    while ((e = ERR_get_error_all(NULL, NULL, NULL, &data, &flags)) != 0) {
        chosen = e;
        ERR_error_string_n(e, ebuf, sizeof(ebuf));
        if (!(flags & ERR_TXT_STRING))
            data = NULL;
        if (ERR_peek_error() == 0)
            break;
    }
    if (ebuf[0] && data && *data)
        apr_snprintf(f->err, f->errlen, "%s: %s (%s)", what,
                     ERR_reason_error_string(chosen) ? ERR_reason_error_string(chosen) : ebuf,
                     data);
    else if (ebuf[0])
        apr_snprintf(f->err, f->errlen, "%s: %s", what,
                     ERR_reason_error_string(chosen) ? ERR_reason_error_string(chosen) : ebuf);
    else
        apr_snprintf(f->err, f->errlen, "%s", what);
    ERR_clear_error();
    return chosen;
}



/* --- a filter BIO between OpenSSL's HTTP client and the socket: every read
 * checks the deadline and the cancel flag. OSSL_HTTP_REQ_CTX_nbio reads on
 * as long as data arrives, so a responder streaming headers without end
 * never gave the poll loop a turn. --- */

/* The header section is kept as it passes (OpenSSL 3.0 does not show the
 * headers it parsed, and it refuses a Content-Type with parameters). */
static void keep_head(rs_fetch_ctx_t *f, const char *in, apr_size_t n)
{
    apr_size_t room = MAX_HEADER_BYTES - 1 - f->head_len;
    char *end;

    if (f->head_done)
        return;
    if (n > room)
        n = room;
    memcpy(f->head + f->head_len, in, n);
    f->head_len += n;
    f->head[f->head_len] = '\0';
    if ((end = strstr(f->head, "\r\n\r\n")) || (end = strstr(f->head, "\n\n"))) {
        f->head_done = 1;
        *end = '\0';
    }
    else if (f->head_len == MAX_HEADER_BYTES - 1) {
        apr_snprintf(f->err, f->errlen, "HTTP exchange: the headers exceed %d bytes",
                     MAX_HEADER_BYTES);
        f->cut = APR_EGENERAL;
    }
}

/* The media type of the answer must be OCSP's; parameters are legal. */
static apr_status_t check_content_type(rs_fetch_ctx_t *f)
{
    const char *line = f->head;
    while ((line = strchr(line, '\n')) != NULL) {
        const char *v, *end;
        line++;
        if (strncasecmp(line, "Content-Type:", 13) != 0)
            continue;
        for (v = line + 13; *v == ' ' || *v == '\t'; v++)
            ;
        for (end = v; *end && *end != ';' && *end != '\r' && *end != '\n' && *end != ' '
                      && *end != '\t'; end++)
            ;
        if ((size_t)(end - v) == strlen(OCSP_RESPONSE_TYPE)
            && strncasecmp(v, OCSP_RESPONSE_TYPE, (size_t)(end - v)) == 0)
            return APR_SUCCESS;
        apr_snprintf(f->err, f->errlen, "HTTP exchange failed: unexpected content type "
                     "(%.*s)", (int)(end - v > 60 ? 60 : end - v), v);
        return RS_FETCH_EHTTP;
    }
    apr_snprintf(f->err, f->errlen, "HTTP exchange failed: no Content-Type");
    return RS_FETCH_EHTTP;
}

/* What every read and write checks first: the chain is whole, nothing cut
 * it yet, and neither deadline nor cancel has come. */
static rs_fetch_ctx_t *bound_enter(BIO *b)
{
    rs_fetch_ctx_t *f = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    if (!BIO_next(b) || !f)
        return NULL;
    if (f->cut != APR_SUCCESS
        || (f->cut = rs_fetch_check_bounds(f, "HTTP exchange")) != APR_SUCCESS)
        return NULL;
    return f;
}

static int bound_read(BIO *b, char *out, int outl)
{
    rs_fetch_ctx_t *f = bound_enter(b);
    int n;

    if (!f)
        return -1;
    if (f->bytes_in >= f->read_cap) {
        apr_snprintf(f->err, f->errlen, "HTTP exchange: the answer exceeds %" APR_SIZE_T_FMT
                     " bytes", f->read_cap);
        f->cut = APR_EGENERAL;
        return -1;
    }
    if ((apr_size_t)outl > f->read_cap - f->bytes_in)
        outl = (int)(f->read_cap - f->bytes_in);
    n = BIO_read(BIO_next(b), out, outl);
    if (n > 0) {
        f->bytes_in += (apr_size_t)n;
        keep_head(f, out, (apr_size_t)n);
    }
    BIO_copy_next_retry(b);
    return n;
}

static int bound_write(BIO *b, const char *in, int inl)
{
    int n;
    if (!bound_enter(b))
        return -1;
    n = BIO_write(BIO_next(b), in, inl);
    BIO_copy_next_retry(b);
    return n;
}

static long bound_ctrl(BIO *b, int cmd, long larg, void *parg)
{
    BIO *next = BIO_next(b);
    return next ? BIO_ctrl(next, cmd, larg, parg) : 0;
}

static int bound_create(BIO *b)
{
    BIO_set_init(b, 1);
    return 1;
}

static BIO_METHOD *bound_meth;

static void bound_method_init(void)
{
    BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_FILTER, "rs deadline");
    if (m && BIO_meth_set_read(m, bound_read) && BIO_meth_set_write(m, bound_write)
        && BIO_meth_set_ctrl(m, bound_ctrl) && BIO_meth_set_create(m, bound_create))
        bound_meth = m;
    else
        BIO_meth_free(m);
}

static BIO_METHOD *bound_method(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, bound_method_init);
    return bound_meth;
}


static char *unbracket(apr_pool_t *p, const char *host)
{
    size_t n = strlen(host);
    if (n >= 2 && host[0] == '[' && host[n - 1] == ']')
        return apr_pstrmemdup(p, host + 1, n - 2);
    return apr_pstrdup(p, host);
}

/* Printable ASCII only: responders choose reason phrases and header values,
 * and the message goes to the log, the status JSON and the notify program. */
static void sanitize(char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || (unsigned char)*s > 0x7e)
            *s = '?';
}

static int is_http_error(unsigned long e)
{
    if (ERR_GET_LIB(e) != ERR_LIB_HTTP)
        return 0;
    switch (ERR_GET_REASON(e)) {
    case HTTP_R_RECEIVED_ERROR:
    case HTTP_R_STATUS_CODE_UNSUPPORTED:
    case HTTP_R_UNEXPECTED_CONTENT_TYPE:
    case HTTP_R_MISSING_CONTENT_TYPE:
    case HTTP_R_REDIRECTION_NOT_ENABLED:
    case HTTP_R_MISSING_REDIRECT_LOCATION:
    case HTTP_R_REDIRECTION_FROM_HTTPS_TO_HTTP:
    case HTTP_R_RECEIVED_WRONG_HTTP_VERSION:
        return 1;
    }
    return 0;
}

const char *rs_fetch_get_url(apr_pool_t *p, const char *url, const unsigned char *req,
                             apr_size_t req_len)
{
    size_t ulen = strlen(url);
    char *b64, *out, *o;
    const char *c;
    int n;

    if (req_len == 0 || req_len > RS_GET_MAX_URL)
        return NULL;
    b64 = apr_palloc(p, 4 * ((req_len + 2) / 3) + 1);
    n = EVP_EncodeBlock((unsigned char *)b64, req, (int)req_len);
    if (n <= 0)
        return NULL;
    /* at worst every character becomes %XX */
    out = apr_palloc(p, ulen + 1 + 3 * (size_t)n + 1);
    memcpy(out, url, ulen);
    o = out + ulen;
    if (ulen == 0 || url[ulen - 1] != '/')
        *o++ = '/';
    for (c = b64; *c; c++) {
        if (*c == '+' || *c == '/' || *c == '=') {
            o += sprintf(o, "%%%02X", (unsigned char)*c);
        }
        else {
            *o++ = *c;
        }
    }
    *o = '\0';
    return (size_t)(o - out) < RS_GET_MAX_URL ? out : NULL;
}

apr_status_t rs_fetch(apr_pool_t *p, const rs_fetch_opts_t *opts,
                      const unsigned char *req, apr_size_t req_len,
                      unsigned char **pbody, apr_size_t *plen,
                      char *err, apr_size_t errlen)
{
    rs_fetch_ctx_t f;
    char *host = NULL, *port = NULL, *path = NULL, *phost = NULL, *pport = NULL;
    const char *url = opts->url, *h;
    int use_ssl = 0, post = opts->method != RS_METHOD_GET, fd = -1;
    const unsigned char *rp = req;
    OCSP_REQUEST *oreq = NULL;
    OSSL_HTTP_REQ_CTX *rctx = NULL;
    BIO *sock = NULL, *bio = NULL;
    apr_status_t rv = APR_EGENERAL;
    const char *hosthdr;

    *pbody = NULL;
    *plen = 0;
    err[0] = '\0';
    memset(&f, 0, sizeof(f));
    f.pool = p;
    f.opts = opts;
    f.deadline = apr_time_now() + opts->timeout;
    f.err = err;
    f.errlen = errlen;
    f.read_cap = opts->max_len + MAX_HEADER_BYTES;
    f.head = apr_palloc(p, MAX_HEADER_BYTES);
    f.head[0] = '\0';

    if (!post && !(url = rs_fetch_get_url(p, opts->url, req, req_len))) {
        apr_snprintf(err, errlen, "the request does not fit in a GET URL (%d bytes)",
                     RS_GET_MAX_URL);
        rv = APR_EINVAL;
        goto out;
    }
    if (!OSSL_HTTP_parse_url(url, &use_ssl, NULL, &host, &port, NULL, &path, NULL, NULL)) {
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
    if (post) {
        oreq = d2i_OCSP_REQUEST(NULL, &rp, (long)req_len);
        if (!oreq) {
            set_err_openssl(&f, "invalid OCSP request");
            rv = APR_EINVAL;
            goto out;
        }
    }
    if ((rv = rs_fetch_connect(&f, unbracket(p, phost ? phost : host), phost ? pport : port, &fd))
        != APR_SUCCESS)
        goto out;
    rv = APR_EGENERAL;
    sock = BIO_new_socket(fd, BIO_CLOSE);
    if (!sock) {
        close(fd);
        apr_snprintf(err, errlen, "out of memory");
        goto out;
    }
    bio = bound_method() ? BIO_new(bound_method()) : NULL;
    if (!bio) {
        apr_snprintf(err, errlen, "out of memory");
        goto out;
    }
    BIO_set_data(bio, &f);
    bio = BIO_push(bio, sock);
    sock = NULL; /* freed with the chain */

    rctx = OSSL_HTTP_REQ_CTX_new(bio, bio, 0);
    /* an IPv6 literal goes in brackets (once), or its colons read as a port */
    h = unbracket(p, host);
    if (strchr(h, ':'))
        h = apr_pstrcat(p, "[", h, "]", NULL);
    hosthdr = strcmp(port, "80") == 0 ? h : apr_pstrcat(p, h, ":", port, NULL);
    if (!rctx
        /* through a proxy the request line carries the absolute URI */
        || !OSSL_HTTP_REQ_CTX_set_request_line(rctx, post, phost ? host : NULL,
                                               phost ? port : NULL, path)
        || !OSSL_HTTP_REQ_CTX_add1_header(rctx, "Host", hosthdr)
        /* the content type is checked here: OpenSSL 3.0 wants it bare */
        || !OSSL_HTTP_REQ_CTX_set_expected(rctx, NULL, 1 /* body is one DER object */, 0, 0)
        || (post && !OSSL_HTTP_REQ_CTX_set1_req(rctx, "application/ocsp-request",
                                                ASN1_ITEM_rptr(OCSP_REQUEST),
                                                (ASN1_VALUE *)oreq))) {
        set_err_openssl(&f, "cannot build HTTP request");
        goto out;
    }
    OSSL_HTTP_REQ_CTX_set_max_response_length(rctx, (unsigned long)opts->max_len);

    for (;;) {
        int rc = OSSL_HTTP_REQ_CTX_nbio(rctx);
        if (rc == 1)
            break;
        if (f.cut != APR_SUCCESS) { /* the filter stopped it: err says why */
            ERR_clear_error();
            rv = f.cut;
            goto out;
        }
        if (rc == 0 || !BIO_should_retry(bio)) {
            if (ERR_peek_error() == 0)
                apr_snprintf(err, errlen, "responder closed the connection");
            else if (is_http_error(set_err_openssl(&f, "HTTP exchange failed")))
                rv = RS_FETCH_EHTTP;
            goto out;
        }
        BIO_get_fd(bio, &fd);
        if ((rv = rs_fetch_wait_fd(&f, fd, BIO_should_write(bio), "HTTP exchange")) != APR_SUCCESS)
            goto out;
        rv = APR_EGENERAL;
    }
    if ((rv = check_content_type(&f)) != APR_SUCCESS)
        goto out;
    rv = APR_EGENERAL;
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
    BIO_free(sock);
    OCSP_REQUEST_free(oreq);
    OPENSSL_free(host);
    OPENSSL_free(port);
    OPENSSL_free(path);
    OPENSSL_free(phost);
    OPENSSL_free(pport);
    ERR_clear_error();
    sanitize(err);
    return rv;
}

