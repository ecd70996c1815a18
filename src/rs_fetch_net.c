/* rs_fetch_net.c: the deadline of one fetch, and its connection: name
 * resolution on a thread of its own (glibc's resolver cannot be
 * interrupted, so a lookup that outlives its fetch finishes alone) and a
 * non-blocking connect, each polled in slices so that a stopping child is
 * never held up (see rs_fetch.h). */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <apr_strings.h>

#include "rs_fetch_net.h"

/* How often a wait looks at the cancel flag: child shutdown latency. */
#define POLL_SLICE_MS 100

/* The deadline or the cancel: APR_SUCCESS while neither. */
apr_status_t rs_fetch_check_bounds(rs_fetch_ctx_t *f, const char *phase)
{
    if (f->opts->cancelled && f->opts->cancelled(f->opts->baton)) {
        apr_snprintf(f->err, f->errlen, "%s: cancelled (shutting down)", phase);
        return APR_EINTR;
    }
    if (apr_time_now() >= f->deadline) {
        apr_snprintf(f->err, f->errlen, "%s: timed out after %" APR_TIME_T_FMT " ms",
                     phase, apr_time_as_msec(f->opts->timeout));
        return APR_TIMEUP;
    }
    return APR_SUCCESS;
}

/* The slice of the deadline a wait may take, in ms (at least 1). */
int rs_fetch_slice_ms(rs_fetch_ctx_t *f)
{
    apr_interval_time_t left = f->deadline - apr_time_now();
    int ms = left > 0 ? (int)apr_time_as_msec(left) : 0;
    if (ms > POLL_SLICE_MS)
        ms = POLL_SLICE_MS;
    return ms < 1 ? 1 : ms;
}

/* Wait until the socket is ready, the deadline passes or we are cancelled. */
apr_status_t rs_fetch_wait_fd(rs_fetch_ctx_t *f, int fd, int for_write, const char *phase)
{
    for (;;) {
        struct pollfd pfd;
        apr_status_t rv;
        int rc;

        if ((rv = rs_fetch_check_bounds(f, phase)) != APR_SUCCESS)
            return rv;
        pfd.fd = fd;
        pfd.events = for_write ? POLLOUT : POLLIN;
        pfd.revents = 0;
        rc = poll(&pfd, 1, rs_fetch_slice_ms(f));
        if (rc > 0)
            return APR_SUCCESS;
        if (rc < 0 && errno != EINTR) {
            apr_snprintf(f->err, f->errlen, "%s: poll: %s", phase, strerror(errno));
            return APR_FROM_OS_ERROR(errno);
        }
    }
}


/* --- name resolution on a thread the fetch does not wait for past its
 * deadline: the last of the two (fetch, thread) to let go frees it --- */

typedef struct {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int refs, done, rc;
    struct addrinfo hints;
    struct addrinfo *res;
    rs_resolve_fn *fn;
    char *host, *port;
} lookup_t;

static void lookup_release(lookup_t *l) /* called with l->lock held */
{
    int last = --l->refs == 0;
    pthread_mutex_unlock(&l->lock);
    if (!last)
        return;
    if (l->res)
        freeaddrinfo(l->res);
    pthread_cond_destroy(&l->cond);
    pthread_mutex_destroy(&l->lock);
    free(l);
}

static void *lookup_main(void *data)
{
    lookup_t *l = data;
    struct addrinfo *res = NULL;
    int rc = l->fn(l->host, l->port, &l->hints, &res);

    pthread_mutex_lock(&l->lock);
    l->rc = rc;
    l->res = rc == 0 ? res : NULL;
    l->done = 1;
    pthread_cond_signal(&l->cond);
    lookup_release(l);
    return NULL;
}

static int default_resolve(const char *host, const char *port, const struct addrinfo *hints,
                           struct addrinfo **res)
{
    return getaddrinfo(host, port, hints, res);
}

