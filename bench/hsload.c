/* hsload: full TLS handshakes (no session reuse) that ask for OCSP status.
 *
 *   hsload HOST PORT SNI CONNECTIONS SECONDS [CAFILE [SWEEP]]
 *
 * CONNECTIONS threads each loop: connect, handshake with status_request,
 * record the latency and what was stapled, close. With SWEEP=N, SNI is a
 * printf pattern with one integer ("s%04d.rs.test") and the handshakes go
 * round the N names (many vhosts, each its own certificate);
 * otherwise SNI is the one name. Prints one line:
 *   handshakes=N rate=R/s p50=ms p99=ms max=ms stapled=F errstapled=F errors=N
 * stapled: a successful OCSP response was stapled; errstapled: a responder
 * error (unauthorized, tryLater, ...) was stapled, which clients reject.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ocsp.h>
#include <openssl/ssl.h>

#define MAX_SAMPLES 4000000

static const char *host, *sni;
static int port, sweep;
static unsigned long next_name;
static double deadline;
static SSL_CTX *ctx;
static double *samples;
static long nsamples, stapled, errstapled, errors;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int one(int *got_staple)
{
    char name[256];
    struct sockaddr_in sa;
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1, ok = 0;
    SSL *ssl;
    const unsigned char *resp;

    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((unsigned short)port);
    inet_pton(AF_INET, host, &sa.sin_addr);
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        close(fd);
        return 0;
    }
    ssl = SSL_new(ctx);
    SSL_set_fd(ssl, fd);
    if (sweep > 0) {
        pthread_mutex_lock(&lock);
        snprintf(name, sizeof(name), sni, (int)(next_name++ % (unsigned long)sweep));
        pthread_mutex_unlock(&lock);
    }
    else
        snprintf(name, sizeof(name), "%s", sni);
    SSL_set_tlsext_host_name(ssl, name);
    SSL_set_tlsext_status_type(ssl, TLSEXT_STATUSTYPE_ocsp);
    if (SSL_connect(ssl) == 1) {
        ok = 1;
        long n = SSL_get_tlsext_status_ocsp_resp(ssl, &resp);
        if (n > 0) {
            const unsigned char *p = resp;
            OCSP_RESPONSE *r = d2i_OCSP_RESPONSE(NULL, &p, n);
            *got_staple = r && OCSP_response_status(r) == OCSP_RESPONSE_STATUS_SUCCESSFUL ? 1 : 2;
            OCSP_RESPONSE_free(r);
        }
        SSL_shutdown(ssl);
    }
    SSL_free(ssl);
    close(fd);
    ERR_clear_error();
    return ok;
}

static void *worker(void *arg)
{
    (void)arg;
    while (now() < deadline) {
        int got = 0;
        double t0 = now(), dt;
        int ok = one(&got);
        dt = now() - t0;
        pthread_mutex_lock(&lock);
        if (!ok)
            errors++;
        else if (nsamples < MAX_SAMPLES) {
            samples[nsamples++] = dt;
            stapled += got == 1;
            errstapled += got == 2;
        }
        pthread_mutex_unlock(&lock);
    }
    return NULL;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    int conns, secs, i;
    pthread_t *th;
    double t0;

    if (argc < 6) {
        fprintf(stderr, "usage: %s HOST PORT SNI CONNECTIONS SECONDS [CAFILE [SWEEP]]\n",
                argv[0]);
        return 2;
    }
    host = argv[1];
    port = atoi(argv[2]);
    sni = argv[3];
    conns = atoi(argv[4]);
    secs = atoi(argv[5]);
    ctx = SSL_CTX_new(TLS_client_method());
    /* no session cache: every connection is a full handshake */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
    sweep = argc > 7 ? atoi(argv[7]) : 0;
    if (argc > 6 && *argv[6]) {
        SSL_CTX_load_verify_locations(ctx, argv[6], NULL);
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    }
    samples = malloc(sizeof(double) * MAX_SAMPLES);
    th = calloc((size_t)conns, sizeof(*th));
    t0 = now();
    deadline = t0 + secs;
    for (i = 0; i < conns; i++)
        pthread_create(&th[i], NULL, worker, NULL);
    for (i = 0; i < conns; i++)
        pthread_join(th[i], NULL);
    qsort(samples, (size_t)nsamples, sizeof(double), cmp);
    printf("handshakes=%ld rate=%.0f p50=%.2f p99=%.2f max=%.2f stapled=%.3f errstapled=%.3f "
           "errors=%ld\n",
           nsamples, nsamples / (now() - t0),
           nsamples ? samples[nsamples / 2] * 1e3 : 0,
           nsamples ? samples[(long)(nsamples * 0.99)] * 1e3 : 0,
           nsamples ? samples[nsamples - 1] * 1e3 : 0,
           nsamples ? (double)stapled / nsamples : 0,
           nsamples ? (double)errstapled / nsamples : 0, errors);
    return 0;
}
