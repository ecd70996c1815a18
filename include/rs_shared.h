/* rs_shared.h: a server's shared record of its certificates.
 *
 * The children of one server share, in one anonymous shared memory
 * segment, per certificate the scheduling state (rs_state_t), the response
 * every handshake staples (rs_shm_staple.h) and when it is next due
 * (rs_due.h), and server-wide the fetch slots, the scheduling leader, the
 * fetch-duration histogram and the health of the store and fleet cache.
 * This file alone knows that layout; everything else goes through the
 * transactions below, each one lock, one read-change-write, one unlock,
 * returning what happened so that the caller logs, writes the store and
 * notifies after the unlock (the error log and the store are files).
 *
 * The one way a verified response becomes the server's is rs_shared_offer
 * (docs/DESIGN.md section 2, rule 4: never replace good with bad, nor newer
 * with older), whatever brought it: a fetch, the startup fetch, the fleet
 * cache, the store.
 *
 * The lock and the response copy are callbacks (rs_shared_ops_t), so the
 * unit tests (test/unit_shared.c) stage the races of several children
 * against one record. No httpd, no I/O besides the callbacks.
 */
#ifndef RS_SHARED_H
#define RS_SHARED_H

#include <apr_pools.h>
#include <apr_time.h>

#include "rs_due.h"
#include "rs_fetch.h"
#include "rs_metrics.h"
#include "rs_ocsp.h"
#include "rs_sched.h"
#include "rs_shm_staple.h"

/* The process's handle on one segment (the segment itself is opaque). */
typedef struct rs_shared_t rs_shared_t;

typedef struct {
    void *baton;
    /* The global mutex: every transaction runs between lock and unlock. A
     * lock that fails makes the transaction do nothing (its status is
     * returned). */
    apr_status_t (*lock)(void *baton);
    void (*unlock)(void *baton);
    /* Copy a verified response into the memory handshakes read (called
     * with the lock held): APR_ENOSPC when there is no room left. */
    apr_status_t (*resp_put)(void *baton, int index, const unsigned char *der, apr_size_t len,
                             const rs_ocsp_result_t *res);
} rs_shared_ops_t;

/* Bytes of a segment for n certificates and an arena of responses. */
apr_size_t rs_shared_size(int n, apr_size_t arena);
/* Lays the segment out in mem (cleared, except the arena: untouched pages
 * cost nothing) and makes this process's handle on it, in p. ops is
 * copied; conf must outlive the handle. Children inherit the handle. */
rs_shared_t *rs_shared_init(void *mem, int n, apr_size_t arena, const rs_sched_conf_t *conf,
                            const rs_shared_ops_t *ops, apr_pool_t *p);
/* The responses, read by handshakes without the lock. */
rs_shm_staple_t *rs_shared_staples(const rs_shared_t *sh);

/* --- one certificate (index in the registry) --- */

/* A snapshot of the certificate's state; a fresh one (rs_state_init) if it
 * was never written or the lock failed. */
apr_status_t rs_shared_read(rs_shared_t *sh, int index, rs_state_t *st);

/* What rs_shared_claim came to. */
typedef enum {
    RS_CLAIM_TAKEN,           /* lease and fetch slot are the caller's: fetch */
    RS_CLAIM_NOT_DUE,         /* not due, or another child's lease is live */
    RS_CLAIM_SLOTS_FULL,      /* due, but every fetch slot of the server is busy */
    RS_CLAIM_RESPONDER_FULL,  /* due, but this responder has its share of them */
    RS_CLAIM_LOCK_FAILED
} rs_claim_e;

/* Take the certificate's fetch lease and one of the server's max fetch
 * slots for owner. Times in the state that no schedule could have made
 * (a clock step, a state file, another server) are bounded first
 * (rs_state_bound). *slot: the slot taken (RS_CLAIM_TAKEN). */
rs_claim_e rs_shared_claim(rs_shared_t *sh, int index, apr_uint64_t owner,
                           apr_uint32_t responder, int max, apr_time_t now, int *slot);

/* Give lease and slot (-1: none) back without an attempt, to look again
 * at until (another server of the fleet fetches it). */
void rs_shared_yield(rs_shared_t *sh, int index, apr_uint64_t owner, int slot,
                     apr_time_t until, apr_time_t now);

/* Time alone moved the certificate's alert on (expiring, expired): the
 * event to report, once per server, or NULL; *st is the state after. */
const char *rs_shared_alert(rs_shared_t *sh, int index, apr_time_t now, rs_state_t *st);

/* An admin asked for a fetch now (status page): 1 if it is due now, 0 if
 * one was asked for less than min_interval ago (rs_state_force). */
int rs_shared_refresh_now(rs_shared_t *sh, int index, apr_time_t now,
                          apr_interval_time_t min_interval);

