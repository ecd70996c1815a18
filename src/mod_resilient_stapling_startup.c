/* mod_resilient_stapling_startup.c: certificates new to this generation
 * are fetched before its children serve them.
 *
 * post_config runs in the parent before any child of the new generation
 * exists. Certificates that came without a valid response (none stored:
 * a new certificate, one replaced at a reload) are fetched there, all in
 * parallel within ResilientStaplingMaxFetches, waiting at most
 * ResilientStaplingStartupWait. The fetching is done by a helper process
 * forked for it, as the children's user: the parent keeps no thread and no
 * socket a child could inherit, and a helper still waiting on a responder
 * (or a resolver) when the bound is reached is simply killed. The helper
 * hands each round back over a pipe; the parent verifies the response again
 * and installs it in the shared cache and state as a restore does. No
 * handshake waits on it: the new generation's children start after it.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>
#include <sys/wait.h>

#include <apr_strings.h>
#include <httpd.h>
#include <http_log.h>
#include <mod_unixd.h>
#include <unixd.h>

#include "mod_resilient_stapling.h"
#include "rs_store.h"

APLOG_USE_MODULE(resilient_stapling);

/* A certificate whose last attempt failed less than this long ago is not
 * fetched before serving: its responder is known to be failing. */
#define RECENT_FAILURE apr_time_from_sec(600)
/* The helper starts no round this close to the bound and ends every fetch
 * by then, so that what it started is reported, not killed in flight (a
 * request the responder saw but nobody recorded would be made again). */
#define HELPER_MARGIN apr_time_from_msec(250)
/* What the helper fetched before the bound is installed even when the
 * parent has not read it by then: a round the responder answered and nobody
 * installed is made again by the children. The parent verifies and records
 * slower than eight fetches arrive on a loaded machine (t/12 saw 1,014
 * rounds for 1,000 certificates under two CPU hogs), so it goes on reading
 * until the helper's EOF, this long at most after the bound. */
#define HANDOVER_BOUND apr_time_from_sec(1)

/* One round as the helper reports it; the response follows (body_len bytes). */
typedef struct {
    apr_int32_t index;
    apr_int32_t n;
    struct {
        apr_int32_t method, result, verdict, resp_status;
        apr_int64_t took;
        char detail[sizeof(((rs_ocsp_result_t *)0)->detail)];
    } a[2];
    apr_uint32_t body_len;
} wire_t;

typedef struct {
    rs_registry_t *reg;
    int *todo;            /* entry indexes */
    int ntodo;
    int next;             /* the next of todo to fetch; lock */
    int fd;               /* the pipe to the parent; lock while writing */
    apr_time_t deadline;  /* no round starts after it, none lasts past it */
    pthread_mutex_t lock;
} helper_t;

/* All of len bytes through fd: written (deadline 0: blocking), or read
 * before the deadline. 0, or -1 (EOF, error, late). */
