/* Unit tests: the HTTP fetch is bounded in time and size, cancellable, and
 * speaks plain OCSP-over-HTTP (RFC 6960 appendix A) directly or via a proxy.
 * A small HTTP server thread on 127.0.0.1 plays the responder. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <errno.h>
#include <pthread.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <resolv.h>
#include <cmocka.h>

#include <apr_general.h>
#include <apr_strings.h>
#include <apr_thread_proc.h>

#include "rs_fetch.h"
#include "rs_ocsp.h"
#include "testpki.h"

static apr_pool_t *pool;
static tpki_t *pki;
static rs_cert_t *cert;
static unsigned char *req_der, *good_der;
static apr_size_t req_len;
static int good_len;
static int listen_fd, port;
static volatile int stopping;
static char last_request[4096];
static apr_thread_t *server;
static apr_time_t cancel_at;
static int cancel_after(void *baton);

static int send_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n <= 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* the client hung up (it gave up, as it must) */
static int client_gone(int fd)
{
    char c;
    ssize_t n = recv(fd, &c, 1, MSG_DONTWAIT | MSG_PEEK);
    return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK);
}

static void serve(int fd)
{
    char head[512];
    size_t got = 0;
    ssize_t n;
    char *end = NULL;

    last_request[0] = '\0';
    while (got < sizeof(last_request) - 1 && !(end = strstr(last_request, "\r\n\r\n"))) {
        n = recv(fd, last_request + got, sizeof(last_request) - 1 - got, 0);
        if (n <= 0)
            return;
        got += (size_t)n;
        last_request[got] = '\0';
    }
    if (strstr(last_request, " /good ") || strstr(last_request, "/proxied ")
        || strstr(last_request, "GET /good/") || strstr(last_request, "POST /postonly ")) {
        snprintf(head, sizeof(head), "HTTP/1.0 200 OK\r\nContent-Type: application/ocsp-response"
                 "\r\nContent-Length: %d\r\n\r\n", good_len);
        send_all(fd, head, strlen(head));
        send_all(fd, good_der, (size_t)good_len);
    }
    else if (strstr(last_request, " /ctparam")) {
        /* parameters in a media type are legal (RFC 9110 8.3.1) */
        snprintf(head, sizeof(head), "HTTP/1.0 200 OK\r\nContent-Type: application/ocsp-response;"
                 " charset=binary\r\nContent-Length: %d\r\n\r\n", good_len);
        send_all(fd, head, strlen(head));
        send_all(fd, good_der, (size_t)good_len);
    }
    else if (strstr(last_request, " /flood ") || strstr(last_request, " /slowflood ")) {
        /* headers without end, as fast as the client reads, or one every 10 ms */
        const char *r = "HTTP/1.0 200 OK\r\n";
        const char *line = "X-Flood: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n";
        int slow = strstr(last_request, " /slowflood ") != NULL;
        send_all(fd, r, strlen(r));
        while (!stopping && !send_all(fd, line, strlen(line)))
            if (slow)
                usleep(10000);
    }
    else if (strstr(last_request, " /evil ")) {
        /* a reason phrase of control characters, quotes and invalid UTF-8 */
        const char *r = "HTTP/1.0 503 \"}\x01\x1b[31m\xff\xfe\\\r\nContent-Length: 0\r\n\r\n";
        send_all(fd, r, strlen(r));
    }
    else if (strstr(last_request, "GET /postonly/")) {
        const char *r = "HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n";
        send_all(fd, r, strlen(r));
    }
    else if (strstr(last_request, " /500 ")) {
        const char *r = "HTTP/1.0 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n";
        send_all(fd, r, strlen(r));
    }
    else if (strstr(last_request, " /big ")) {
        /* a well-formed DER header announcing 16 MB, then filler */
        static unsigned char chunk[65536];
        const char *r = "HTTP/1.0 200 OK\r\nContent-Type: application/ocsp-response\r\n\r\n";
        int i;
        send_all(fd, r, strlen(r));
        chunk[0] = 0x30; chunk[1] = 0x84; chunk[2] = 0x01; chunk[3] = 0x00;
        chunk[4] = 0x00; chunk[5] = 0x00;
        for (i = 0; i < 256 && !stopping; i++)
            if (send_all(fd, chunk, sizeof(chunk)))
                break;
    }
    else if (strstr(last_request, " /trickle ")) {
        const char *r = "HTTP/1.0 200 OK\r\nContent-Type: application/ocsp-response\r\n\r\n";
        int i;
        send_all(fd, r, strlen(r));
        for (i = 0; i < good_len && !stopping; i++) {
            if (send_all(fd, good_der + i, 1))
                break;
            usleep(200000);
        }
    }
    else { /* /hang: read the request, never answer */
        char body[4096];
        while (recv(fd, body, sizeof(body), MSG_DONTWAIT) > 0)
            ;
        while (!stopping && !client_gone(fd))
            usleep(20000);
    }
}

