/* mod_resilient_stapling.h: what the httpd glue files share.
 * The Apache-free core is in rs_*.h; this is only configuration, the
 * per-generation registry and the refresher's entry points.
 */
#ifndef MOD_RESILIENT_STAPLING_H
#define MOD_RESILIENT_STAPLING_H

#include <httpd.h>
#include <http_config.h>
#include <ap_socache.h>
#include <apr_global_mutex.h>
#include <apr_hash.h>
#include <apr_shm.h>
#include <apr_thread_pool.h>

#include "rs_metrics.h"
#include "rs_fetch.h"
#include "rs_ocsp.h"
#include "rs_sched.h"
#include "rs_shared.h"
#include "rs_shm_staple.h"

extern module AP_MODULE_DECLARE_DATA resilient_stapling_module;

#define RS_MUTEX_TYPE "resilient-stapling"

/* What an admin gets without configuring anything (docs/DESIGN.md section 4). */
#define RS_DEFAULT_RENEW_WINDOW_PCT 50
#define RS_DEFAULT_TIMEOUT apr_time_from_sec(10)
#define RS_DEFAULT_RETRY_MIN apr_time_from_sec(60)
#define RS_DEFAULT_RETRY_MAX apr_time_from_sec(3600)
#define RS_DEFAULT_SKEW apr_time_from_sec(300)
#define RS_DEFAULT_MAX_FETCHES 8
#define RS_DEFAULT_STARTUP_WAIT apr_time_from_sec(5)
#define RS_DEFAULT_STORE "state/resilient_stapling" /* under ServerRoot */

/* Per server (vhost) configuration. Global-only values are read from the
 * main server's record; vhosts inherit "enabled" and "force_url". */
typedef struct {
    int enabled;                  /* -1: unset (inherits) */
    const char *force_url;
    /* global only */
    const char *cache_provider;   /* NULL: shmcb sized for the certificates */
    const char *cache_args;
    int renew_window_pct;
    apr_interval_time_t timeout;
    apr_interval_time_t retry_min, retry_max;
    apr_interval_time_t skew;
    const char *proxy;
    int max_fetches;
    const char *store;            /* NULL: default; "none": off */
    const char *notify_cmd;
    int method;                   /* rs_fetch_mode_e, -1: unset */
    apr_interval_time_t startup_wait;
} rs_srv_conf_t;

void *rs_create_srv_conf(apr_pool_t *p, server_rec *s);
void *rs_merge_srv_conf(apr_pool_t *p, void *base, void *add);
extern const command_rec rs_cmds[];

/* One certificate this generation staples. */
typedef struct {
    int index;                       /* in the registry, the same in every child */
    rs_cert_t *cert;
    char id_hex[2 * RS_ID_LEN + 1];
    const char *url;                 /* ForceURL or the certificate's AIA */
    apr_uint32_t responder;          /* rs_responder_key(url): fetch slots per responder */
    const char *vhosts;              /* names of the vhosts that use it */
    unsigned char *req_der;          /* OCSP request, built once */
    apr_size_t req_len;
    /* Read-only in the children: a child that wrote here would copy the
     * pages of the whole registry (copy-on-write). What a child changes
     * lives in its refresher, what the server shares in rs_shared.h. */
} rs_entry_t;

/* Everything of one configuration generation. Lives in pconf: modules are
 * unloaded on restart, so nothing here outlives it. */
typedef struct {
    apr_pool_t *pool;
    server_rec *s;                   /* the main server */
    apr_hash_t *by_id;               /* id -> rs_entry_t, read-only after config */
    apr_hash_t *issuers;             /* one parsed X509 per issuer (rs_cert_from_pem) */
    apr_array_header_t *entries;     /* rs_entry_t * */
    const char *cache_desc;          /* where the responses are shared (the log, status) */
    const ap_socache_provider_t *fleet;  /* memcache/redis shared by a fleet, or NULL */
    ap_socache_instance_t *fleet_inst;
    const char *fleet_desc;
    apr_global_mutex_t *mutex;
    apr_shm_t *shm;
    rs_shared_t *shared;             /* the segment: every certificate's record */
    rs_shm_staple_t *staples;        /* in it: the responses handshakes read */
    /* the main server's configuration with defaults applied */
    rs_sched_conf_t sched;
    apr_interval_time_t timeout;
    apr_interval_time_t skew;
    int max_fetches;
    const char *proxy;
    const char *store_dir;           /* NULL: no persistent store */
    const char *notify_cmd;
    rs_fetch_mode_e method;          /* ResilientStaplingMethod */
    apr_interval_time_t startup_wait;/* ResilientStaplingStartupWait, 0: off */
    apr_array_header_t *skipped;     /* rs_skipped_t: primed, but not stapled */
} rs_registry_t;