static apr_status_t resolve(rs_fetch_ctx_t *f, const char *host, const char *port,
                            struct addrinfo **pres)
{
    struct addrinfo hints;
    unsigned char addr[sizeof(struct in6_addr)];
    size_t hl = strlen(host), pl = strlen(port);
    lookup_t *l;
    pthread_t th;
    pthread_attr_t attr;
    apr_status_t rv = APR_SUCCESS;
    int rc;

    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    *pres = NULL;
    /* an address needs no resolver, and no thread */
    if (inet_pton(AF_INET, host, addr) == 1 || inet_pton(AF_INET6, host, addr) == 1) {
        hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
        rc = getaddrinfo(host, port, &hints, pres);
        if (rc != 0) {
            apr_snprintf(f->err, f->errlen, "cannot connect to %s:%s: %s", host, port,
                         gai_strerror(rc));
            return APR_EGENERAL;
        }
        return APR_SUCCESS;
    }
    l = calloc(1, sizeof(*l) + hl + pl + 2);
    if (!l)
        return APR_ENOMEM;
    l->host = (char *)(l + 1);
    l->port = l->host + hl + 1;
    memcpy(l->host, host, hl + 1);
    memcpy(l->port, port, pl + 1);
    l->hints = hints;
    l->fn = f->opts->resolve ? f->opts->resolve : default_resolve;
    l->refs = 2;
    pthread_mutex_init(&l->lock, NULL);
    pthread_cond_init(&l->cond, NULL);
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    rc = pthread_create(&th, &attr, lookup_main, l);
    pthread_attr_destroy(&attr);
    pthread_mutex_lock(&l->lock);
    if (rc != 0) {
        l->refs = 1;
        apr_snprintf(f->err, f->errlen, "resolve %s: cannot start a thread", host);
        lookup_release(l);
        return APR_FROM_OS_ERROR(rc);
    }
    while (!l->done) {
        struct timespec ts;
        apr_time_t until;

        pthread_mutex_unlock(&l->lock);
        rv = rs_fetch_check_bounds(f, apr_psprintf(f->pool, "resolving %s", host));
        pthread_mutex_lock(&l->lock);
        if (rv != APR_SUCCESS || l->done)
            break;
        until = apr_time_now() + apr_time_from_msec(rs_fetch_slice_ms(f));
        ts.tv_sec = (time_t)apr_time_sec(until);
        ts.tv_nsec = (long)apr_time_usec(until) * 1000;
        pthread_cond_timedwait(&l->cond, &l->lock, &ts);
    }
    if (l->done) {
        rv = APR_SUCCESS;
        if (l->rc != 0) {
            apr_snprintf(f->err, f->errlen, "cannot connect to %s:%s: %s", host, port,
                         gai_strerror(l->rc));
            rv = APR_EGENERAL;
        }
        *pres = l->res;
        l->res = NULL;
    }
    lookup_release(l);
    return rv;
}

/* Connect to the first address that takes it, within the deadline. */
apr_status_t rs_fetch_connect(rs_fetch_ctx_t *f, const char *host, const char *port, int *pfd)
{
    struct addrinfo *res = NULL, *ai;
    apr_status_t rv;
    int fd = -1, soerr = ECONNREFUSED;

    *pfd = -1;
    if ((rv = resolve(f, host, port, &res)) != APR_SUCCESS)
        return rv;
    for (ai = res; ai && fd < 0 && rv == APR_SUCCESS; ai = ai->ai_next) {
        socklen_t sl = sizeof(soerr);
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                    ai->ai_protocol);
        if (fd < 0) {
            soerr = errno;
            continue;
        }
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
            continue; /* connected */
        soerr = errno;
        if (soerr == EINPROGRESS && (rv = rs_fetch_wait_fd(f, fd, 1, "connect")) == APR_SUCCESS
            && getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) == 0 && soerr == 0)
            continue; /* connected */
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd >= 0) {
        *pfd = fd;
        return APR_SUCCESS;
    }
    if (rv != APR_SUCCESS)
        return rv;
    apr_snprintf(f->err, f->errlen, "cannot connect to %s:%s: %s", host, port,
                 strerror(soerr));
    return APR_ECONNREFUSED;
}

/* [::1] -> ::1: an IPv6 literal without its brackets, for the resolver */
