/* rs_fetch_round.c: one round of a certificate's fetch (see rs_fetch.h):
 * RFC 5019 GET first (CDNs cache it), POST at once when the GET brought
 * nothing verified and newer, each attempt judged by rs_ocsp_check. */
#include <string.h>

#include <apr_strings.h>

#include "rs_fetch.h"

rs_verdict_e rs_fetch_verdict(apr_status_t rv)
{
    return rv == RS_FETCH_EHTTP ? RS_VERDICT_HTTP : RS_VERDICT_TRANSPORT;
}


static void judge(rs_attempt_t *a, const rs_round_t *round, apr_status_t rv, const char *err)
{
    apr_time_t now = apr_time_now();
    int newer = 0;

    if (rv != APR_SUCCESS) {
        memset(&a->res, 0, sizeof(a->res));
        a->res.verdict = rs_fetch_verdict(rv);
        a->res.resp_status = a->res.cert_status = a->res.revocation_reason = -1;
        apr_cpystrn(a->res.detail, err, sizeof(a->res.detail));
    }
    else {
        rs_ocsp_check(round->cert, a->body, a->len, now, round->skew, &a->res);
        if (rs_verdict_is_valid(a->res.verdict)) {
            newer = rs_sched_should_replace(round->held_this, round->held_next,
                                            a->res.this_update, a->res.next_update, now);
            if (!newer) {
                a->res.verdict = RS_VERDICT_NOT_NEWER;
                apr_snprintf(a->res.detail, sizeof(a->res.detail),
                             "verified, but not newer than the response held (thisUpdate %"
                             APR_TIME_T_FMT ", held %" APR_TIME_T_FMT ")",
                             apr_time_sec(a->res.this_update), apr_time_sec(round->held_this));
            }
        }
    }
    a->result = rs_result_of(&a->res, newer);
}

int rs_fetch_round(apr_pool_t *p, const rs_fetch_opts_t *opts, rs_fetch_mode_e mode,
                   const rs_round_t *round, rs_attempt_t attempts[2])
{
    rs_method_e methods[2];
    int n = 0, i, done = 0;

    if (mode != RS_FETCH_POST_ONLY
        && rs_fetch_get_url(p, opts->url, round->req, round->req_len))
        methods[n++] = RS_METHOD_GET;
    if (mode != RS_FETCH_GET_ONLY || n == 0)
        methods[n++] = RS_METHOD_POST;
    for (i = 0; i < n; i++) {
        rs_fetch_opts_t o = *opts;
        rs_attempt_t *a = &attempts[done];
        char err[sizeof(a->res.detail)];
        apr_time_t start = apr_time_now();
        apr_status_t rv;

        o.method = methods[i];
        if (round->deadline) {
            if (round->deadline <= start)
                break;
            if (o.timeout > round->deadline - start)
                o.timeout = round->deadline - start;
        }
        memset(a, 0, sizeof(*a));
        a->method = methods[i];
        rv = rs_fetch(p, &o, round->req, round->req_len, &a->body, &a->len, err,
                      sizeof(err));
        if (rv == APR_EINTR)
            break; /* stopping: not an attempt to count */
        a->took = apr_time_now() - start;
        judge(a, round, rv, err);
        done++;
        if (a->result == RS_RESULT_OK)
            break;
    }
    return done;
}
