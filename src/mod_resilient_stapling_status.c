/* mod_resilient_stapling_status.c: what an admin sees.
 *
 *   SetHandler resilient-stapling-status   one row per certificate, HTML
 *                                          (worst first) or ?json; ?metrics
 *                                          or an OpenMetrics Accept:
 *                                          Prometheus text / OpenMetrics
 *   POST ?refresh=<id>|all                 schedule an immediate fetch (not
 *                                          cross-site; once per 10 s each):
 *                                          mod_resilient_stapling_status_refresh.c
 *   server-status (mod_status)             a summary section; ?auto lines
 *
 * Rows come from the server's shared record (rs_shared_read: all children
 * agree). GET never changes anything; access is ordinary Require.
 */
#include <stdlib.h>
#include <string.h>

#include <apr_strings.h>
#include <httpd.h>
#include <http_config.h>
#include <http_log.h>
#include <http_protocol.h>
#include <http_request.h>
#include <mod_status.h>

#include "mod_resilient_stapling.h"
#include "rs_metrics.h"
#include "rs_status.h"

APLOG_USE_MODULE(resilient_stapling);

#define HANDLER "resilient-stapling-status"

/* One line of the page: a managed certificate (e) or one without a
 * responder URL (id and url NULL). */
typedef struct {
    const rs_entry_t *e;
    const char *id, *url, *subject, *serial, *issuer, *vhosts;
    int must_staple;
    rs_state_t st;
    rs_cert_state_e state;
    apr_time_t this_update, next_update;
} row_t;

static int worst_first(const void *a, const void *b)
{
    const row_t *x = a, *y = b;
    if (x->state != y->state)
        return (int)x->state - (int)y->state;
    if (x->must_staple != y->must_staple)
        return y->must_staple - x->must_staple; /* Must-Staple first: it is what breaks */
    return x->next_update < y->next_update ? -1 : x->next_update > y->next_update;
}

static apr_array_header_t *collect(rs_registry_t *reg, request_rec *r, apr_time_t now)
{
    apr_array_header_t *rows = apr_array_make(r->pool, reg->entries->nelts + 1, sizeof(row_t));
    int i;

    for (i = 0; i < reg->entries->nelts; i++) {
        const rs_entry_t *e = APR_ARRAY_IDX(reg->entries, i, rs_entry_t *);
        row_t *row = apr_array_push(rows);
        memset(row, 0, sizeof(*row));
        row->e = e;
        row->id = e->id_hex;
        row->url = e->url;
        row->subject = e->cert->subject;
        row->serial = e->cert->serial;
        row->issuer = e->cert->issuer_name;
        row->vhosts = e->vhosts;
        row->must_staple = e->cert->must_staple;
        rs_shared_read(reg->shared, e->index, &row->st); /* fresh if the lock failed */
        row->this_update = row->st.resp_this_update;
        row->next_update = row->st.resp_next_update;
        row->state = rs_status_classify(row->this_update, row->next_update,
                                        row->st.resp_revoked, row->st.failures,
                                        reg->sched.renew_window_pct, now);
    }
    for (i = 0; reg->skipped && i < reg->skipped->nelts; i++) {
        const rs_skipped_t *sk = &APR_ARRAY_IDX(reg->skipped, i, rs_skipped_t);
        row_t *row = apr_array_push(rows);
        memset(row, 0, sizeof(*row));
        row->subject = sk->subject;
        row->serial = sk->serial;
        row->issuer = sk->issuer;
        row->vhosts = sk->vhost;
        row->must_staple = sk->must_staple;
        rs_state_init(&row->st);
        row->state = RS_CERT_NO_URL;
    }
    qsort(rows->elts, (size_t)rows->nelts, sizeof(row_t), worst_first);
    return rows;
}

static const char *iso(apr_pool_t *p, apr_time_t t)
{
    return t ? ap_ht_time(p, t, "%Y-%m-%dT%H:%M:%SZ", 1) : NULL;
}

static const char *json_time(apr_pool_t *p, apr_time_t t)
{
    return t ? rs_json_string(p, iso(p, t)) : "null";
}

static const char *last_ocsp_status(const rs_state_t *st)
{
    return st->last_resp_status > 0 ? rs_ocsp_resp_status_name(st->last_resp_status) : NULL;
}

static void counts(apr_array_header_t *rows, int *n)
{
    int i;
    memset(n, 0, sizeof(int) * (RS_CERT_NO_URL + 1));
    for (i = 0; i < rows->nelts; i++)
        n[APR_ARRAY_IDX(rows, i, row_t).state]++;
}

