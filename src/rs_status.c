/* rs_status.c: see rs_status.h. */
#include <string.h>

#include <apr_strings.h>

#include "rs_status.h"

const char *rs_cert_state_name(rs_cert_state_e st)
{
    switch (st) {
    case RS_CERT_EXPIRED: return "expired";
    case RS_CERT_NONE: return "none";
    case RS_CERT_REVOKED: return "revoked";
    case RS_CERT_STALE: return "stale-but-valid";
    case RS_CERT_GOOD: return "good";
    case RS_CERT_NO_URL: return "no-ocsp-url";
    }
    return "unknown";
}

rs_cert_state_e rs_status_classify(apr_time_t this_update, apr_time_t next_update, int revoked,
                                   unsigned failures, int renew_window_pct, apr_time_t now)
{
    apr_interval_time_t window = (next_update - this_update) / 100 * renew_window_pct;
    if (next_update <= now)
        return next_update ? RS_CERT_EXPIRED : RS_CERT_NONE;
    if (revoked)
        return RS_CERT_REVOKED;
    if (failures > 0 || now >= next_update - window)
        return RS_CERT_STALE;
    return RS_CERT_GOOD;
}

rs_alert_e rs_alert_of(apr_time_t this_update, apr_time_t next_update, int revoked,
                       apr_time_t now)
{
    if (!next_update)
        return RS_ALERT_OK; /* never had one: reported per attempt, not as an alert */
    if (next_update <= now)
        return RS_ALERT_EXPIRED;
    if (revoked)
        return RS_ALERT_REVOKED;
    if (now >= next_update - (next_update - this_update) / 4)
        return RS_ALERT_EXPIRING;
    return RS_ALERT_OK;
}

const char *rs_alert_event(rs_alert_e from, rs_alert_e to)
{
    if (from == to)
        return NULL;
    switch (to) {
    case RS_ALERT_EXPIRING: return "expiring";
    case RS_ALERT_EXPIRED: return "expired";
    case RS_ALERT_REVOKED: return "revoked";
    case RS_ALERT_OK: return "recovered";
    }
    return NULL;
}

const char *rs_json_string(apr_pool_t *p, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    apr_size_t n = 2;
    const unsigned char *c;
    char *out, *o;

    for (c = (const unsigned char *)(s ? s : ""); *c; c++)
        n += (*c < 0x20 || *c == '"' || *c == '\\') ? 6 : 1;
    o = out = apr_palloc(p, n + 1);
    *o++ = '"';
    for (c = (const unsigned char *)(s ? s : ""); *c; c++) {
        if (*c == '"' || *c == '\\') {
            *o++ = '\\';
            *o++ = (char)*c;
        }
        else if (*c < 0x20) {
            *o++ = '\\';
            *o++ = 'u';
            *o++ = '0';
            *o++ = '0';
            *o++ = hex[*c >> 4];
            *o++ = hex[*c & 0xf];
        }
        else {
            *o++ = (char)*c;
        }
    }
    *o++ = '"';
    *o = '\0';
    return out;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

const char *rs_subject_cn(apr_pool_t *p, const char *subject)
{
    const char *s = subject ? subject : "";
    int at_start = 1;
    char *out, *o;

    /* find "CN=" at the start of an attribute: after the start, or an
     * unescaped ',' or '+' */
    while (*s) {
        if (at_start && !strncmp(s, "CN=", 3))
            break;
        if (*s == '\\' && s[1]) {
            at_start = 0; /* an escaped ',' separates nothing */
            s += 2;
            continue;
        }
        at_start = *s == ',' || *s == '+';
        s++;
    }
    if (!*s)
        return "";
    s += 3;
    o = out = apr_palloc(p, strlen(s) + 1); /* unescaping only shortens */
    while (*s && *s != ',' && *s != '+') {
        if (*s == '\\' && hexval(s[1]) >= 0 && hexval(s[2]) >= 0) {
            *o++ = (char)(hexval(s[1]) << 4 | hexval(s[2]));
            s += 3;
        }
        else if (*s == '\\' && s[1]) {
            *o++ = s[1];
            s += 2;
        }
        else {
            *o++ = *s++;
        }
    }
    *o = '\0';
    return out;
}

void rs_relative_time(char *buf, apr_time_t t, apr_time_t now)
{
    apr_int64_t d = (apr_int64_t)apr_time_sec(t - now);
    apr_int64_t a = d < 0 ? -d : d;
    char span[RS_REL_LEN];

    if (a == 0) {
        apr_cpystrn(buf, "now", RS_REL_LEN);
        return;
    }
    /* two units at most: the exact time is in the title attribute */
    if (a < 60)
        apr_snprintf(span, sizeof(span), "%d s", (int)a);
    else if (a < 3600)
        apr_snprintf(span, sizeof(span), "%d min", (int)(a / 60));
    else if (a < 86400)
        apr_snprintf(span, sizeof(span), "%d h %d min", (int)(a / 3600), (int)(a % 3600 / 60));
    else if (a < 86400 * 100000LL)
        apr_snprintf(span, sizeof(span), "%d d %d h", (int)(a / 86400), (int)(a % 86400 / 3600));
    else
        apr_cpystrn(span, "ages", sizeof(span));
    apr_snprintf(buf, RS_REL_LEN, d > 0 ? "in %s" : "%s ago", span);
}
