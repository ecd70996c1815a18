/* mod_resilient_stapling_status.c: what an admin sees.
 *
 *   SetHandler resilient-stapling-status   one row per certificate, HTML
 *                                          (worst first) or ?json
 *   POST ?refresh=<id>|all                 schedule an immediate fetch (not
 *                                          cross-site; once per 10 s each)
 *   server-status (mod_status)             a summary section; ?auto lines
 *
 * Rows come from the shared state (all children agree) and this child's
 * staple. GET never changes anything; access is ordinary Require.
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
#include "rs_status.h"

APLOG_USE_MODULE(resilient_stapling);

#define HANDLER "resilient-stapling-status"
#define MAX_FORM_BYTES 4096

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
        if (reg->mutex && apr_global_mutex_lock(reg->mutex) == APR_SUCCESS) {
            rs_shared_state_get(reg, e, &row->st);
            apr_global_mutex_unlock(reg->mutex);
        }
        else {
            rs_state_init(&row->st);
        }
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
                   "\"consecutive_failures\":%u,\"fetches\":%u,\"failures\":%u",
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
                   st->fetch_failures);
        /* the request method of the last attempt, attempts by method and result */
        ap_rprintf(r, ",\"last_method\":%s,\"attempts\":{", st->last_method >= 0
                   ? apr_psprintf(p, "\"%s\"", rs_method_name((rs_method_e)st->last_method))
                   : "null");
        for (k = 0; k < RS_METHOD_COUNT; k++) {
            int m;
            ap_rprintf(r, "%s\"%s\":{", k ? "," : "", rs_method_name((rs_method_e)k));
            for (m = 0; m < RS_RESULT_COUNT; m++)
                ap_rprintf(r, "%s\"%s\":%u", m ? "," : "", rs_result_name((rs_result_e)m),
                           st->attempts[k][m]);
            ap_rputs("}", r);
        }
        ap_rputs("}}", r);
    }
    ap_rputs("]}\n", r);
}

static const char *html_time(apr_pool_t *p, apr_time_t t)
{
    return t ? ap_ht_time(p, t, "%Y-%m-%d %H:%M:%S", 1) : "&ndash;";
}

static const char *left(apr_pool_t *p, apr_time_t until, apr_time_t now)
{
    apr_interval_time_t d = until - now;
    if (!until || d <= 0)
        return "&ndash;";
    if (d >= apr_time_from_sec(86400))
        return apr_psprintf(p, "%" APR_TIME_T_FMT " d %" APR_TIME_T_FMT " h",
                            apr_time_sec(d) / 86400, apr_time_sec(d) % 86400 / 3600);
    return apr_psprintf(p, "%" APR_TIME_T_FMT " h %02" APR_TIME_T_FMT " m",
                        apr_time_sec(d) / 3600, apr_time_sec(d) % 3600 / 60);
}

