/* rs_metrics.c: see rs_metrics.h.
 *
 * The two formats differ only in small ways: OpenMetrics names a counter
 * family without its _total suffix in HELP and TYPE, and ends with
 * "# EOF". Everything else (names, labels, escaping, values) is the same,
 * so one renderer writes both. Families are written one after the other
 * (both formats require a family's samples together), each walking all
 * certificates: the labels of a certificate are escaped once, up front.
 */
#include <string.h>

#include <apr_strings.h>

#include "rs_metrics.h"

#define MS(x) ((apr_interval_time_t)(x) * 1000)

const apr_interval_time_t rs_hist_bounds[RS_HIST_BUCKETS] = {
    MS(10), MS(25), MS(50), MS(100), MS(250), MS(500),
    MS(1000), MS(2500), MS(5000), MS(10000), MS(30000)};

void rs_hist_observe(rs_hist_t *h, apr_interval_time_t d)
{
    int i = 0;
    if (d < 0)
        d = 0; /* a clock step backwards during the fetch */
    while (i < RS_HIST_BUCKETS && d > rs_hist_bounds[i])
        i++;
    h->bucket[i]++;
    h->count++;
    h->sum_usec += (apr_uint64_t)d;
}

const char *rs_metrics_content_type(rs_metrics_format_e fmt)
{
    return fmt == RS_METRICS_OPENMETRICS
               ? "application/openmetrics-text; version=1.0.0; charset=utf-8"
               : "text/plain; version=0.0.4; charset=utf-8";
}

rs_metrics_format_e rs_metrics_negotiate(const char *accept)
{
    /* Prometheus lists OpenMetrics first, the text format as a fallback:
     * a client that names OpenMetrics at all can read it. */
    return accept && strstr(accept, "application/openmetrics-text") ? RS_METRICS_OPENMETRICS
                                                                    : RS_METRICS_PROMETHEUS;
}

void rs_out_init(rs_out_t *o, void (*write)(void *, const char *, apr_size_t), void *baton)
{
    o->write = write;
    o->baton = baton;
    o->len = 0;
    o->total = 0;
}

void rs_out_flush(rs_out_t *o)
{
    if (o->len)
        o->write(o->baton, o->buf, o->len);
    o->total += o->len;
    o->len = 0;
}

void rs_out_mem(rs_out_t *o, const char *s, apr_size_t n)
{
    while (n) {
        apr_size_t k = sizeof(o->buf) - o->len;
        if (k > n)
            k = n;
        memcpy(o->buf + o->len, s, k);
        o->len += k;
        s += k;
        n -= k;
        if (o->len == sizeof(o->buf))
            rs_out_flush(o);
    }
}

void rs_out_str(rs_out_t *o, const char *s)
{
    rs_out_mem(o, s, strlen(s));
}

/* Numbers without printf: this runs ~25 times per certificate. */
static void out_i64(rs_out_t *o, apr_int64_t v)
{
    char tmp[24], *t = tmp + sizeof(tmp);
    apr_uint64_t u = v < 0 ? (apr_uint64_t)0 - (apr_uint64_t)v : (apr_uint64_t)v;
    do {
        *--t = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0)
        *--t = '-';
    rs_out_mem(o, t, (apr_size_t)(tmp + sizeof(tmp) - t));
}

/* microseconds as seconds with 6 decimals */
static void out_usec(rs_out_t *o, apr_int64_t us)
{
    char frac[8];
    apr_int64_t a = us < 0 ? -us : us;
    if (us < 0)
        rs_out_str(o, "-");
    out_i64(o, a / 1000000);
    apr_snprintf(frac, sizeof(frac), ".%06d", (int)(a % 1000000));
    rs_out_str(o, frac);
}