static void *connection_main(void *data)
{
    int fd = (int)(intptr_t)data;
    serve(fd);
    close(fd);
    return NULL;
}

/* One thread per connection: a slow fault must not delay the next test. */
static void *APR_THREAD_FUNC server_main(apr_thread_t *t, void *data)
{
    (void)data;
    while (!stopping) {
        pthread_t th;
        int fd = accept(listen_fd, NULL, NULL);
        if (fd < 0)
            break;
        if (pthread_create(&th, NULL, connection_main, (void *)(intptr_t)fd) == 0)
            pthread_detach(th);
        else
            close(fd);
    }
    apr_thread_exit(t, APR_SUCCESS);
    return NULL;
}

static int setup(void **state)
{
    struct sockaddr_in sa;
    socklen_t sl = sizeof(sa);
    char err[256];
    tp_resp_t o = {.this_off = -10, .next_off = 3600};
    (void)state;

    apr_initialize();
    apr_pool_create(&pool, NULL);
    pki = tpki_new();
    rs_cert_make(&cert, pool, pki->leaf, pki->ca, err, sizeof(err));
    rs_ocsp_request_der(cert, pool, &req_der, &req_len);
    good_der = tpki_response(pki, &o, &good_len);

    listen_fd = socket(AF_INET, SOCK_STREAM, 0);
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(listen_fd, (struct sockaddr *)&sa, sizeof(sa)) || listen(listen_fd, 8))
        return -1;
    getsockname(listen_fd, (struct sockaddr *)&sa, &sl);
    port = ntohs(sa.sin_port);
    return apr_thread_create(&server, NULL, server_main, NULL, pool) == APR_SUCCESS ? 0 : -1;
}

static int teardown(void **state)
{
    apr_status_t rv;
    (void)state;
    stopping = 1;
    shutdown(listen_fd, SHUT_RDWR);
    close(listen_fd);
    apr_thread_join(&rv, server);
    OPENSSL_free(good_der);
    apr_pool_destroy(pool);
    tpki_free(pki);
    apr_terminate();
    return 0;
}

static rs_fetch_opts_t opts_for(const char *path, apr_interval_time_t timeout)
{
    rs_fetch_opts_t o;
    memset(&o, 0, sizeof(o));
    o.url = apr_psprintf(pool, "http://127.0.0.1:%d%s", port, path);
    o.timeout = timeout;
    o.max_len = RS_MAX_RESPONSE_LEN;
    return o;
}

static apr_status_t fetch(const rs_fetch_opts_t *o, unsigned char **body, apr_size_t *len,
                          char *err)
{
    return rs_fetch(pool, o, req_der, req_len, body, len, err, 256);
}

static void test_good(void **state)
{
    rs_fetch_opts_t o = opts_for("/good", apr_time_from_sec(5));
    unsigned char *body;
    apr_size_t len;
    char err[256];
    (void)state;
    assert_int_equal(fetch(&o, &body, &len, err), APR_SUCCESS);
    assert_int_equal(len, (apr_size_t)good_len);
    assert_memory_equal(body, good_der, len);
    assert_non_null(strstr(last_request, "POST /good HTTP/1."));
    assert_non_null(strstr(last_request, "Content-Type: application/ocsp-request"));
    assert_non_null(strstr(last_request, apr_psprintf(pool, "Host: 127.0.0.1:%d", port)));
}