/* "ok", "failing: <reason>" or "none" (no store): a store that cannot be
 * written is an outage waiting for the next restart, shown as such. */
static const char *store_health(apr_pool_t *p, rs_registry_t *reg)
{
    char err[RS_ERR_LEN];
    if (!reg->store_dir)
        return "none";
    return rs_store_health(reg, err, sizeof(err)) ? apr_pstrcat(p, "failing: ", err, NULL)
                                                  : "ok";
}

/* {"POST":{"ok":3,"transport":0,...},"GET":{...}}: since the server started */
static const char *json_attempts(apr_pool_t *p, const rs_state_t *st)
{
    const char *out = "{";
    int m, k;
    for (m = 0; m < RS_METHOD_COUNT; m++) {
        out = apr_psprintf(p, "%s%s\"%s\":{", out, m ? "," : "", rs_method_name((rs_method_e)m));
        for (k = 0; k < RS_RESULT_COUNT; k++)
            out = apr_psprintf(p, "%s%s\"%s\":%u", out, k ? "," : "",
                               rs_result_name((rs_result_e)k), st->attempts[m][k]);
        out = apr_pstrcat(p, out, "}", NULL);
    }
    return apr_pstrcat(p, out, "}", NULL);
}

static void emit_json(request_rec *r, rs_registry_t *reg, apr_array_header_t *rows,
                      apr_time_t now)
{
    apr_pool_t *p = r->pool;
    int n[RS_CERT_NO_URL + 1], i, k;

    counts(rows, n);
    ap_set_content_type(r, "application/json");
    ap_rprintf(r, "{\"version\":1,\"generated\":%s,\"cache\":%s,\"store\":%s,"
               "\"store_health\":%s,",
               json_time(p, now), rs_json_string(p, reg->cache_desc),
               reg->store_dir ? rs_json_string(p, reg->store_dir) : "null",
               rs_json_string(p, store_health(p, reg)));
    if (reg->fleet)
        ap_rprintf(r, "\"fleet\":{\"cache\":%s,\"state\":\"%s\"},",
                   rs_json_string(p, reg->fleet_desc), rs_fleet_server_down(reg) ? "down" : "up");
    ap_rprintf(r, "\"fleet_health\":\"%s\",",
               !reg->fleet ? "none" : rs_fleet_server_down(reg) ? "down" : "up");
    ap_rputs("\"summary\":{", r);
    for (k = 0; k <= RS_CERT_NO_URL; k++)
        ap_rprintf(r, "%s\"%s\":%d", k ? "," : "", rs_cert_state_name((rs_cert_state_e)k), n[k]);
    ap_rputs("},\"certificates\":[", r);
    for (i = 0; i < rows->nelts; i++) {
        const row_t *row = &APR_ARRAY_IDX(rows, i, row_t);
        const rs_state_t *st = &row->st;
        const char *status;
        char *v, *last;
        ap_rprintf(r, "%s{\"id\":%s,\"vhosts\":[", i ? "," : "",
                   row->id ? rs_json_string(p, row->id) : "null");
        for (k = 0, v = apr_strtok(apr_pstrdup(p, row->vhosts), " ", &last); v;
             v = apr_strtok(NULL, " ", &last), k++)
            ap_rprintf(r, "%s%s", k ? "," : "", rs_json_string(p, v));
        status = last_ocsp_status(st);
        ap_rprintf(r,
                   "],\"subject\":%s,\"serial\":%s,\"issuer\":%s,\"responder\":%s,"
                   "\"must_staple\":%s,\"state\":\"%s\",\"this_update\":%s,\"next_update\":%s,"
                   "\"seconds_left\":%s,\"next_attempt\":%s,\"last_success\":%s,"
                   "\"last_attempt\":%s,\"last_error\":%s,\"last_ocsp_status\":%s,"
                   "\"consecutive_failures\":%u,\"fetches\":%u,\"failures\":%u,"
                   "\"last_method\":%s,\"attempts\":%s}",
                   rs_json_string(p, row->subject), rs_json_string(p, row->serial),
                   rs_json_string(p, row->issuer), row->url ? rs_json_string(p, row->url) : "null",
                   row->must_staple ? "true" : "false", rs_cert_state_name(row->state),
                   json_time(p, row->this_update), json_time(p, row->next_update),
                   row->next_update > now
                       ? apr_psprintf(p, "%" APR_TIME_T_FMT,
                                      apr_time_sec(row->next_update - now))
                       : "null",
                   row->e ? json_time(p, st->next_attempt ? st->next_attempt : now) : "null",
                   json_time(p, st->last_success), json_time(p, st->last_attempt),
                   st->last_error[0] ? rs_json_string(p, st->last_error) : "null",
                   status ? rs_json_string(p, status) : "null", st->failures, st->fetches,
                   st->fetch_failures,
                   st->last_method >= 0 ? apr_psprintf(p, "\"%s\"",
                                                       rs_method_name((rs_method_e)st->last_method))
                                        : "null",
                   json_attempts(p, st));
    }
    ap_rputs("]}\n", r);
}