static int transfer(int fd, void *buf, size_t len, int writing, apr_time_t deadline)
{
    char *p = buf;
    while (len > 0) {
        ssize_t n;
        if (!writing) {
            apr_interval_time_t left = deadline - apr_time_now();
            struct pollfd pfd = {fd, POLLIN, 0};
            int rc = left > 0 ? poll(&pfd, 1, (int)(apr_time_as_msec(left) + 1)) : 0;
            if (rc < 0 && errno == EINTR)
                continue;
            if (rc <= 0)
                return -1;
        }
        n = writing ? write(fd, p, len) : read(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static void *helper_thread(void *data)
{
    helper_t *h = data;
    apr_pool_t *p;

    apr_pool_create(&p, NULL);
    for (;;) {
        rs_entry_t *e;
        rs_fetch_opts_t opts;
        rs_round_t round;
        rs_attempt_t at[2];
        wire_t w;
        int i, k;

        apr_interval_time_t left = h->deadline - apr_time_now();

        pthread_mutex_lock(&h->lock);
        i = h->next < h->ntodo && left > 0 ? h->todo[h->next++] : -1;
        pthread_mutex_unlock(&h->lock);
        if (i < 0)
            break;
        apr_pool_clear(p);
        e = APR_ARRAY_IDX(h->reg->entries, i, rs_entry_t *);
        memset(&opts, 0, sizeof(opts));
        opts.url = e->url;
        opts.proxy = h->reg->proxy;
        opts.timeout = h->reg->timeout;
        opts.max_len = RS_MAX_RESPONSE_LEN;
        memset(&round, 0, sizeof(round));
        round.cert = e->cert;
        round.req = e->req_der;
        round.req_len = e->req_len;
        round.skew = h->reg->skew;
        round.deadline = h->deadline;
        memset(&w, 0, sizeof(w));
        w.index = i;
        w.n = rs_fetch_round(p, &opts, h->reg->method, &round, at);
        for (k = 0; k < w.n; k++) {
            w.a[k].method = at[k].method;
            w.a[k].result = at[k].result;
            w.a[k].verdict = at[k].res.verdict;
            w.a[k].resp_status = at[k].res.resp_status;
            w.a[k].took = at[k].took;
            apr_cpystrn(w.a[k].detail, at[k].res.detail, sizeof(w.a[k].detail));
        }
        k = w.n - 1;
        if (w.n > 0 && at[k].result == RS_RESULT_OK) {
            w.body_len = (apr_uint32_t)at[k].len;
            /* the children read the store when the cache cannot hold it:
             * written here, as their user */
            if (h->reg->store_dir)
                rs_store_save(h->reg->store_dir, e->cert->id, RS_STORE_RESPONSE, at[k].body,
                              at[k].len, p);
        }
        pthread_mutex_lock(&h->lock);
        if (transfer(h->fd, &w, sizeof(w), 1, 0) == 0 && w.body_len)
            transfer(h->fd, at[k].body, w.body_len, 1, 0);
        pthread_mutex_unlock(&h->lock);
    }
    apr_pool_destroy(p);
    return NULL;
}

/* The helper process: never returns. */
static void helper_main(rs_registry_t *reg, int *todo, int ntodo, int fd, apr_time_t deadline)
{
    helper_t h;
    pthread_t th[RS_MAX_SLOTS];
    int i, nthreads = ntodo < reg->max_fetches ? ntodo : reg->max_fetches;

    signal(SIGPIPE, SIG_IGN);
    signal(SIGTERM, SIG_DFL);
    signal(SIGHUP, SIG_DFL);
    signal(SIGUSR1, SIG_DFL);
    /* as the children run: no network I/O as root */
    if (ap_unixd_setup_child() != OK)
        _exit(1);
    memset(&h, 0, sizeof(h));
    h.reg = reg;
    h.todo = todo;
    h.ntodo = ntodo;
    h.fd = fd;
    h.deadline = deadline;
    pthread_mutex_init(&h.lock, NULL);
    if (nthreads > RS_MAX_SLOTS)
        nthreads = RS_MAX_SLOTS;
    for (i = 0; i < nthreads; i++)
        if (pthread_create(&th[i], NULL, helper_thread, &h) != 0)
            break;
    nthreads = i;
    if (nthreads == 0)
        helper_thread(&h);
    for (i = 0; i < nthreads; i++)
        pthread_join(th[i], NULL);
    _exit(0); /* no pool cleanups: they belong to the parent */
}

/* A round's result, offered as a child's fetch is (rs_shared_offer). 1 if
 * a response is now held. */
static int install(rs_registry_t *reg, server_rec *s, const wire_t *w, unsigned char *body,
                   apr_pool_t *p)
{
    rs_entry_t *e = APR_ARRAY_IDX(reg->entries, w->index, rs_entry_t *);
    rs_attempt_t at[2];
    rs_offer_t o;
    rs_outcome_t out;
    int k, last = w->n - 1;

    memset(at, 0, sizeof(at));
    for (k = 0; k < w->n; k++) {
        at[k].method = (rs_method_e)w->a[k].method;
        at[k].result = (rs_result_e)w->a[k].result;
        at[k].took = w->a[k].took;
        at[k].res.verdict = (rs_verdict_e)w->a[k].verdict;
        at[k].res.resp_status = w->a[k].resp_status;
        apr_cpystrn(at[k].res.detail, w->a[k].detail, sizeof(at[k].res.detail));
    }
    memset(&o, 0, sizeof(o));
    o.origin = RS_ORIGIN_STARTUP;
    o.index = e->index;
    o.slot = -1;
    o.now = apr_time_now();
    o.jitter = 0.0; /* the children spread the renewals of what they fetch */
    o.res = at[last].res;
    o.attempts = at;
    o.nattempts = w->n;
    if (body) {
        /* nothing is trusted for having crossed a pipe */
        rs_ocsp_check(e->cert, body, w->body_len, o.now, reg->skew, &o.res);
        if (rs_verdict_is_valid(o.res.verdict)) {
            o.der = body;
            o.len = w->body_len;
            at[last].res = o.res;
        }
    }
    if (rs_shared_offer(reg->shared, &o, &out) != APR_SUCCESS)
        return 0;
    if (out.no_room)
        ap_log_error(APLOG_MARK, APLOG_ERR, 0, s,
                     "RS0204: the response for %s (%" APR_SIZE_T_FMT " bytes) does not fit in "
                     "the %s: not stapled", e->cert->subject, o.len, reg->cache_desc);
    /* read back by the parent only (the children replace it by rename) */
    rs_store_write_state(reg, s, e, &out.st, p);
    for (k = 0; k < w->n; k++)
        rs_log_attempt(s, e, &at[k], k == last, &out.st,
                       out.installed ? out.st.resp_next_update : 0, " (before serving it)",
                       o.now, p);
    return out.installed;
}

void rs_startup_fetch(rs_registry_t *reg, server_rec *s, apr_pool_t *ptemp)
{
    apr_time_t start = apr_time_now(), deadline = start + reg->startup_wait;
    int *todo = apr_palloc(ptemp, sizeof(int) * (apr_size_t)reg->entries->nelts);
    int i, ntodo = 0, fds[2], status, got = 0, held = 0;
    pid_t pid;

    /* a fleet shares new responses (one fetch per certificate for all its
     * servers), and the parent never talks to the fleet cache */
    if (reg->startup_wait <= 0 || reg->fleet)
        return;
    for (i = 0; i < reg->entries->nelts; i++) {
        rs_entry_t *e = APR_ARRAY_IDX(reg->entries, i, rs_entry_t *);
        rs_state_t st;
        rs_shared_read(reg->shared, e->index, &st);
        /* one that failed lately is left to the children's backoff: a
         * responder that is down must not hold up every reload */
        if (st.resp_next_update <= start
            && !(st.failures && st.last_attempt > start - RECENT_FAILURE))
            todo[ntodo++] = i;
    }
    if (ntodo == 0)
        return; /* every certificate has a valid response: no wait at all */
    if (pipe(fds) != 0) {
        ap_log_error(APLOG_MARK, APLOG_WARNING, APR_FROM_OS_ERROR(errno), s,
                     "RS0017: cannot fetch new certificates before serving them (pipe)");
        return;
    }
    pid = fork();
    if (pid < 0) {
        ap_log_error(APLOG_MARK, APLOG_WARNING, APR_FROM_OS_ERROR(errno), s,
                     "RS0017: cannot fetch new certificates before serving them (fork)");
        close(fds[0]);
        close(fds[1]);
        return;
    }
    if (pid == 0) {
        close(fds[0]);
        helper_main(reg, todo, ntodo, fds[1], deadline - HELPER_MARGIN);
    }
    close(fds[1]);
    while (got < ntodo) {
        wire_t w;
        unsigned char *body = NULL;
        if (transfer(fds[0], &w, sizeof(w), 0, deadline + HANDOVER_BOUND) != 0)
            break;
        if (w.index < 0 || w.index >= reg->entries->nelts || w.n < 1 || w.n > 2
            || w.body_len > RS_MAX_RESPONSE_LEN)
            break;
        if (w.body_len) {
            body = apr_palloc(ptemp, w.body_len);
            if (transfer(fds[0], body, w.body_len, 0, deadline + HANDOVER_BOUND) != 0)
                break;
        }
        got++;
        held += install(reg, s, &w, body, ptemp);
    }
    close(fds[0]);
    /* what is still in flight is not waited for */
    kill(pid, SIGKILL);
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    ap_log_error(APLOG_MARK, held == ntodo ? APLOG_INFO : APLOG_NOTICE, 0, s,
                 "RS0016: %d certificate(s) without a valid response: %d stapled before "
                 "serving them, %d answered otherwise, %d still fetching when the %ld s "
                 "bound (ResilientStaplingStartupWait) was reached; took %ld ms",
                 ntodo, held, got - held, ntodo - got, (long)apr_time_sec(reg->startup_wait),
                 (long)apr_time_as_msec(apr_time_now() - start));
}