static void test_http_error(void **state)
{
    rs_fetch_opts_t o = opts_for("/500", apr_time_from_sec(5));
    unsigned char *body;
    apr_size_t len;
    char err[256];
    (void)state;
    /* an HTTP answer, not a transport failure */
    assert_int_equal(fetch(&o, &body, &len, err), RS_FETCH_EHTTP);
    assert_int_equal(rs_fetch_verdict(RS_FETCH_EHTTP), RS_VERDICT_HTTP);
    assert_non_null(strstr(err, "500"));
}

static void test_get(void **state)
{
    rs_fetch_opts_t o = opts_for("/good", apr_time_from_sec(5));
    const char *u = rs_fetch_get_url(pool, o.url, req_der, req_len);
    unsigned char *body;
    apr_size_t len;
    char err[256];
    (void)state;
    /* RFC 6960 A.1: url '/' url-encoded base64 of the DER; RFC 5019: < 255 bytes */
    assert_non_null(u);
    assert_true(strlen(u) < 255);
    assert_int_equal(strncmp(u, o.url, strlen(o.url)), 0);
    assert_int_equal(u[strlen(o.url)], '/');
    assert_null(strpbrk(u + strlen(o.url), "+="));
    assert_null(strchr(u + strlen(o.url) + 1, '/'));
    o.method = RS_METHOD_GET;
    assert_int_equal(fetch(&o, &body, &len, err), APR_SUCCESS);
    assert_memory_equal(body, good_der, len);
    assert_non_null(strstr(last_request, apr_psprintf(pool, "GET %s HTTP/1.", u + strlen(o.url) - 5)));
    assert_null(strstr(last_request, "Content-Type"));
    /* a URL ending in '/' gets no second one */
    u = rs_fetch_get_url(pool, "http://ocsp.example/", req_der, req_len);
    assert_int_equal(strncmp(u, "http://ocsp.example/M", 21), 0);
    /* too long for a GET: NULL (the round sends it by POST) */
    assert_null(rs_fetch_get_url(pool, apr_psprintf(pool, "http://ocsp.example/%0200d", 0),
                                 req_der, req_len));
}

static void test_content_type_parameters(void **state)
{
    rs_fetch_opts_t o = opts_for("/ctparam", apr_time_from_sec(5));
    unsigned char *body;
    apr_size_t len;
    char err[256];
    (void)state;
    assert_int_equal(fetch(&o, &body, &len, err), APR_SUCCESS);
    assert_memory_equal(body, good_der, len);
}

static void test_header_flood_keeps_deadline(void **state)
{
    rs_fetch_opts_t o = opts_for("/flood", apr_time_from_msec(1000));
    unsigned char *body;
    apr_size_t len;
    char err[256];
    apr_time_t t0 = apr_time_now();
    apr_status_t rv;
    (void)state;
    rv = fetch(&o, &body, &len, err);
    printf("# header flood: %s after %ld ms\n", err, (long)apr_time_as_msec(apr_time_now() - t0));
    assert_int_not_equal(rv, APR_SUCCESS);
    assert_true(apr_time_now() - t0 < apr_time_from_msec(1500));
    /* paced below the header cap within the deadline: the deadline cuts it */
    o = opts_for("/slowflood", apr_time_from_msec(1000));
    t0 = apr_time_now();
    rv = fetch(&o, &body, &len, err);
    printf("# slow header flood: %s after %ld ms\n", err,
           (long)apr_time_as_msec(apr_time_now() - t0));
    assert_int_equal(rv, APR_TIMEUP);
    assert_true(apr_time_now() - t0 < apr_time_from_msec(1500));
}

static void test_responder_bytes_are_escaped(void **state)
{
    rs_fetch_opts_t o = opts_for("/evil", apr_time_from_sec(5));
    unsigned char *body;
    apr_size_t len;
    char err[256];
    const char *c;
    (void)state;
    assert_int_equal(fetch(&o, &body, &len, err), RS_FETCH_EHTTP);
    printf("# %s\n", err);
    for (c = err; *c; c++)
        assert_true(*c >= 0x20 && *c <= 0x7e);
}