/* A certificate mod_ssl primed that has no responder URL: listed on the
 * status page as "no-ocsp-url". */
typedef struct {
    const char *subject;
    const char *serial;
    const char *issuer;
    const char *vhost;
    int must_staple;
} rs_skipped_t;

/* mod_resilient_stapling_cache.c: the shared memory segment (rs_shared.h)
 * and the persistent store. */
/* The segment of this generation, with the global mutex as its lock. */
int rs_segment_create(rs_registry_t *reg, apr_pool_t *pconf, server_rec *s);

/* ... and the persistent store: read back at startup (parent, before any
 * child), written by the child that fetched (no lock held). */
int rs_store_restore(rs_registry_t *reg, server_rec *s, apr_pool_t *ptemp);
void rs_store_write(rs_registry_t *reg, server_rec *s, const rs_entry_t *e,
                    const unsigned char *der, apr_size_t len, apr_pool_t *p);
void rs_store_write_state(rs_registry_t *reg, server_rec *s, const rs_entry_t *e,
                          const rs_state_t *st, apr_pool_t *p);
/* At child start, as the children's user: a store that cannot be written
 * loses every staple at the next restart, so it is found out at once. */
void rs_store_check(rs_registry_t *reg, server_rec *s, apr_pool_t *p);
/* 1 if the store is failing (reason copied to err), 0 if it works or is off. */
int rs_store_health(rs_registry_t *reg, char *err, apr_size_t errlen);

/* mod_resilient_stapling_fleet.c: the cache a fleet of servers shares
 * (memcache, redis). Never called with the global mutex held, never from
 * the parent (connections would be inherited by every child). Every call
 * returns within 1.5 s whatever the cache does (rs_fleet_io.h). A failing or
 * unanswered call marks the fleet cache down for this child (logged once
 * per server), and calls fail at once while it is down (except the
 * probe); rs_fleet_get returns APR_NOTFOUND for a missing record and
 * APR_ENOSPC for one larger than cap (bad content, the cache works). */
typedef struct rs_fleet_t rs_fleet_t;  /* one child's calls of the fleet cache */
/* post_config chose the fleet's provider: its instance, errors logged
 * (RS0002, RS0003). */
int rs_fleet_create(rs_registry_t *reg, const ap_socache_provider_t *provider, const char *name,
                    const char *args, apr_pool_t *pconf, apr_pool_t *ptemp, server_rec *s);
/* In the child, before any of its threads calls the cache: this child's
 * side of it (its I/O thread). */
rs_fleet_t *rs_fleet_child_init(rs_registry_t *reg, server_rec *s);
/* The child exits: calls fail at once (APR_EOF), none is waited for. */
void rs_fleet_stop(rs_fleet_t *f);
int rs_fleet_down(rs_fleet_t *f);             /* for this child: do not call it */
int rs_fleet_server_down(rs_registry_t *reg); /* as logged for the server */
apr_status_t rs_fleet_get(rs_fleet_t *f, char kind, const rs_entry_t *e, unsigned char *buf,
                          apr_size_t cap, apr_size_t *plen);
apr_status_t rs_fleet_put(rs_fleet_t *f, char kind, const rs_entry_t *e,
                          const unsigned char *data, apr_size_t len, apr_time_t expiry);
void rs_fleet_remove(rs_fleet_t *f, char kind, const rs_entry_t *e);
/* The fleet's generation: 0 if none; a new one after a response changed. */
apr_status_t rs_fleet_generation(rs_fleet_t *f, apr_uint32_t *gen);
void rs_fleet_bump(rs_fleet_t *f);
/* Is a fleet cache that failed usable again? A write read back. */
apr_status_t rs_fleet_probe(rs_fleet_t *f);
/* 1 if this child should probe the fleet cache it found down (every 5 s,
 * never while a call of this child still hangs). */
int rs_fleet_claim_probe(rs_fleet_t *f, apr_time_t now);
/* A probe worked: this child calls the cache again; the first child of the
 * server to get here logs it (RS0602) and has everything compared. */
void rs_fleet_rejoin(rs_fleet_t *f);
/* A bad record (kind RS_KEY_RESPONSE or RS_KEY_LEASE) of e in the fleet
 * cache, by digest: 1 if the server has not logged this one yet, so that it
 * is logged once per key and change, not at every read. */
