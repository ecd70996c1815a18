/* rs_status.c: see rs_status.h. */
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
