/* rs_sched.h: when to fetch, who fetches, and what a fetch result changes.
 *
 * The scheduling state of one certificate is shared by the children of a
 * server through shared memory; a fleet (memcache/redis) shares responses
 * and leases, and rs_fleet_decide says what a server does with them. These
 * are the pure rules, applied under the global mutex. No I/O, no httpd.
 */
#ifndef RS_SCHED_H
#define RS_SCHED_H

#include <apr_time.h>
#include "rs_ocsp.h"

#define RS_ERR_LEN 160

typedef struct {
    int renew_window_pct;           /* renew when this % of the lifetime remains */
    apr_interval_time_t retry_min;  /* backoff bounds after a failed attempt */
    apr_interval_time_t retry_max;
    apr_interval_time_t lease;      /* how long a fetcher may hold a certificate */
} rs_sched_conf_t;

/* How a fetch asked: RFC 5019 GET (CDNs cache it) or POST. */
typedef enum { RS_METHOD_POST = 0, RS_METHOD_GET, RS_METHOD_COUNT } rs_method_e;

/* What an attempt came to, for the counters (status JSON, metrics). */
typedef enum {
    RS_RESULT_OK = 0,          /* a verified response that became the held one */
    RS_RESULT_TRANSPORT,       /* no HTTP answer: connect, resolve, timeout, size */
    RS_RESULT_HTTP,            /* an HTTP answer that is not a 200 OCSP response */
    RS_RESULT_RESPONDER_ERROR, /* OCSPResponseStatus other than successful */
    RS_RESULT_INVALID,         /* a response that does not verify */
    RS_RESULT_NOT_NEWER,       /* verified, but not newer than the held one */
    RS_RESULT_COUNT
} rs_result_e;

typedef struct {
    apr_time_t next_attempt;     /* 0: as soon as possible (prefetch) */
    apr_time_t last_attempt;
    apr_time_t last_success;
    apr_time_t lease_until;
    apr_uint64_t lease_owner;    /* random token of the fetching child */
    apr_time_t resp_this_update; /* identifies the response in the cache, 0 if none */
    apr_time_t resp_next_update;
    apr_uint32_t resp_revoked;   /* the stored response says revoked */
    apr_uint32_t alert;          /* rs_alert_e last reported (once per server) */
    apr_uint32_t failures;       /* consecutive failed attempts */
    apr_uint32_t fetches;        /* attempts, all outcomes */
    apr_uint32_t fetch_failures;
    apr_int32_t last_verdict;    /* rs_verdict_e of the last attempt, -1 if none */
    apr_int32_t last_resp_status;/* OCSPResponseStatus of the last attempt, -1 if none */
    char last_error[RS_ERR_LEN];
    /* An admin's refresh (status page POST) made it due now; this is when
     * the schedule had it due. A forced attempt that fails goes back to it
     * and leaves the backoff as it was. 0: not forced. Never persisted. */
    apr_time_t forced_next;
    /* Since this server started (never persisted: counters reset with a
     * full restart, as Prometheus counters may): attempts by method and
     * result, and the method of the last one (-1: none). */
    apr_int32_t last_method;
    apr_uint32_t attempts[RS_METHOD_COUNT][RS_RESULT_COUNT];
    apr_uint32_t refresh_asked;  /* an operator asked for a fetch now (status page);
                                    until the next attempt; not stored on disk */
} rs_state_t;

void rs_state_init(rs_state_t *st);

/* The counter an attempt goes to: newer says whether a verified response
 * became the held one. */
rs_result_e rs_result_of(const rs_ocsp_result_t *res, int newer);
/* Counts an attempt by method and result. */
void rs_state_count(rs_state_t *st, rs_method_e method, rs_result_e result);
const char *rs_method_name(rs_method_e method);
const char *rs_result_name(rs_result_e result);

/* Take the fetch lease if the certificate is due (or force) and nobody else
 * holds a live lease; 1 if the caller (owner) may fetch now. force: the
 * caller has nothing to staple and cannot get the stored response. */
int rs_state_claim(rs_state_t *st, apr_uint64_t owner, apr_time_t now,
                   const rs_sched_conf_t *conf, int force);
/* Times in a state come from other children, other servers and files
 * written before a clock step: none may hold a certificate back longer
 * than the schedule itself could. next_attempt is pulled in to the later
 * of now + retry_max and the renewal of the response it holds; a lease
 * that ends after now + the lease length is dropped (each with a minute of
 * slack: children read the clock at different moments). 1 if it changed
 * anything: the caller stores it, so the bound is taken once, not pushed
 * ahead with every read. */
int rs_state_bound(rs_state_t *st, apr_time_t now, const rs_sched_conf_t *conf);

/* An admin asked for a fetch now: 1 if it was made due, 0 if another
 * forced fetch was asked for less than min_interval ago (a refresh button
 * must not become a way to hammer a responder). */
int rs_state_force(rs_state_t *st, apr_time_t now, apr_time_t *forced_at,
                   apr_interval_time_t min_interval);

/* A fetch now, asked for by an operator (POST refresh): due at once, and
 * a fleet lease of another server does not hold it back (that server may
 * be the one whose view is wrong). */
void rs_state_request_refresh(rs_state_t *st);
/* Give the lease back without an attempt (the fleet answered instead);
 * only the owner's own lease. */