/* Length of the UTF-8 sequence at s, or 0 if it is not a valid one. */
static apr_size_t utf8_len(const unsigned char *s)
{
    apr_size_t n, i;
    unsigned cp;
    if (s[0] < 0x80)
        return 1;
    if (s[0] >= 0xc2 && s[0] <= 0xdf)
        n = 2, cp = s[0] & 0x1f;
    else if (s[0] >= 0xe0 && s[0] <= 0xef)
        n = 3, cp = s[0] & 0x0f;
    else if (s[0] >= 0xf0 && s[0] <= 0xf4)
        n = 4, cp = s[0] & 0x07;
    else
        return 0;
    for (i = 1; i < n; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = cp << 6 | (s[i] & 0x3f);
    }
    /* overlong, surrogates, beyond U+10FFFF */
    if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10ffff))
        || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return n;
}

const char *rs_metrics_label_value(apr_pool_t *p, const char *s)
{
    const unsigned char *c = (const unsigned char *)(s ? s : "");
    apr_size_t cap = strlen((const char *)c) * 3 + 1; /* worst: each byte U+FFFD */
    char *out = apr_palloc(p, cap), *o = out;

    while (*c) {
        apr_size_t n = utf8_len(c);
        if (*c == '\\' || *c == '"') {
            *o++ = '\\';
            *o++ = (char)*c++;
        }
        else if (*c == '\n') {
            *o++ = '\\';
            *o++ = 'n';
            c++;
        }
        else if (!n) {
            memcpy(o, "\xef\xbf\xbd", 3);
            o += 3;
            c++;
        }
        else {
            memcpy(o, c, n);
            o += n;
            c += n;
        }
    }
    *o = '\0';
    return out;
}

typedef enum { GAUGE, COUNTER, HISTOGRAM } kind_e;

/* HELP and TYPE of a family. name is without _total for counters. */
static void family(rs_out_t *o, rs_metrics_format_e fmt, const char *name, kind_e kind,
                   const char *help)
{
    static const char *const kinds[] = {"gauge", "counter", "histogram"};
    const char *suffix = kind == COUNTER && fmt == RS_METRICS_PROMETHEUS ? "_total" : "";
    rs_out_str(o, "# HELP ");
    rs_out_str(o, name);
    rs_out_str(o, suffix);
    rs_out_str(o, " ");
    rs_out_str(o, help);
    rs_out_str(o, "\n# TYPE ");
    rs_out_str(o, name);
    rs_out_str(o, suffix);
    rs_out_str(o, " ");
    rs_out_str(o, kinds[kind]);
    rs_out_str(o, "\n");
}

/* name{labels[,extra]} value */
static void sample(rs_out_t *o, const char *name, const char *labels, const char *extra,
                   apr_int64_t v)
{
    rs_out_str(o, name);
    if (labels || extra) {
        rs_out_str(o, "{");
        if (labels)
            rs_out_str(o, labels);
        if (labels && extra)
            rs_out_str(o, ",");
        if (extra)
            rs_out_str(o, extra);
        rs_out_str(o, "}");
    }
    rs_out_str(o, " ");
    out_i64(o, v);
    rs_out_str(o, "\n");
}

/* id="...",cn="...",vhost="...",must_staple="true|false" */
static const char *cert_labels(apr_pool_t *p, const rs_metrics_cert_t *c)
{
    const char *vhost = c->vhost ? c->vhost : "";
    const char *sp = strchr(vhost, ' ');
    if (sp)
        vhost = apr_pstrmemdup(p, vhost, (apr_size_t)(sp - vhost));
    return apr_pstrcat(p, "id=\"", rs_metrics_label_value(p, c->id), "\",cn=\"",
                       rs_metrics_label_value(p, rs_subject_cn(p, c->subject)), "\",vhost=\"",
                       rs_metrics_label_value(p, vhost), "\",must_staple=\"",
                       c->must_staple ? "true" : "false", "\"", NULL);
}

/* A per-certificate gauge in seconds; has() says whether the certificate
 * has a value at all (no response held: no expiry, no age). */
typedef int (*has_fn)(const rs_metrics_cert_t *c, apr_time_t now, apr_int64_t *v);

static int has_expires_in(const rs_metrics_cert_t *c, apr_time_t now, apr_int64_t *v)
{
    *v = apr_time_sec(c->st->resp_next_update - now);
    return c->st->resp_next_update != 0;
}