/* Where an offered response comes from. */
typedef enum {
    RS_ORIGIN_FETCHED,   /* a child's fetch round, holding lease and slot */
    RS_ORIGIN_STARTUP,   /* the startup fetch, before any child serves */
    RS_ORIGIN_ADOPTED,   /* another server's, from the fleet cache */
    RS_ORIGIN_RESTORED   /* from the store, at startup */
} rs_origin_e;

typedef struct {
    rs_origin_e origin;
    int index;
    apr_uint64_t owner;        /* the offering child's lease token (0: the parent) */
    int slot;                  /* the fetch slot it holds, -1: none */
    apr_time_t now;
    double jitter;             /* in [-1, 1], for the next renewal */
    /* the verified response (der NULL: none, for a restore or a round that
     * brought nothing verified) */
    const unsigned char *der;
    apr_size_t len;
    rs_ocsp_result_t res;
    /* FETCHED, STARTUP: the round's attempts; the last one's verdict and
     * result become NOT_NEWER when the replace rule refuses it */
    rs_attempt_t *attempts;
    int nattempts;
    apr_interval_time_t took;  /* FETCHED: the round's duration (histogram) */
    const rs_state_t *stored;  /* RESTORED: the state read from the store, or NULL */
} rs_offer_t;

typedef struct {
    int installed;             /* it is now the response every child staples */
    int not_newer;             /* verified, but the replace rule kept what is held */
    int no_room;               /* newer, but no room for it in the shared memory */
    int written;               /* the record was written (a restore may have nothing) */
    const char *alert;         /* FETCHED: the alert event to report, or NULL */
    rs_state_t st;             /* the state after */
} rs_outcome_t;

/* A response, or a round that brought none (FETCHED, STARTUP with der
 * NULL), is applied to the record under the lock: the replace rule, the
 * copy into shared memory, the state transition of its origin, the due
 * time, the alert transition (FETCHED) and the slot release. */
apr_status_t rs_shared_offer(rs_shared_t *sh, const rs_offer_t *offer, rs_outcome_t *out);

/* --- the server --- */

/* The child that schedules for the server: 1 if owner is (still, or now)
 * the leader, its term renewed until now + term. A child that is not
 * leading reads two words without the lock. */
int rs_shared_lead(rs_shared_t *sh, apr_uint64_t owner, apr_time_t now,
                   apr_interval_time_t term);
/* A stopping leader hands the role on to the next child that wakes. */
void rs_shared_resign(rs_shared_t *sh, apr_uint64_t owner);
/* Until when the current leader holds the role (read without the lock). */
apr_time_t rs_shared_leader_until(const rs_shared_t *sh);

/* Up to max certificates due at now, into out (indexes); how many. */
int rs_shared_due(rs_shared_t *sh, apr_time_t now, int *out, int max);
/* The earliest due time (read without the lock: a hint for sleeping). */
apr_time_t rs_shared_next_due(const rs_shared_t *sh);

/* The server's view of the store: the result of the last write or probe;
 * returns whether it was failing before (a change is logged once). */
int rs_shared_store_result(rs_shared_t *sh, int failing, const char *reason);
/* 1 if the store is failing (reason copied to err). */
int rs_shared_store_health(rs_shared_t *sh, char *err, apr_size_t errlen);

/* For the metrics: the fetch-duration histogram and the slots in use. */
void rs_shared_metrics(rs_shared_t *sh, apr_time_t now, rs_hist_t *hist, int *slots_in_use);

/* The fleet cache's state as the server sees it: words read and written
 * atomically by the fleet glue (mod_resilient_stapling_fleet.c). */
typedef struct {
    apr_uint32_t down;          /* the fleet cache failed; logged once */
    apr_uint32_t seen;          /* fleet generation scanned last */
    apr_uint32_t bogus_lease;   /* a lease that is not plausible was logged */
} rs_shared_fleet_t;
rs_shared_fleet_t *rs_shared_fleet(rs_shared_t *sh);
/* A record of the certificate in the fleet cache (which: 0 response,
 * 1 lease) with this digest (0: a good one): 1 if it differs from the one
 * noted last, so that a bad record is logged once per key and change. */
int rs_shared_fleet_note(rs_shared_t *sh, int index, int which, apr_uint32_t digest);
/* The fleet cache was found back at now. */
void rs_shared_fleet_back(rs_shared_t *sh, apr_time_t now);
/* 1 if it was found back less than grace ago. */
int rs_shared_fleet_back_lately(rs_shared_t *sh, apr_time_t now, apr_interval_time_t grace);
/* 1 for the one child that is to compare everything with the fleet cache
 * now (at most every `every`). */
int rs_shared_fleet_audit(rs_shared_t *sh, apr_time_t now, apr_interval_time_t every);

#endif