int rs_fleet_note_bad(rs_registry_t *reg, const rs_entry_t *e, char kind, apr_uint32_t digest);
/* 1 the first time a lease that is not plausible is found on this server. */
int rs_fleet_note_bogus_lease(rs_registry_t *reg);

/* mod_resilient_stapling_fleet_client.c: this child's steps with the fleet
 * (the refresher's side of it; made in the child, used by its threads). */
typedef struct rs_fleet_client_t rs_fleet_client_t;
rs_fleet_client_t *rs_fleet_client_make(rs_registry_t *reg, server_rec *s, apr_uint64_t owner,
                                        rs_cancel_fn *stopping, void *baton, apr_pool_t *pool);
/* The child stops: no fleet call is waited for (rs_fleet_stop). */
void rs_fleet_client_stop(rs_fleet_client_t *c);
/* Before fetching a due certificate (lease and fetch slot held): take the
 * fleet's newer response, wait while another server fetches, or take the
 * fleet lease (rs_fleet_lease.h). RS_FLEET_FETCH: fetch (also whenever the
 * fleet cache fails: the server fends for itself); otherwise lease and
 * slot are given back and *until is when to look again. */
rs_fleet_action_e rs_fleet_before_fetch(rs_fleet_client_t *c, rs_entry_t *e, int slot,
                                        apr_time_t *until, apr_pool_t *p);
/* After this server fetched: publish what became the server's response, or
 * hold the fleet lease a while after a failure. */
void rs_fleet_after_fetch(rs_fleet_client_t *c, rs_entry_t *e, int published,
                          const unsigned char *der, apr_size_t len, apr_time_t next_update,
                          int failed, apr_time_t retry_at);
/* The leader's poll of the fleet's generation (queued on workers, one at a
 * time), and when the scheduler has to wake for the next one. */
void rs_fleet_tick(rs_fleet_client_t *c, apr_thread_pool_t *workers, apr_time_t now);
apr_time_t rs_fleet_wake(const rs_fleet_client_t *c, apr_time_t now, apr_time_t wake);

/* mod_resilient_stapling.c: "2026-11-30 06:00:00 UTC" ("never" for 0), in p */
const char *rs_fmt_time(apr_pool_t *p, apr_time_t t);
/* uniform in [-1, 1]: each child's own spread of its renewals */
double rs_jitter(void);

/* mod_resilient_stapling.c: a pool for the module's own threads (the
 * refresher, its workers, the notifier), below pchild but with an allocator
 * of its own that has a mutex. Prefork creates pchild's allocator without
 * one (its children have one thread), and every connection's pool shares
 * it: a module thread allocating from anything below pchild corrupts the
 * handshake's pools. Destroyed with pchild, after the threads are joined. */
apr_status_t rs_thread_pool_create(apr_pool_t **pp, apr_pool_t *pchild);

/* mod_resilient_stapling_notify.c */
typedef struct rs_notifier_t rs_notifier_t;
apr_status_t rs_notifier_start(rs_notifier_t **pn, const char *cmd, server_rec *s,
                               apr_pool_t *pchild);
/* Never blocks: queued for the notifier thread. */
void rs_notify(rs_notifier_t *n, const rs_entry_t *e, const char *event, const char *state,
               const char *reason);

/* mod_resilient_stapling_startup.c: in post_config, after the restore:
 * certificates without a valid response are fetched (bounded by
 * ResilientStaplingStartupWait) before the children serve them. */
void rs_startup_fetch(rs_registry_t *reg, server_rec *s, apr_pool_t *ptemp);

/* mod_resilient_stapling_refresh.c */
/* The log line of one request of a round (RS0201, RS0202, RS0203):
 * stapled_until is when what is stapled meanwhile expires, when a phrase
 * appended to the line ("" or " (before serving it)"). */
void rs_log_attempt(server_rec *s, const rs_entry_t *e, const rs_attempt_t *a, int last,
                    const rs_state_t *st, apr_time_t stapled_until, const char *when,
                    apr_time_t now, apr_pool_t *p);
apr_status_t rs_refresher_start(rs_registry_t *reg, apr_pool_t *pchild, server_rec *s,
                                rs_notifier_t *notifier);

/* mod_resilient_stapling_status.c */
int rs_status_handler(request_rec *r);
int rs_status_hook(request_rec *r, int flags);
/* mod_resilient_stapling_status_refresh.c: POST ?refresh=<id>|all */
int rs_status_refresh(request_rec *r, rs_registry_t *reg, apr_time_t now);
extern rs_registry_t *rs_current_registry(void);

#endif
