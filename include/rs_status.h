/* rs_status.h: what the status page and the alerts say about a certificate.
 * Pure functions of the shared state, so every child says the same. */
#ifndef RS_STATUS_H
#define RS_STATUS_H

#include <apr_pools.h>
#include <apr_time.h>

/* Worst first: the status page sorts by it. */
typedef enum {
    RS_CERT_EXPIRED = 0, /* had a response, it expired: nothing stapled */
    RS_CERT_NONE,        /* never had a valid response: nothing stapled */
    RS_CERT_REVOKED,     /* a verified "revoked" is stapled */
    RS_CERT_STALE,       /* stapled and valid, but renewal is failing or overdue */
    RS_CERT_GOOD,
    RS_CERT_NO_URL,      /* not stapled: no OCSP responder URL */
} rs_cert_state_e;

const char *rs_cert_state_name(rs_cert_state_e st);

/* The state of a certificate from its stored response (times 0 if none),
 * whether it says revoked, consecutive failures and whether a response was
 * ever stored. Stale: failures, or past the renewal point of the window. */
rs_cert_state_e rs_status_classify(apr_time_t this_update, apr_time_t next_update, int revoked,
                                   unsigned failures, int renew_window_pct, apr_time_t now);

/* Alerts: what is reported (error log, ResilientStaplingNotifyCmd) once per
 * server when it changes. Expiring: in the last 25 % of the lifetime. */
typedef enum {
    RS_ALERT_OK = 0,
    RS_ALERT_EXPIRING,
    RS_ALERT_EXPIRED,
    RS_ALERT_REVOKED,
} rs_alert_e;

rs_alert_e rs_alert_of(apr_time_t this_update, apr_time_t next_update, int revoked,
                       apr_time_t now);
/* "expiring", "expired", "revoked", "recovered", or NULL if nothing to report. */
const char *rs_alert_event(rs_alert_e from, rs_alert_e to);

/* The CN of an RFC 2253 subject (the first CN attribute), its escapes
 * undone ("\,", "\\", "\"" and "\XX" hex pairs); "" if it has none. */
const char *rs_subject_cn(apr_pool_t *p, const char *subject);

/* t relative to now for a person: "now", "in 42 s", "3 min ago",
 * "in 5 h 12 min", "2 d 3 h ago". Always fits in RS_REL_LEN. */
#define RS_REL_LEN 32
void rs_relative_time(char *buf, apr_time_t t, apr_time_t now);

/* s as a JSON string (with quotes), control characters escaped. */
const char *rs_json_string(apr_pool_t *p, const char *s);

#endif