/* A DNS server on 127.0.0.1 that reads and never answers; the resolver is
 * glibc's own, pointed at it. */
static int dns_fd = -1, dns_port;
static int stuck_resolve(const char *host, const char *port, const struct addrinfo *hints,
                         struct addrinfo **res)
{
    struct sockaddr_in sa;
    res_init();
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sa.sin_port = htons((unsigned short)dns_port);
    _res.nscount = 1;
    _res.nsaddr_list[0] = sa;
    _res.options &= ~(unsigned long)RES_ROTATE;
    return getaddrinfo(host, port, hints, res);
}

static void test_resolution_keeps_deadline(void **state)
{
    rs_fetch_opts_t o;
    unsigned char *body;
    apr_size_t len;
    char err[256], q[512];
    struct sockaddr_in sa;
    socklen_t sl = sizeof(sa);
    apr_time_t t0, took;
    (void)state;
    dns_fd = socket(AF_INET, SOCK_DGRAM, 0);
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(dns_fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    getsockname(dns_fd, (struct sockaddr *)&sa, &sl);
    dns_port = ntohs(sa.sin_port);
    memset(&o, 0, sizeof(o));
    o.url = "http://ocsp.stuck-dns.example/x";
    o.timeout = apr_time_from_msec(1000);
    o.max_len = RS_MAX_RESPONSE_LEN;
    o.resolve = stuck_resolve;
    t0 = apr_time_now();
    assert_int_equal(fetch(&o, &body, &len, err), APR_TIMEUP);
    took = apr_time_now() - t0;
    printf("# resolver that never answers, 1 s deadline: %s after %ld ms\n", err,
           (long)apr_time_as_msec(took));
    assert_true(took < apr_time_from_msec(1500));
    assert_non_null(strstr(err, "resolving ocsp.stuck-dns.example"));
    /* the query did reach the silent server */
    assert_true(recv(dns_fd, q, sizeof(q), MSG_DONTWAIT) > 0);
    /* and the cancel is as prompt */
    cancel_at = apr_time_now() + apr_time_from_msec(200);
    o.timeout = apr_time_from_sec(30);
    o.cancelled = cancel_after;
    t0 = apr_time_now();
    assert_int_equal(fetch(&o, &body, &len, err), APR_EINTR);
    assert_true(apr_time_now() - t0 < apr_time_from_msec(600));
}

static void test_ipv6_host_header(void **state)
{
    struct sockaddr_in6 sa;
    socklen_t sl = sizeof(sa);
    int fd = socket(AF_INET6, SOCK_STREAM, 0), c;
    rs_fetch_opts_t o;
    unsigned char *body;
    apr_size_t len;
    char err[256];
    (void)state;
    memset(&sa, 0, sizeof(sa));
    sa.sin6_family = AF_INET6;
    sa.sin6_addr = in6addr_loopback;
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) || listen(fd, 1)) {
        if (fd >= 0)
            close(fd);
        skip(); /* no IPv6 here */
    }
    getsockname(fd, (struct sockaddr *)&sa, &sl);
    memset(&o, 0, sizeof(o));
    o.url = apr_psprintf(pool, "http://[::1]:%d/good", ntohs(sa.sin6_port));
    o.timeout = apr_time_from_msec(300);
    o.max_len = RS_MAX_RESPONSE_LEN;
    /* nobody answers: only the request is looked at */
    (void)fetch(&o, &body, &len, err);
    c = accept(fd, NULL, NULL);
    assert_true(c >= 0);
    {
        ssize_t n = recv(c, last_request, sizeof(last_request) - 1, MSG_DONTWAIT);
        last_request[n > 0 ? n : 0] = '\0';
    }
    close(c);
    close(fd);
    assert_non_null(strstr(last_request, apr_psprintf(pool, "Host: [::1]:%d\r\n",
                                                      ntohs(sa.sin6_port))));
}