static const char *html_time(apr_pool_t *p, apr_time_t t)
{
    return t ? ap_ht_time(p, t, "%Y-%m-%d %H:%M:%S", 1) : "&ndash;";
}

/* "in 27 min" with the exact UTC time on hover; never wraps. */
static const char *rel(apr_pool_t *p, apr_time_t t, apr_time_t now)
{
    char buf[RS_REL_LEN];
    if (!t)
        return "&ndash;";
    rs_relative_time(buf, t, now);
    return apr_psprintf(p, "<span class=\"nw\" title=\"%s UTC\">%s</span>", html_time(p, t), buf);
}

/* The validity window as a bar: thisUpdate on the left, nextUpdate on the
 * right, the elapsed part in the state's colour, a tick where renewal is
 * due and a line for now. Now to the right of the tick: renewal is late. */
#define BAR_W 150
#define BAR_H 14
static const char *validity_bar(apr_pool_t *p, const row_t *row, int renew_pct, apr_time_t now)
{
    apr_interval_time_t life = row->next_update - row->this_update;
    apr_time_t renew_at;
    int x_now, x_renew;
    if (!row->next_update || life <= 0)
        return "";
    renew_at = row->next_update - life / 100 * renew_pct;
    x_now = now <= row->this_update ? 0
            : now >= row->next_update ? BAR_W
            : (int)((double)(now - row->this_update) * BAR_W / (double)life);
    x_renew = (int)((double)(renew_at - row->this_update) * BAR_W / (double)life);
    return apr_psprintf(p,
                        "<svg width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" role=\"img\" "
                        "aria-label=\"validity\"><title>valid %s to %s UTC; renewal due %s UTC"
                        "</title><rect width=\"%d\" height=\"%d\" fill=\"#e4e4e4\"/>"
                        "<rect width=\"%d\" height=\"%d\" class=\"f-%s\"/>"
                        "<rect x=\"%d\" width=\"2\" height=\"%d\" fill=\"#06c\"/>"
                        "<rect x=\"%d\" width=\"2\" height=\"%d\" fill=\"#111\"/>"
                        "</svg>",
                        BAR_W, BAR_H, BAR_W, BAR_H, html_time(p, row->this_update),
                        html_time(p, row->next_update), html_time(p, renew_at), BAR_W, BAR_H,
                        x_now, BAR_H, rs_cert_state_name(row->state),
                        x_renew > BAR_W - 2 ? BAR_W - 2 : x_renew, BAR_H,
                        x_now > BAR_W - 2 ? BAR_W - 2 : x_now, BAR_H);
}

/* "12 fetches, 2 failed" and, below, the non-zero counters by method and
 * result since the server started. */
static const char *fetch_counts(apr_pool_t *p, const rs_state_t *st)
{
    const char *by = "";
    int m, k;
    for (m = 0; m < RS_METHOD_COUNT; m++)
        for (k = 0; k < RS_RESULT_COUNT; k++)
            if (st->attempts[m][k])
                by = apr_psprintf(p, "%s%s%s %s %u", by, *by ? "<br>" : "",
                                  rs_method_name((rs_method_e)m), rs_result_name((rs_result_e)k),
                                  st->attempts[m][k]);
    return apr_psprintf(p, "<span class=\"chip%s\">%u in a row</span><br>%u fetched, "
                           "%u failed"
                           "%s%s%s", st->failures ? " bad" : "", st->failures, st->fetches,
                        st->fetch_failures, *by ? "<br><small>" : "", by,
                        *by ? "</small>" : "");
}

/* The last error, with the OCSP status name in bold unless the error
 * already says it ("responder answered unauthorized"). */
static const char *last_error(apr_pool_t *p, const rs_state_t *st)
{
    const char *status = last_ocsp_status(st);
    const char *err = st->last_error[0] ? ap_escape_html2(p, st->last_error, 1) : "";
    if (status && !strstr(st->last_error, status))
        return apr_pstrcat(p, err, *err ? " " : "", "<b>", status, "</b>", NULL);
    return err;
}