static void emit_html(request_rec *r, rs_registry_t *reg, apr_array_header_t *rows,
                      apr_time_t now)
{
    apr_pool_t *p = r->pool;
    int n[RS_CERT_NO_URL + 1], i, k;

    counts(rows, n);
    ap_set_content_type(r, "text/html; charset=utf-8");
    ap_rputs("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
             "<title>OCSP stapling</title><style>"
             "body{font:14px sans-serif;margin:1em}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:3px 6px;text-align:left;vertical-align:top}"
             "th{background:#eee}.expired,.none{background:#f8d0d0}.revoked{background:#f0b0b0}"
             ".stale-but-valid{background:#fbeec8}.good{background:#d8f0d8}"
             ".no-ocsp-url{background:#eee;color:#666}small{color:#555}"
             "</style></head><body>\n<h1>OCSP stapling</h1>\n<p>", r);
    {
        const char *health = store_health(p, reg);
        ap_rprintf(r, "%s UTC &middot; cache %s &middot; store %s: %s%s%s</p>\n<p>",
                   html_time(p, now),
                   ap_escape_html2(p, reg->cache_desc ? reg->cache_desc : "none", 1),
                   ap_escape_html2(p, reg->store_dir ? reg->store_dir : "none", 1),
                   strncmp(health, "failing", 7) ? "" : "<b class=\"expired\">",
                   ap_escape_html2(p, health, 1),
                   strncmp(health, "failing", 7) ? "" : " &mdash; staples will not survive "
                                                        "a restart</b>");
    }
    if (reg->fleet)
        ap_rprintf(r, "fleet cache %s: <b>%s</b></p>\n<p>", ap_escape_html2(p, reg->fleet_desc, 1),
                   rs_fleet_server_down(reg) ? "down, this server fetches for itself" : "up");
    for (k = 0; k <= RS_CERT_NO_URL; k++)
        ap_rprintf(r, "<span class=\"%s\">%s: %d</span> ", rs_cert_state_name((rs_cert_state_e)k),
                   rs_cert_state_name((rs_cert_state_e)k), n[k]);
    ap_rputs("</p>\n<table>\n<tr><th>state</th><th>certificate</th><th>vhosts</th>"
             "<th>responder</th><th>thisUpdate</th><th>nextUpdate</th><th>left</th>"
             "<th>next attempt</th><th>last success</th><th>last attempt</th>"
             "<th>last error</th><th>failures in a row</th><th>fetches / failed</th></tr>\n", r);
    for (i = 0; i < rows->nelts; i++) {
        const row_t *row = &APR_ARRAY_IDX(rows, i, row_t);
        const rs_state_t *st = &row->st;
        const char *name = rs_cert_state_name(row->state);
        const char *status = last_ocsp_status(st);
        ap_rprintf(r,
                   "<tr class=\"%s\"><td>%s%s</td><td>%s<br><small>serial %s<br>issuer %s%s"
                   "</small></td><td>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td>"
                   "<td>%s</td><td>%s</td><td>%s</td><td>%s%s</td><td>%u</td>"
                   "<td>%u / %u</td></tr>\n",
                   name, name, row->must_staple ? "<br><b>Must-Staple</b>" : "",
                   ap_escape_html2(p, row->subject, 1), ap_escape_html2(p, row->serial, 1),
                   ap_escape_html2(p, row->issuer, 1),
                   row->id ? apr_pstrcat(p, "<br>id ", row->id, NULL) : "",
                   ap_escape_html2(p, row->vhosts, 1),
                   row->url ? ap_escape_html2(p, row->url, 1) : "none",
                   html_time(p, row->this_update), html_time(p, row->next_update),
                   left(p, row->next_update, now),
                   row->e ? html_time(p, st->next_attempt ? st->next_attempt : now) : "&ndash;",
                   html_time(p, st->last_success), html_time(p, st->last_attempt),
                   st->last_error[0] ? ap_escape_html2(p, st->last_error, 1) : "",
                   status ? apr_pstrcat(p, " <b>", status, "</b>", NULL) : "", st->failures,
                   st->fetches, st->fetch_failures);
    }
    ap_rputs("</table>\n<p><small>Worst first. <code>?json</code> for machines; "
             "<code>POST ?refresh=&lt;id&gt;|all</code> fetches now (once per 10 s per "
             "certificate).</small></p>\n"
             "</body></html>\n", r);
}

/* At most one forced fetch per certificate per this interval (or per the
 * configured retry minimum, if shorter), however often the button is
 * pressed: each one reaches the CA's responder. */
#define REFRESH_MIN_INTERVAL apr_time_from_sec(10)

static int is_form_type(const char *ctype)
{
    static const char *const simple[] = {"application/x-www-form-urlencoded",
                                         "multipart/form-data", "text/plain"};
    apr_size_t i, n;
    for (i = 0; i < sizeof(simple) / sizeof(simple[0]); i++) {
        n = strlen(simple[i]);
        if (!strncasecmp(ctype, simple[i], n) && (!ctype[n] || ctype[n] == ';' || ctype[n] == ' '))
            return 1;
    }
    return 0;
}

/* A page on another site must not press the button for a logged-in admin
 * (Require lines often trust the admin's address or cookie). Browsers send
 * Sec-Fetch-Site and Origin with a cross-site POST, and an HTML form can
 * only send the three form content types: those need an Origin that is
 * this site's. curl and scripts send neither header and no form type. */
static int cross_site(request_rec *r)
{
    const char *site = apr_table_get(r->headers_in, "Sec-Fetch-Site");
    const char *origin = apr_table_get(r->headers_in, "Origin");
    const char *ctype = apr_table_get(r->headers_in, "Content-Type");
    const char *host = apr_table_get(r->headers_in, "Host");
    int same = origin && host
               && !strcasecmp(origin, apr_pstrcat(r->pool, ap_http_scheme(r), "://", host, NULL));

    if (site && strcasecmp(site, "same-origin") != 0 && strcasecmp(site, "none") != 0)
        return 1;
    if (origin && !same)
        return 1;
    return !same && ctype && is_form_type(ctype);
}