static void test_round_falls_back_to_post(void **state)
{
    rs_fetch_opts_t o = opts_for("/postonly", apr_time_from_sec(5));
    rs_round_t r = {cert, req_der, req_len, 0, 0, apr_time_from_sec(5), 0};
    rs_attempt_t a[2];
    (void)state;
    assert_int_equal(rs_fetch_round(pool, &o, RS_FETCH_AUTO, &r, a), 2);
    assert_int_equal(a[0].method, RS_METHOD_GET);
    assert_int_equal(a[0].result, RS_RESULT_HTTP);
    assert_int_equal(a[1].method, RS_METHOD_POST);
    assert_int_equal(a[1].result, RS_RESULT_OK);
    /* GET answers: one request */
    o = opts_for("/good", apr_time_from_sec(5));
    assert_int_equal(rs_fetch_round(pool, &o, RS_FETCH_AUTO, &r, a), 1);
    assert_int_equal(a[0].method, RS_METHOD_GET);
    assert_int_equal(a[0].result, RS_RESULT_OK);
    /* the same response as the one held is not a success, by either method */
    r.held_this = a[0].res.this_update;
    r.held_next = a[0].res.next_update;
    assert_int_equal(rs_fetch_round(pool, &o, RS_FETCH_AUTO, &r, a), 2);
    assert_int_equal(a[0].result, RS_RESULT_NOT_NEWER);
    assert_int_equal(a[1].result, RS_RESULT_NOT_NEWER);
    assert_int_equal(a[1].res.verdict, RS_VERDICT_NOT_NEWER);
    /* ResilientStaplingMethod post / get */
    assert_int_equal(rs_fetch_round(pool, &o, RS_FETCH_POST_ONLY, &r, a), 1);
    assert_int_equal(a[0].method, RS_METHOD_POST);
    assert_int_equal(rs_fetch_round(pool, &o, RS_FETCH_GET_ONLY, &r, a), 1);
    assert_int_equal(a[0].method, RS_METHOD_GET);
}

static void test_round_deadline(void **state)
{
    rs_fetch_opts_t o = opts_for("/hang", apr_time_from_sec(5));
    rs_round_t r = {cert, req_der, req_len, 0, 0, apr_time_from_sec(5), 0};
    rs_attempt_t a[2];
    apr_time_t t0 = apr_time_now();
    (void)state;
    /* the GET hangs until the round's deadline; no POST is started after it */
    r.deadline = t0 + apr_time_from_msec(400);
    assert_int_equal(rs_fetch_round(pool, &o, RS_FETCH_AUTO, &r, a), 1);
    assert_int_equal(a[0].result, RS_RESULT_TRANSPORT);
    assert_true(apr_time_now() - t0 < apr_time_from_msec(900));
}

static void test_deadline_holds_when_responder_hangs(void **state)
{
    rs_fetch_opts_t o = opts_for("/hang", apr_time_from_msec(800));
    unsigned char *body;
    apr_size_t len;
    char err[256];
    apr_time_t t0 = apr_time_now(), took;
    (void)state;
    assert_int_equal(fetch(&o, &body, &len, err), APR_TIMEUP);
    took = apr_time_now() - t0;
    assert_true(took >= apr_time_from_msec(750));
    assert_true(took < apr_time_from_msec(1300));
    assert_non_null(strstr(err, "timed out"));
}

static void test_deadline_holds_when_responder_trickles(void **state)
{
    rs_fetch_opts_t o = opts_for("/trickle", apr_time_from_msec(1000));
    unsigned char *body;
    apr_size_t len;
    char err[256];
    apr_time_t t0 = apr_time_now();
    (void)state;
    assert_int_equal(fetch(&o, &body, &len, err), APR_TIMEUP);
    assert_true(apr_time_now() - t0 < apr_time_from_msec(1500));
}

static int cancel_after(void *baton)
{
    (void)baton;
    return apr_time_now() >= cancel_at;
}