static const char *health_chip(apr_pool_t *p, const char *what, const char *health, int bad)
{
    return apr_psprintf(p, "%s <span class=\"chip %s\">%s</span>", what, bad ? "bad" : "ok",
                        ap_escape_html2(p, health, 1));
}

static const char *const page_style =
    "body{font:14px/1.35 system-ui,sans-serif;margin:12px;color:#222}"
    "h1{font-size:20px;margin:0 0 4px}p{margin:4px 0}"
    ".chip{display:inline-block;padding:0 7px;border-radius:9px;background:#eee;color:#444;"
    "white-space:nowrap;margin:1px 0}"
    ".chip.expired,.chip.none,.chip.bad{background:#f3c4c4;color:#800}"
    ".chip.revoked{background:#e49a9a;color:#500}.chip.stale-but-valid{background:#fbe0a0;"
    "color:#630}.chip.good,.chip.ok{background:#cdeccd;color:#063}"
    ".chip.ms{background:#333;color:#fff;font-size:11px}"
    "table{border-collapse:collapse;width:100%;table-layout:fixed;margin-top:8px}"
    "th,td{border-bottom:1px solid #ddd;padding:4px 6px;text-align:left;vertical-align:top;"
    "overflow-wrap:anywhere}th{background:#f2f2f2;font-weight:600}"
    "tr.expired,tr.none{background:#fdeeee}tr.revoked{background:#fae2e2}"
    "tr.stale-but-valid{background:#fff8e6}tr.no-ocsp-url{color:#666}"
    ".nw{white-space:nowrap}small{color:#555}summary{cursor:pointer}svg{display:block;margin:2px 0;max-width:100%}"
    ".f-good{fill:#4a4}.f-stale-but-valid{fill:#d90}.f-revoked{fill:#a33}"
    ".f-expired,.f-none{fill:#c33}";

