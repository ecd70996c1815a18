/* rs_fetch.h: one OCSP request over HTTP, bounded in time and size, and a
 * round of them (RFC 5019 GET first, POST as the fallback).
 *
 * Uses OpenSSL's HTTP client (OSSL_HTTP_REQ_CTX) on a non-blocking socket,
 * polled in short slices so that a hung responder costs at most the total
 * deadline and a stopping child is never held up by a fetch in flight.
 * Every byte read goes through a filter that checks the deadline and the
 * cancel flag, so a responder that floods headers is cut like one that
 * hangs. Name resolution runs on a thread of its own that the fetch waits
 * for only until the deadline (or the cancel): glibc's resolver cannot be
 * interrupted, so a lookup that outlives its fetch finishes alone.
 */
#ifndef RS_FETCH_H
#define RS_FETCH_H

#include <netdb.h>
#include <apr_pools.h>
#include <apr_time.h>

#include "rs_ocsp.h"
#include "rs_sched.h"

typedef int rs_cancel_fn(void *baton);
/* getaddrinfo's contract; called on the resolver thread (tests inject one) */
typedef int rs_resolve_fn(const char *host, const char *port, const struct addrinfo *hints,
                          struct addrinfo **res);

typedef struct {
    const char *url;               /* http://host[:port]/path */
    const char *proxy;             /* http://host:port, or NULL */
    rs_method_e method;            /* RS_METHOD_GET: RFC 5019 GET; POST otherwise */
    apr_interval_time_t timeout;   /* total: resolve + connect + send + receive */
    apr_size_t max_len;            /* response body cap */
    rs_cancel_fn *cancelled;       /* polled while waiting; may be NULL */
    void *baton;
    rs_resolve_fn *resolve;        /* NULL: getaddrinfo */
} rs_fetch_opts_t;

/* An HTTP answer that is not a 200 OCSP response (status, content type,
 * redirect): the responder's fault, not the network's. */
#define RS_FETCH_EHTTP (APR_OS_START_USERERR + 513)

/* Send the DER request (GET: appended to the URL, see rs_fetch_get_url;
 * POST: as the body); on APR_SUCCESS *pbody holds the response body
 * (allocated from p). On failure err holds one sentence naming the cause,
 * printable ASCII only (whatever the responder sent): APR_TIMEUP
 * (deadline), APR_ECONNREFUSED-like socket errors, RS_FETCH_EHTTP,
 * APR_EGENERAL (size, framing), APR_EINTR (cancelled). */
apr_status_t rs_fetch(apr_pool_t *p, const rs_fetch_opts_t *opts,
                      const unsigned char *req, apr_size_t req_len,
                      unsigned char **pbody, apr_size_t *plen,
                      char *err, apr_size_t errlen);

/* RFC 5019 section 5 / RFC 6960 appendix A.1: the URL of a GET for this
 * request (the responder URL, '/', the URL-encoded base64 of the DER), or
 * NULL when it is 255 bytes or longer (then the request goes by POST). */
#define RS_GET_MAX_URL 255
const char *rs_fetch_get_url(apr_pool_t *p, const char *url, const unsigned char *req,
                             apr_size_t req_len);

/* Which methods a round uses (ResilientStaplingMethod). */
typedef enum { RS_FETCH_AUTO = 0, RS_FETCH_GET_ONLY, RS_FETCH_POST_ONLY } rs_fetch_mode_e;

/* One attempt of a round, judged. */
typedef struct {
    rs_method_e method;
    rs_result_e result;
    rs_ocsp_result_t res;     /* verdict RS_VERDICT_TRANSPORT/HTTP/NOT_NEWER set here */
    unsigned char *body;      /* the response (from p), NULL if none */
    apr_size_t len;
    apr_interval_time_t took;
} rs_attempt_t;

/* What a round needs to know about the response already held. */
typedef struct {
    const rs_cert_t *cert;
    const unsigned char *req;
    apr_size_t req_len;
    apr_time_t held_this, held_next;  /* the held response, 0 if none */
    apr_interval_time_t skew;
    apr_time_t deadline;              /* 0, or no attempt lasts past it */
} rs_round_t;

/* A round: GET when allowed and the URL fits, then, if that attempt did
 * not bring a verified response newer than the held one, at once by POST.
 * Fills up to two attempts (the last one decides); returns how many, 0 if
 * cancelled (nothing is to be recorded then). opts->method is ignored. */
int rs_fetch_round(apr_pool_t *p, const rs_fetch_opts_t *opts, rs_fetch_mode_e mode,
                   const rs_round_t *round, rs_attempt_t attempts[2]);

/* The verdict of an attempt's transport outcome (TRANSPORT or HTTP). */
rs_verdict_e rs_fetch_verdict(apr_status_t rv);

#endif