void rs_state_unclaim(rs_state_t *st, apr_uint64_t owner);

/* A verified response was fetched. replaced says whether it became the
 * stored one (or the stored one was newer). jitter is uniform in [-1, 1]. */
void rs_state_success(rs_state_t *st, apr_time_t now, const rs_ocsp_result_t *fetched,
                      int replaced, const rs_sched_conf_t *conf, double jitter);

/* A failed attempt (a verified response not newer than the held one is
 * one too): the stored response (if any) stays; back off, by the short
 * ladder while nothing valid is held. No schedule (success, failure,
 * adopt) puts the next attempt past the held response's nextUpdate minus a
 * margin (a tenth of its lifetime, 1 s to 5 min). */
void rs_state_failure(rs_state_t *st, apr_time_t now, rs_verdict_e verdict,
                      int resp_status, const char *reason,
                      const rs_sched_conf_t *conf, double jitter);

/* A verified response fetched by another server of the fleet became the
 * stored one: no responder request was made, so no attempt is counted;
 * renewal is scheduled from it with this server's own jitter. */
void rs_state_adopt(rs_state_t *st, apr_time_t now, const rs_ocsp_result_t *adopted,
                    const rs_sched_conf_t *conf, double jitter);

/* What a server does with a due certificate when a fleet shares a cache
 * (rs_fleet_decide): the fleet's response is newer and not due itself, so
 * take it; this server's is no longer due, or another server holds a live
 * lease, so wait; or fetch. */
typedef enum { RS_FLEET_FETCH, RS_FLEET_ADOPT, RS_FLEET_WAIT } rs_fleet_action_e;
/* A requested refresh (st->refresh_asked) always fetches.
 * fleet: the verified response found in the fleet's cache, or NULL;
 * lease_owner 0 if there is no lease. For RS_FLEET_WAIT, *wait_until is
 * when to look again. */
rs_fleet_action_e rs_fleet_decide(const rs_sched_conf_t *conf, const rs_state_t *st,
                                  const rs_ocsp_result_t *fleet, apr_uint64_t lease_owner,
                                  apr_time_t lease_until, apr_uint64_t me, apr_time_t now,
                                  apr_time_t *wait_until);

/* When a response with this lifetime should be renewed: once the renew
 * window is reached, +-10 % of the window, never sooner than retry_min
 * after the last fetch (short-lived responses must not hammer the
 * responder). */
apr_time_t rs_sched_renew_at(const rs_sched_conf_t *conf, apr_time_t this_update,
                             apr_time_t next_update, apr_time_t last_fetch, double jitter);

/* When to try again after the n-th consecutive failure (n >= 1):
 * retry_min * 2^(n-1), +-10 %, within [retry_min, retry_max]. */
apr_time_t rs_sched_retry_at(const rs_sched_conf_t *conf, apr_time_t now,
                             unsigned failures, double jitter);

/* When to try again after the n-th consecutive failure of a certificate
 * with nothing valid to staple: a short ladder first (2, 4, 8, 16, 32 s,
 * +-10 %, never slower than the configured backoff), then the configured
 * backoff as if counting from the first failure. */
#define RS_FAST_STEPS 5
#define RS_FAST_FIRST apr_time_from_sec(2)
apr_time_t rs_sched_fast_retry_at(const rs_sched_conf_t *conf, apr_time_t now,
                                  unsigned failures, double jitter);

/* Fetches in flight across the whole server (all children; a fleet with a
 * shared cache): a table of slots, each held until a fetch ends or its
 * lease expires (a child that died mid-fetch does not leak its slot). */
#define RS_MAX_SLOTS 256

typedef struct {
    apr_time_t until;        /* 0 or past: free */
    apr_uint64_t owner;
    apr_uint32_t responder;  /* rs_responder_key() of the URL fetched */
} rs_slot_t;

typedef struct {
    rs_slot_t slot[RS_MAX_SLOTS];
} rs_slots_t;

/* Take a slot for a fetch from this responder: its index, or
 * RS_SLOTS_FULL if max slots are busy, or RS_SLOTS_RESPONDER_FULL if this
 * responder already holds half of them (at least one), so that a hanging
 * responder cannot hold up fetches from the others. */
#define RS_SLOTS_FULL (-1)
#define RS_SLOTS_RESPONDER_FULL (-2)
int rs_slots_take(rs_slots_t *slots, int max, apr_uint32_t responder, apr_uint64_t owner,
                  apr_time_t now, apr_time_t until);
void rs_slots_release(rs_slots_t *slots, int index, apr_uint64_t owner);

/* Which responder a URL goes to (scheme, host and port), as a small key. */
apr_uint32_t rs_responder_key(const char *url);

/* Never replace good with bad, nor newer with older (docs/DESIGN.md
 * section 2, rule 4): may a verified candidate replace what is stored? It
 * is applied to every origin by rs_shared_offer. Never the same response
 * (same thisUpdate and nextUpdate) again, expired or not: nothing changes,
 * and callers that log or republish what they replace would do it forever. */
int rs_sched_should_replace(apr_time_t stored_this, apr_time_t stored_next,
                            apr_time_t cand_this, apr_time_t cand_next, apr_time_t now);

#endif