static void test_cancel_is_prompt(void **state)
{
    rs_fetch_opts_t o = opts_for("/hang", apr_time_from_sec(30));
    unsigned char *body;
    apr_size_t len;
    char err[256];
    apr_time_t t0 = apr_time_now();
    (void)state;
    cancel_at = t0 + apr_time_from_msec(300);
    o.cancelled = cancel_after;
    assert_int_equal(fetch(&o, &body, &len, err), APR_EINTR);
    /* a stopping child waits at most one poll slice for a fetch in flight */
    assert_true(apr_time_now() - t0 < apr_time_from_msec(600));
}

static void test_size_cap(void **state)
{
    rs_fetch_opts_t o = opts_for("/big", apr_time_from_sec(5));
    unsigned char *body = NULL;
    apr_size_t len = 0;
    char err[256];
    (void)state;
    assert_int_not_equal(fetch(&o, &body, &len, err), APR_SUCCESS);
    assert_null(body);
    assert_true(strlen(err) > 0);
}

static void test_refused(void **state)
{
    rs_fetch_opts_t o;
    unsigned char *body;
    apr_size_t len;
    char err[256];
    struct sockaddr_in sa;
    socklen_t sl = sizeof(sa);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    (void)state;
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bind(fd, (struct sockaddr *)&sa, sizeof(sa));
    getsockname(fd, (struct sockaddr *)&sa, &sl);
    close(fd); /* a port where nothing listens */
    memset(&o, 0, sizeof(o));
    o.url = apr_psprintf(pool, "http://127.0.0.1:%d/x", ntohs(sa.sin_port));
    o.timeout = apr_time_from_sec(5);
    o.max_len = RS_MAX_RESPONSE_LEN;
    assert_int_not_equal(fetch(&o, &body, &len, err), APR_SUCCESS);
    assert_non_null(strstr(err, "127.0.0.1"));
}

static void test_only_http(void **state)
{
    rs_fetch_opts_t o = opts_for("/good", apr_time_from_sec(5));
    unsigned char *body;
    apr_size_t len;
    char err[256];
    (void)state;
    o.url = "https://127.0.0.1:1/ocsp";
    assert_int_equal(fetch(&o, &body, &len, err), APR_ENOTIMPL);
    o.url = "not a url";
    assert_int_not_equal(fetch(&o, &body, &len, err), APR_SUCCESS);
}

static void test_through_proxy(void **state)
{
    rs_fetch_opts_t o;
    unsigned char *body;
    apr_size_t len;
    char err[256];
    (void)state;
    memset(&o, 0, sizeof(o));
    o.url = "http://ocsp.example.invalid/proxied";
    o.proxy = apr_psprintf(pool, "http://127.0.0.1:%d", port);
    o.timeout = apr_time_from_sec(5);
    o.max_len = RS_MAX_RESPONSE_LEN;
    assert_int_equal(fetch(&o, &body, &len, err), APR_SUCCESS);
    /* the proxy gets the absolute URI; the name is resolved by the proxy */
    assert_non_null(strstr(last_request, "POST http://ocsp.example.invalid"));
    assert_non_null(strstr(last_request, "/proxied HTTP/1."));
    assert_non_null(strstr(last_request, "Host: ocsp.example.invalid"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_good),
        cmocka_unit_test(test_http_error),
        cmocka_unit_test(test_deadline_holds_when_responder_hangs),
        cmocka_unit_test(test_deadline_holds_when_responder_trickles),
        cmocka_unit_test(test_cancel_is_prompt),
        cmocka_unit_test(test_size_cap),
        cmocka_unit_test(test_refused),
        cmocka_unit_test(test_only_http),
        cmocka_unit_test(test_through_proxy),
        cmocka_unit_test(test_get),
        cmocka_unit_test(test_content_type_parameters),
        cmocka_unit_test(test_header_flood_keeps_deadline),
        cmocka_unit_test(test_responder_bytes_are_escaped),
        cmocka_unit_test(test_resolution_keeps_deadline),
        cmocka_unit_test(test_ipv6_host_header),
        cmocka_unit_test(test_round_falls_back_to_post),
        cmocka_unit_test(test_round_deadline),
    };
    return cmocka_run_group_tests_name("rs_fetch", tests, setup, teardown);
}