static void emit_html(request_rec *r, rs_registry_t *reg, apr_array_header_t *rows,
                      apr_time_t now)
{
    apr_pool_t *p = r->pool;
    const char *health = store_health(p, reg);
    int n[RS_CERT_NO_URL + 1], i, k;

    counts(rows, n);
    ap_set_content_type(r, "text/html; charset=utf-8");
    ap_rprintf(r, "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
               "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
               "<title>OCSP stapling</title><style>%s</style></head><body>\n"
               "<h1>OCSP stapling</h1>\n<p>%s UTC &middot; cache %s &middot; %s",
               page_style, html_time(p, now),
               ap_escape_html2(p, reg->cache_desc ? reg->cache_desc : "none", 1),
               health_chip(p, "store", health, !strncmp(health, "failing", 7)));
    if (!strncmp(health, "failing", 7))
        ap_rputs(" <b>staples will not survive a restart</b>", r);
    if (reg->store_dir)
        ap_rprintf(r, " <small>%s</small>", ap_escape_html2(p, reg->store_dir, 1));
    if (reg->fleet)
        ap_rprintf(r, " &middot; %s <small>%s</small>",
                   health_chip(p, "fleet cache",
                               rs_fleet_server_down(reg) ? "down: this server fetches for itself"
                                                         : "up",
                               rs_fleet_server_down(reg)),
                   ap_escape_html2(p, reg->fleet_desc, 1));
    ap_rputs("</p>\n<p>", r);
    /* a zero count is not an alarm: only states that occur get their colour */
    for (k = 0; k <= RS_CERT_NO_URL; k++)
        ap_rprintf(r, "<span class=\"chip%s%s\">%s %d</span> ", n[k] ? " " : "",
                   n[k] ? rs_cert_state_name((rs_cert_state_e)k) : "",
                   rs_cert_state_name((rs_cert_state_e)k), n[k]);
    ap_rputs("</p>\n<table>\n<colgroup><col style=\"width:8%\"><col style=\"width:23%\">"
             "<col style=\"width:16%\"><col style=\"width:9%\"><col style=\"width:10%\">"
             "<col style=\"width:21%\"><col style=\"width:13%\"></colgroup>\n"
             "<tr><th>state</th><th>certificate</th><th>response</th><th>next attempt</th>"
             "<th>last success</th><th>last error</th><th>fetches</th></tr>\n", r);
    for (i = 0; i < rows->nelts; i++) {
        const row_t *row = &APR_ARRAY_IDX(rows, i, row_t);
        const rs_state_t *st = &row->st;
        const char *name = rs_cert_state_name(row->state);
        const char *cn = rs_subject_cn(p, row->subject);
        /* the name people know it by first; what identifies it exactly
         * (for a refresh POST, a CA ticket) one click away */
        ap_rprintf(r,
                   "<tr class=\"%s\"><td><span class=\"chip %s\">%s</span>%s</td>"
                   "<td><b>%s</b>%s%s<br><small>%s</small><details><summary><small>details"
                   "</small></summary><small>%s<br>serial %s<br>issuer %s%s</small></details>"
                   "</td>",
                   name, name, name,
                   row->must_staple ? "<br><span class=\"chip ms\">Must-Staple</span>" : "",
                   ap_escape_html2(p, *cn ? cn : row->subject, 1),
                   strcmp(row->vhosts, cn) ? "<br>" : "",
                   strcmp(row->vhosts, cn) ? ap_escape_html2(p, row->vhosts, 1) : "",
                   row->url ? ap_escape_html2(p, row->url, 1) : "no OCSP responder URL",
                   ap_escape_html2(p, row->subject, 1), ap_escape_html2(p, row->serial, 1),
                   ap_escape_html2(p, row->issuer, 1),
                   row->id ? apr_pstrcat(p, "<br>id ", row->id, NULL) : "");
        if (row->next_update)
            ap_rprintf(r, "<td>%s%s %s<br><small>issued %s</small></td>",
                       validity_bar(p, row, reg->sched.renew_window_pct, now),
                       row->next_update > now ? "expires" : "expired",
                       rel(p, row->next_update, now), rel(p, row->this_update, now));
        else
            ap_rputs("<td>none held</td>", r);
        ap_rprintf(r, "<td>%s</td><td>%s%s</td><td>%s</td><td>%s</td></tr>\n",
                   row->e ? rel(p, st->next_attempt > now ? st->next_attempt : now, now)
                          : "&ndash;",
                   rel(p, st->last_success, now),
                   st->last_attempt ? apr_pstrcat(p, "<br><small>tried ",
                                                  rel(p, st->last_attempt, now), "</small>",
                                                  NULL)
                                    : "",
                   last_error(p, st), row->e ? fetch_counts(p, st) : "&ndash;");
    }
    ap_rputs("</table>\n<p><small>Worst first. Bar: the response's validity from thisUpdate "
             "to nextUpdate, now (dark), renewal due (blue). <code>?json</code> and "
             "<code>?metrics</code> (Prometheus) for machines; "
             "<code>POST ?refresh=&lt;id&gt;|all</code> fetches now (once per 10 s per "
             "certificate).</small></p>\n"
             "</body></html>\n", r);
}

static void out_rwrite(void *baton, const char *data, apr_size_t len)
{
    ap_rwrite(data, (int)len, baton);
}

/* Prometheus / OpenMetrics: the rows were copied certificate by
 * certificate; the server-wide part is copied here under one lock, and
 * rendering happens after it is released. */
static void emit_metrics(request_rec *r, rs_registry_t *reg, apr_array_header_t *rows,
                         apr_time_t now, rs_metrics_format_e fmt)
{
    rs_metrics_server_t *srv = apr_pcalloc(r->pool, sizeof(*srv));
    rs_metrics_cert_t *certs = apr_palloc(r->pool, sizeof(*certs) * (apr_size_t)(rows->nelts + 1));
    rs_out_t *o = apr_palloc(r->pool, sizeof(*o)); /* 16 KiB: not on a thread's stack */
    char err[RS_ERR_LEN];
    int i, nc = 0;

    srv->now = now;
    counts(rows, srv->per_state);
    srv->store = reg->store_dir ? !rs_store_health(reg, err, sizeof(err)) : -1;
    srv->fleet = reg->fleet ? !rs_fleet_server_down(reg) : -1;
    srv->slots_limit = reg->max_fetches;
    rs_shared_metrics(reg->shared, now, &srv->hist, &srv->slots_in_use);
    for (i = 0; i < rows->nelts; i++) {
        const row_t *row = &APR_ARRAY_IDX(rows, i, row_t);
        if (!row->e)
            continue; /* no responder URL, no id: counted per state only */
        certs[nc].id = row->id;
        certs[nc].subject = row->subject;
        certs[nc].vhost = row->vhosts;
        certs[nc].must_staple = row->must_staple;
        certs[nc].state = row->state;
        certs[nc].st = &row->st;
        nc++;
    }
    ap_set_content_type(r, rs_metrics_content_type(fmt));
    rs_out_init(o, out_rwrite, r);
    rs_metrics_render(o, r->pool, fmt, srv, certs, nc);
}

