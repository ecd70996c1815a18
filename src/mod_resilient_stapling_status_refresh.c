/* mod_resilient_stapling_status_refresh.c: the status page's refresh
 * button, POST ?refresh=<id>|all: the certificates asked for are made due
 * now (rs_shared_refresh_now), each at most once per REFRESH_MIN_INTERVAL,
 * and never for a page of another site.
 */
#include <string.h>
#include <strings.h>

#include <apr_strings.h>
#include <httpd.h>
#include <http_config.h>
#include <http_log.h>
#include <http_protocol.h>
#include <util_script.h>

#include "mod_resilient_stapling.h"

APLOG_USE_MODULE(resilient_stapling);

/* A refresh form is one short field. */
#define MAX_FORM_BYTES 4096

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
int rs_status_refresh(request_rec *r, rs_registry_t *reg, apr_time_t now)
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
        if (rs_shared_refresh_now(reg->shared, e->index, now, interval))
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

/* Is name one of the arguments (name, name=..., among others by &)? */