static int has_age(const rs_metrics_cert_t *c, apr_time_t now, apr_int64_t *v)
{
    *v = apr_time_sec(now - c->st->resp_this_update);
    return c->st->resp_next_update != 0;
}

static int has_lifetime(const rs_metrics_cert_t *c, apr_time_t now, apr_int64_t *v)
{
    (void)now;
    *v = apr_time_sec(c->st->resp_next_update - c->st->resp_this_update);
    return c->st->resp_next_update != 0;
}

static int has_next_attempt(const rs_metrics_cert_t *c, apr_time_t now, apr_int64_t *v)
{
    /* 0: due now (a prefetch, or a scheduler about to run) */
    *v = c->st->next_attempt > now ? apr_time_sec(c->st->next_attempt - now) : 0;
    return 1;
}

static int has_last_success(const rs_metrics_cert_t *c, apr_time_t now, apr_int64_t *v)
{
    (void)now;
    *v = apr_time_sec(c->st->last_success);
    return c->st->last_success != 0;
}

static int has_failures(const rs_metrics_cert_t *c, apr_time_t now, apr_int64_t *v)
{
    (void)now;
    *v = c->st->failures;
    return 1;
}

static const struct {
    const char *name;
    has_fn has;
    const char *help;
} cert_gauges[] = {
    {"resilient_stapling_response_expires_in_seconds", has_expires_in,
     "Seconds until the nextUpdate of the response held (negative once expired; no sample "
     "if none was ever held)."},
    {"resilient_stapling_response_age_seconds", has_age,
     "Seconds since the thisUpdate of the response held."},
    {"resilient_stapling_response_lifetime_seconds", has_lifetime,
     "nextUpdate minus thisUpdate of the response held."},
    {"resilient_stapling_next_attempt_in_seconds", has_next_attempt,
     "Seconds until the next fetch is due (0: due now)."},
    {"resilient_stapling_last_success_timestamp_seconds", has_last_success,
     "Unix time of the last verified response fetched (no sample if never)."},
    {"resilient_stapling_consecutive_failures", has_failures,
     "Failed fetches since the last success."},
};

static void server_part(rs_out_t *o, rs_metrics_format_e fmt, const rs_metrics_server_t *srv)
{
    char le[64];
    apr_uint64_t cum = 0;
    int k;

    family(o, fmt, "resilient_stapling_certificates", GAUGE,
           "Certificates by state (no-ocsp-url: never stapled, no responder URL).");
    for (k = 0; k <= RS_CERT_NO_URL; k++) {
        apr_snprintf(le, sizeof(le), "state=\"%s\"", rs_cert_state_name((rs_cert_state_e)k));
        sample(o, "resilient_stapling_certificates", NULL, le, srv->per_state[k]);
    }
    if (srv->store >= 0) {
        family(o, fmt, "resilient_stapling_store_up", GAUGE,
               "1 if the last write to the persistent store worked; 0: the staples will not "
               "survive a restart.");
        sample(o, "resilient_stapling_store_up", NULL, NULL, srv->store);
    }
    if (srv->fleet >= 0) {
        family(o, fmt, "resilient_stapling_fleet_up", GAUGE,
               "1 if the fleet cache (memcache, redis) answers; 0: this server fetches for "
               "itself.");
        sample(o, "resilient_stapling_fleet_up", NULL, NULL, srv->fleet);
    }
    family(o, fmt, "resilient_stapling_fetch_slots_in_use", GAUGE,
           "Fetches in flight in the whole server.");
    sample(o, "resilient_stapling_fetch_slots_in_use", NULL, NULL, srv->slots_in_use);
    family(o, fmt, "resilient_stapling_fetch_slots_limit", GAUGE,
           "ResilientStaplingMaxFetches: fetches allowed in flight at once.");
    sample(o, "resilient_stapling_fetch_slots_limit", NULL, NULL, srv->slots_limit);
    family(o, fmt, "resilient_stapling_fetch_duration_seconds", HISTOGRAM,
           "Duration of OCSP fetches (all certificates, all outcomes) since the server "
           "(re)started.");
    for (k = 0; k <= RS_HIST_BUCKETS; k++) {
        cum += srv->hist.bucket[k];
        if (k < RS_HIST_BUCKETS) {
            /* bounds are whole milliseconds: three decimals are exact */
            apr_snprintf(le, sizeof(le), "le=\"%d.%03d\"", (int)(rs_hist_bounds[k] / 1000000),
                         (int)(rs_hist_bounds[k] / 1000 % 1000));
            sample(o, "resilient_stapling_fetch_duration_seconds_bucket", NULL, le,
                   (apr_int64_t)cum);
        }
        else {
            sample(o, "resilient_stapling_fetch_duration_seconds_bucket", NULL, "le=\"+Inf\"",
                   (apr_int64_t)cum);
        }
    }
    rs_out_str(o, "resilient_stapling_fetch_duration_seconds_sum ");
    out_usec(o, (apr_int64_t)srv->hist.sum_usec);
    rs_out_str(o, "\n");
    sample(o, "resilient_stapling_fetch_duration_seconds_count", NULL, NULL,
           (apr_int64_t)srv->hist.count);
}

