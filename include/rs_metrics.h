/* rs_metrics.h: the status page's metrics, in the Prometheus text format
 * (0.0.4) or OpenMetrics 1.0, and the fetch duration histogram kept in
 * shared memory. Apache-free: the handler copies the state under the
 * global mutex and renders after unlocking. */
#ifndef RS_METRICS_H
#define RS_METRICS_H

#include <apr_pools.h>
#include <apr_time.h>

#include "rs_sched.h"
#include "rs_status.h"

/* Fetch durations, server-wide: a handful of buckets from a fast local
 * responder (10 ms) to the longest timeout worth configuring. Counts are
 * per bucket (not cumulative); the renderer adds them up. Updated under
 * the global mutex. */
#define RS_HIST_BUCKETS 11
extern const apr_interval_time_t rs_hist_bounds[RS_HIST_BUCKETS];

typedef struct {
    apr_uint64_t bucket[RS_HIST_BUCKETS + 1]; /* the last one is +Inf */
    apr_uint64_t count;
    apr_uint64_t sum_usec;
} rs_hist_t;

void rs_hist_observe(rs_hist_t *h, apr_interval_time_t d);

typedef enum { RS_METRICS_PROMETHEUS = 0, RS_METRICS_OPENMETRICS } rs_metrics_format_e;

/* The Content-Type of a format. */
const char *rs_metrics_content_type(rs_metrics_format_e fmt);
/* The format an Accept header asks for: OpenMetrics if it names
 * application/openmetrics-text (what Prometheus sends), else the text
 * format. */
rs_metrics_format_e rs_metrics_negotiate(const char *accept);

/* One managed certificate (one with an id: certificates without a
 * responder URL only count in resilient_stapling_certificates). */
typedef struct {
    const char *id;      /* hex SHA-1, unique in a registry */
    const char *subject; /* RFC 2253; the label is its CN */
    const char *vhost;   /* first use; the rest of a space-separated list is ignored */
    int must_staple;
    rs_cert_state_e state;
    const rs_state_t *st;
} rs_metrics_cert_t;

/* Per server. store and fleet: -1 not configured (no series), 0 failing or
 * down, 1 working. */
typedef struct {
    apr_time_t now;
    int per_state[RS_CERT_NO_URL + 1];
    int store, fleet;
    int slots_in_use, slots_limit;
    rs_hist_t hist;
} rs_metrics_server_t;

/* Output through a bounded buffer: write is called with each full buffer
 * and at the end, so a large exposition never lives in memory at once. */
#define RS_OUT_BUF 16384
typedef struct {
    void (*write)(void *baton, const char *data, apr_size_t len);
    void *baton;
    apr_size_t len;
    apr_uint64_t total; /* bytes written so far, for the caller */
    char buf[RS_OUT_BUF];
} rs_out_t;

void rs_out_init(rs_out_t *o, void (*write)(void *, const char *, apr_size_t), void *baton);
void rs_out_mem(rs_out_t *o, const char *s, apr_size_t n);
void rs_out_str(rs_out_t *o, const char *s);
void rs_out_flush(rs_out_t *o);

/* The whole exposition (ends with "# EOF" in OpenMetrics), flushed. p
 * holds the labels of each certificate, escaped once (a few hundred bytes
 * per certificate). */
void rs_metrics_render(rs_out_t *o, apr_pool_t *p, rs_metrics_format_e fmt,
                       const rs_metrics_server_t *srv, const rs_metrics_cert_t *certs, int n);

/* s escaped as a label value (backslash, double quote and newline; bytes
 * that are not UTF-8 become U+FFFD: OpenMetrics requires UTF-8), without
 * quotes. */
const char *rs_metrics_label_value(apr_pool_t *p, const char *s);

#endif