static int has_arg(const char *args, const char *name)
{
    apr_size_t n = strlen(name);
    const char *a = args;
    while (a && *a) {
        if (!strncmp(a, name, n) && (!a[n] || a[n] == '=' || a[n] == '&'))
            return 1;
        a = strchr(a, '&');
        a = a ? a + 1 : NULL;
    }
    return 0;
}

int rs_status_handler(request_rec *r)
{
    rs_registry_t *reg = rs_current_registry();
    apr_time_t now = apr_time_now();
    apr_array_header_t *rows;
    const char *accept;

    if (!r->handler || strcmp(r->handler, HANDLER) != 0)
        return DECLINED;
    r->allowed = AP_METHOD_BIT << M_GET | AP_METHOD_BIT << M_POST;
    if (!reg || !reg->mutex)
        return HTTP_SERVICE_UNAVAILABLE;
    apr_table_setn(r->headers_out, "Cache-Control", "no-store");
    apr_table_mergen(r->headers_out, "Vary", "Accept"); /* ?metrics by Accept too */
    if (r->method_number == M_POST)
        return rs_status_refresh(r, reg, now);
    if (r->method_number != M_GET)
        return HTTP_METHOD_NOT_ALLOWED;
    if (r->header_only)
        return OK;
    rows = collect(reg, r, now);
    /* an explicit ?json wins over what the client accepts */
    accept = apr_table_get(r->headers_in, "Accept");
    if (has_arg(r->args, "json"))
        emit_json(r, reg, rows, now);
    else if (has_arg(r->args, "metrics") || rs_metrics_negotiate(accept) == RS_METRICS_OPENMETRICS)
        emit_metrics(r, reg, rows, now, rs_metrics_negotiate(accept));
    else
        emit_html(r, reg, rows, now);
    return OK;
}

/* mod_status: a summary in server-status, and lines for ?auto. */
int rs_status_hook(request_rec *r, int flags)
{
    rs_registry_t *reg = rs_current_registry();
    apr_time_t now = apr_time_now(), oldest = 0, next = 0;
    apr_array_header_t *rows;
    int n[RS_CERT_NO_URL + 1], i, k;

    if (!reg || !reg->mutex)
        return OK;
    rows = collect(reg, r, now);
    counts(rows, n);
    for (i = 0; i < rows->nelts; i++) {
        const row_t *row = &APR_ARRAY_IDX(rows, i, row_t);
        if (!row->e)
            continue;
        if (row->next_update > now && (!oldest || row->this_update < oldest))
            oldest = row->this_update;
        if (!next || row->st.next_attempt < next)
            next = row->st.next_attempt;
    }
    if (next && next < now)
        next = now;
    if (flags & AP_STATUS_SHORT) {
        for (k = 0; k <= RS_CERT_NO_URL; k++)
            ap_rprintf(r, "ResilientStapling-%s: %d\n", rs_cert_state_name((rs_cert_state_e)k),
                       n[k]);
        ap_rprintf(r, "ResilientStapling-OldestResponseAge: %" APR_TIME_T_FMT "\n",
                   oldest ? apr_time_sec(now - oldest) : 0);
        ap_rprintf(r, "ResilientStapling-NextRenewalIn: %" APR_TIME_T_FMT "\n",
                   next ? apr_time_sec(next - now) : 0);
        ap_rprintf(r, "ResilientStapling-Store: %s\n", store_health(r->pool, reg));
        return OK;
    }
    ap_rputs("<hr>\n<h2>Resilient OCSP stapling</h2>\n<table border=\"0\"><tr>", r);
    for (k = 0; k <= RS_CERT_NO_URL; k++)
        ap_rprintf(r, "<th>%s</th>", rs_cert_state_name((rs_cert_state_e)k));
    ap_rputs("</tr><tr>", r);
    for (k = 0; k <= RS_CERT_NO_URL; k++)
        ap_rprintf(r, "<td>%d</td>", n[k]);
    ap_rprintf(r, "</tr></table>\n<p>Oldest response stapled: %s UTC &middot; next renewal: "
               "%s UTC &middot; store: %s</p>\n", html_time(r->pool, oldest),
               html_time(r->pool, next), ap_escape_html2(r->pool, store_health(r->pool, reg), 1));
    return OK;
}