void rs_metrics_render(rs_out_t *o, apr_pool_t *p, rs_metrics_format_e fmt,
                       const rs_metrics_server_t *srv, const rs_metrics_cert_t *certs, int n)
{
    const char **labels = apr_palloc(p, sizeof(*labels) * (apr_size_t)(n ? n : 1));
    const char *state_lbl[RS_CERT_NO_URL], *attempt_lbl[RS_METHOD_COUNT][RS_RESULT_COUNT];
    apr_size_t g;
    int i, k, m, res;

    /* every label is escaped and formatted once, not once per sample */
    for (i = 0; i < n; i++)
        labels[i] = cert_labels(p, &certs[i]);
    for (k = 0; k < RS_CERT_NO_URL; k++)
        state_lbl[k] = apr_psprintf(p, "state=\"%s\"", rs_cert_state_name((rs_cert_state_e)k));
    for (m = 0; m < RS_METHOD_COUNT; m++)
        for (res = 0; res < RS_RESULT_COUNT; res++)
            attempt_lbl[m][res] = apr_psprintf(p, "method=\"%s\",result=\"%s\"",
                                               rs_method_name((rs_method_e)m),
                                               rs_result_name((rs_result_e)res));

    server_part(o, fmt, srv);

    family(o, fmt, "resilient_stapling_certificate_state", GAUGE,
           "1 for the state the certificate is in, 0 for the others.");
    for (i = 0; i < n; i++)
        for (k = 0; k < RS_CERT_NO_URL; k++)
            sample(o, "resilient_stapling_certificate_state", labels[i], state_lbl[k],
                   certs[i].state == (rs_cert_state_e)k);

    for (g = 0; g < sizeof(cert_gauges) / sizeof(cert_gauges[0]); g++) {
        family(o, fmt, cert_gauges[g].name, GAUGE, cert_gauges[g].help);
        for (i = 0; i < n; i++) {
            apr_int64_t v;
            if (cert_gauges[g].has(&certs[i], srv->now, &v))
                sample(o, cert_gauges[g].name, labels[i], NULL, v);
        }
    }

    family(o, fmt, "resilient_stapling_fetch_attempts", COUNTER,
           "Fetches since the server started, by method and result (ok, transport, http, "
           "responder-error, invalid, not-newer).");
    for (i = 0; i < n; i++)
        for (m = 0; m < RS_METHOD_COUNT; m++)
            for (res = 0; res < RS_RESULT_COUNT; res++)
                sample(o, "resilient_stapling_fetch_attempts_total", labels[i],
                       attempt_lbl[m][res], certs[i].st->attempts[m][res]);

    if (fmt == RS_METRICS_OPENMETRICS)
        rs_out_str(o, "# EOF\n");
    rs_out_flush(o);
}
