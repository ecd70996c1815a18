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

#include "rs_fetch.h"
#include "rs_ocsp.h"
#include "rs_sched.h"
#include "rs_staple.h"

extern module AP_MODULE_DECLARE_DATA resilient_stapling_module;

#define RS_MUTEX_TYPE "resilient-stapling"

/* What an admin gets without configuring anything (DESIGN.md section 4). */
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
    /* child-local */
    rs_staple_t *staple;
    apr_time_t local_next;           /* when this child next looks at it; refresher lock */
    int in_flight;                   /* a worker is fetching it; refresher lock */
    int cache_lost;                  /* nothing here, and the cache lost the stored
                                        response: fetch for this child; refresher lock */
    apr_uint32_t seen_version;       /* rs_shared_t.version last synced; scheduler thread only */
    int alert_seen;                  /* rs_alert_e of this child's staple; scheduler thread only */
} rs_entry_t;

/* What the children of one server change often lives in a shared memory
 * segment, not in the cache: shmcb is a cyclic buffer, and records
 * rewritten at every attempt there push other, still valid records out.
 * The scheduling state and the slots are used under the global mutex; the
 * version counters are atomic, so a child sees cheaply what changed. */
typedef struct {
    apr_uint32_t version;            /* bumped when its stored response changes */
    apr_uint32_t present;            /* st was written */
    rs_state_t st;
    apr_time_t forced_at;            /* last refresh an admin asked for; mutex */
} rs_shared_entry_t;

typedef struct {
    apr_uint32_t generation;         /* bumped with any version */
    apr_uint32_t fleet_down;         /* the fleet cache failed; atomic, logged once */
    apr_uint32_t fleet_seen;         /* fleet generation scanned last; atomic */
    apr_uint32_t unused;
    apr_time_t fleet_back_at;        /* when it was found back; mutex */
    apr_time_t fleet_next_audit;     /* when the next full comparison is due; mutex */
    apr_uint32_t store_failing;      /* the last store write or probe failed; mutex */
    char store_error[RS_ERR_LEN];    /* why, for the status page; mutex */
    rs_slots_t slots;
    rs_shared_entry_t entry[];       /* by rs_entry_t.index */
} rs_shared_t;

/* Everything of one configuration generation. Lives in pconf: modules are
 * unloaded on restart, so nothing here outlives it. */
typedef struct {
    apr_pool_t *pool;
    server_rec *s;                   /* the main server */
    apr_hash_t *by_id;               /* id -> rs_entry_t, read-only after config */
    apr_hash_t *issuers;             /* one parsed X509 per issuer (rs_cert_from_pem) */
    apr_array_header_t *entries;     /* rs_entry_t * */
    const ap_socache_provider_t *cache;  /* this server's children (shmcb) */
    ap_socache_instance_t *cache_inst;
    const char *cache_desc;
    const ap_socache_provider_t *fleet;  /* memcache/redis shared by a fleet, or NULL */
    ap_socache_instance_t *fleet_inst;
    const char *fleet_desc;
    apr_global_mutex_t *mutex;
    apr_shm_t *shm;
    rs_shared_t *shared;
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

/* mod_resilient_stapling_cache.c: the shared cache (responses) and the
 * shared memory (state). The record functions are called with the global
 * mutex held. */
int rs_cache_create(rs_registry_t *reg, const rs_srv_conf_t *g, apr_pool_t *pconf,
                    apr_pool_t *ptemp, server_rec *s);
/* create + init of one socache instance, errors logged (RS0002, RS0003) */
int rs_socache_open(const ap_socache_provider_t *provider, const char *name, const char *args,
                    const char *ns, ap_socache_instance_t **inst, const char **desc,
                    apr_pool_t *pconf, apr_pool_t *ptemp, server_rec *s);
int rs_shared_create(rs_registry_t *reg, apr_pool_t *pconf, server_rec *s);
/* A certificate's scheduling state in shared memory: 1 if it was ever
 * written (otherwise *st is a fresh one). */
int rs_shared_state_get(rs_registry_t *reg, const rs_entry_t *e, rs_state_t *st);
void rs_shared_state_put(rs_registry_t *reg, const rs_entry_t *e, const rs_state_t *st);
apr_status_t rs_cache_resp_get(rs_registry_t *reg, server_rec *s, const rs_entry_t *e,
                               unsigned char *buf, apr_size_t cap, apr_size_t *plen,
                               apr_pool_t *p);
apr_status_t rs_cache_resp_put(rs_registry_t *reg, server_rec *s, const rs_entry_t *e,
                               const unsigned char *der, apr_size_t len, apr_time_t next_update,
                               apr_pool_t *p);
/* The shmcb size (ResilientStaplingCache shmcb:PATH(SIZE)) whose
 * subcaches hold a response of len bytes. */
apr_size_t rs_cache_size_for(apr_size_t len);
/* A response of this entry was stored: tell the other children. */
void rs_cache_changed(rs_registry_t *reg, const rs_entry_t *e);
/* An admin asked for a fetch now (status page): 1 if it is due now, 0 if
 * one was asked for less than min_interval ago. Takes the global mutex. */
int rs_shared_force(rs_registry_t *reg, const rs_entry_t *e, apr_time_t now,
                    apr_interval_time_t min_interval);

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
 * the parent (connections would be inherited by every child). A failing
 * call marks the fleet cache down for this child (logged once per server);
 * rs_fleet_get returns APR_NOTFOUND for a missing record. */
int rs_fleet_create(rs_registry_t *reg, const char *name, const char *args,
                    apr_pool_t *pconf, apr_pool_t *ptemp, server_rec *s);
int rs_fleet_down(rs_registry_t *reg);        /* for this child: do not call it */
int rs_fleet_server_down(rs_registry_t *reg); /* as logged for the server */
apr_status_t rs_fleet_get(rs_registry_t *reg, server_rec *s, char kind, const rs_entry_t *e,
                          unsigned char *buf, apr_size_t cap, apr_size_t *plen, apr_pool_t *p);
apr_status_t rs_fleet_put(rs_registry_t *reg, server_rec *s, char kind, const rs_entry_t *e,
                          const unsigned char *data, apr_size_t len, apr_time_t expiry,
                          apr_pool_t *p);
void rs_fleet_remove(rs_registry_t *reg, server_rec *s, char kind, const rs_entry_t *e,
                     apr_pool_t *p);
/* The fleet's generation: 0 if none; a new one after a response changed. */
apr_status_t rs_fleet_generation(rs_registry_t *reg, server_rec *s, apr_uint32_t *gen,
                                 apr_pool_t *p);
void rs_fleet_bump(rs_registry_t *reg, server_rec *s, apr_pool_t *p);
/* Is a fleet cache that failed usable again? A write read back. */
apr_status_t rs_fleet_probe(rs_registry_t *reg, server_rec *s, apr_pool_t *p);
/* Called by the scheduler: a call in flight that made no progress for a
 * while means the cache hangs (memcached never times out a read). */
void rs_fleet_watch(rs_registry_t *reg, server_rec *s, apr_time_t now);
/* 1 if this child should probe the fleet cache it found down (every 5 s,
 * never while a call of this child still hangs). */
int rs_fleet_claim_probe(rs_registry_t *reg, apr_time_t now);
/* A probe worked: this child calls the cache again; the first child of the
 * server to get here logs it (RS0602) and has everything compared. */
void rs_fleet_rejoin(rs_registry_t *reg, server_rec *s);

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
extern rs_registry_t *rs_current_registry(void);

#endif