/* refresh=<id>|all from the query string, or from a form body. */
static const char *refresh_target(request_rec *r)
{
    apr_array_header_t *pairs = NULL;
    const char *which = NULL;
    char *arg, *last;
    int i;

    for (arg = r->args ? apr_strtok(apr_pstrdup(r->pool, r->args), "&", &last) : NULL; arg;
         arg = apr_strtok(NULL, "&", &last))
        if (!strncmp(arg, "refresh=", 8))
            which = arg + 8;
    if (which)
        return *which && strlen(which) <= 64 ? which : NULL;
    if (ap_parse_form_data(r, NULL, &pairs, -1, MAX_FORM_BYTES) != OK || !pairs)
        return NULL;
    for (i = 0; i < pairs->nelts; i++) {
        ap_form_pair_t *pair = &APR_ARRAY_IDX(pairs, i, ap_form_pair_t);
        apr_off_t len;
        apr_size_t size;
        char *buf;
        if (strcmp(pair->name, "refresh") != 0)
            continue;
        apr_brigade_length(pair->value, 1, &len);
        if (len <= 0 || len > 64)
            return NULL;
        size = (apr_size_t)len;
        buf = apr_palloc(r->pool, size + 1);
        apr_brigade_flatten(pair->value, buf, &size);
        buf[size] = '\0';
        which = buf;
    }
    return which;
}

/* POST refresh=<id>|all: due now, in every child (still one fetch per
 * certificate, still verified). It never changes the backoff the schedule
 * would have used (rs_state_force). */
static int refresh(request_rec *r, rs_registry_t *reg, apr_time_t now)
{
    const char *which;
    int i, n = 0, throttled = 0;
    apr_interval_time_t interval = reg->sched.retry_min < REFRESH_MIN_INTERVAL
                                       ? reg->sched.retry_min : REFRESH_MIN_INTERVAL;

    if (cross_site(r)) {
        ap_log_rerror(APLOG_MARK, APLOG_WARNING, 0, r,
                      "RS0502: cross-site refresh request refused (Origin %s, Sec-Fetch-Site "
                      "%s); a script may POST ?refresh=<id>|all without a form body",
                      ap_escape_logitem(r->pool, apr_table_get(r->headers_in, "Origin")),
                      ap_escape_logitem(r->pool,
                                        apr_table_get(r->headers_in, "Sec-Fetch-Site")));
        return HTTP_FORBIDDEN;
    }
    if (!(which = refresh_target(r)))
        return HTTP_BAD_REQUEST;
    for (i = 0; i < reg->entries->nelts; i++) {
        rs_entry_t *e = APR_ARRAY_IDX(reg->entries, i, rs_entry_t *);
        if (strcmp(which, "all") != 0 && strcasecmp(which, e->id_hex) != 0)
            continue;
        if (rs_shared_force(reg, e, now, interval))
            n++;
        else
            throttled++;
    }
    if (n == 0 && throttled == 0)
        return HTTP_NOT_FOUND;
    ap_log_rerror(APLOG_MARK, APLOG_NOTICE, 0, r,
                  "RS0501: refresh of %s requested by %s: %d certificate(s) due now, %d "
                  "refreshed less than %d s ago left as they are",
                  ap_escape_logitem(r->pool, which), r->useragent_ip, n, throttled,
                  (int)apr_time_sec(interval));
    ap_set_content_type(r, "application/json");
    if (n == 0) {
        apr_table_setn(r->err_headers_out, "Retry-After",
                       apr_psprintf(r->pool, "%d", (int)apr_time_sec(interval) + 1));
        r->status = HTTP_TOO_MANY_REQUESTS;
    }
    ap_rprintf(r, "{\"scheduled\":%d,\"throttled\":%d}\n", n, throttled);
    return OK;
}

int rs_status_handler(request_rec *r)
{
    rs_registry_t *reg = rs_current_registry();
    apr_time_t now = apr_time_now();
    apr_array_header_t *rows;

    if (!r->handler || strcmp(r->handler, HANDLER) != 0)
        return DECLINED;
    r->allowed = AP_METHOD_BIT << M_GET | AP_METHOD_BIT << M_POST;
    if (!reg || !reg->mutex)
        return HTTP_SERVICE_UNAVAILABLE;
    apr_table_setn(r->headers_out, "Cache-Control", "no-store");
    if (r->method_number == M_POST)
        return refresh(r, reg, now);
    if (r->method_number != M_GET)
        return HTTP_METHOD_NOT_ALLOWED;
    if (r->header_only)
        return OK;
    rows = collect(reg, r, now);
    if (r->args && (!strcmp(r->args, "json") || !strncmp(r->args, "json&", 5)))
        emit_json(r, reg, rows, now);
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
