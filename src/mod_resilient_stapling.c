/* mod_resilient_stapling.c: module record, hooks and lifecycle.
 *
 * mod_ssl primes certificates in the parent (inside its post_config) and
 * asks for a response in every handshake. Priming builds this generation's
 * registry; our own post_config, ordered after mod_ssl's, creates the
 * shared memory sized for what was primed; each child starts a refresher
 * (one of them schedules for all); the handshake only copies the response
 * out of shared memory, without a lock (rs_shm_staple.h).
 */
#include <stdlib.h>
#include <string.h>

#include <apr_allocator.h>
#include <apr_strings.h>
#include <apr_thread_mutex.h>
#include <httpd.h>
#include <http_config.h>
#include <http_core.h>
#include <http_log.h>
#include <http_main.h>
#include <http_ssl.h>
#include <ap_mpm.h>
#include <ap_provider.h>
#include <mpm_common.h>
#include <util_mutex.h>
#include <mod_status.h>

#include "mod_resilient_stapling.h"

/* A lease outlives the longest fetch by this much before another child may
 * assume its holder died. */
#define LEASE_GRACE apr_time_from_sec(10)

/* This generation's registry. Reset in pre_config: the module is reloaded
 * on every restart, so nothing in it may come from an earlier generation. */
static rs_registry_t *registry;

rs_registry_t *rs_current_registry(void)
{
    return registry;
}

static rs_srv_conf_t *srv_conf(server_rec *s)
{
    return ap_get_module_config(s->module_config, &resilient_stapling_module);
}

static int rs_pre_config(apr_pool_t *pconf, apr_pool_t *plog, apr_pool_t *ptemp)
{
    (void)plog;
    (void)ptemp;
    registry = apr_pcalloc(pconf, sizeof(*registry));
    registry->pool = pconf;
    registry->by_id = apr_hash_make(pconf);
    registry->issuers = apr_hash_make(pconf);
    registry->skipped = apr_array_make(pconf, 4, sizeof(rs_skipped_t));
    registry->entries = apr_array_make(pconf, 16, sizeof(rs_entry_t *));
    return ap_mutex_register(pconf, RS_MUTEX_TYPE, NULL, APR_LOCK_DEFAULT, 0);
}

static const char *vhost_name(server_rec *s)
{
    return s->server_hostname ? s->server_hostname : "(unnamed)";
}

/* Called by mod_ssl for each certificate of each vhost, with the leaf and
 * its issuer as PEM. OK means: we staple it, mod_ssl must not. */
static int rs_ocsp_prime(server_rec *s, apr_pool_t *p, const char *id, apr_size_t id_len,
                         const char *pem)
{
    rs_srv_conf_t *sc = srv_conf(s);
    rs_entry_t *e;
    rs_cert_t *cert;
    char err[256];
    apr_status_t rv;

    if (sc->enabled != 1 || !registry || id_len != RS_ID_LEN)
        return DECLINED;
    /* At startup httpd reads the configuration twice; the first reading
     * only checks it: nothing primed in it is used (rs_post_config returns
     * before the registry is), and the second primes every certificate
     * again. Parsing each one twice (~0.15 ms each with OpenSSL 3) cost
     * 1.5 s of startup at 10,000 certificates. (A configuration test,
     * apache2 -t, ends before post_config: mod_ssl primes nothing then.) */
    if (ap_state_query(AP_SQ_MAIN_STATE) == AP_SQ_MS_CREATE_PRE_CONFIG)
        return OK;

    e = apr_hash_get(registry->by_id, id, RS_ID_LEN);
    if (e) {
        /* The same certificate in another vhost: fetched once, served to both. */
        e->vhosts = apr_pstrcat(registry->pool, e->vhosts, " ", vhost_name(s), NULL);
        return OK;
    }

    rv = rs_cert_from_pem(&cert, registry->pool, pem, registry->issuers, err, sizeof(err));
    if (rv == APR_ENOENT) {
        ap_log_error(APLOG_MARK, APLOG_INFO, 0, s,
                     "RS0101: certificate of %s has no issuer certificate configured, "
                     "not stapled", vhost_name(s));
        return DECLINED;
    }
    if (rv != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_WARNING, rv, s,
                     "RS0102: cannot read certificate of %s (%s), not stapled",
                     vhost_name(s), err);
        return DECLINED;
    }
    if (memcmp(cert->id, id, RS_ID_LEN) != 0) {
        ap_log_error(APLOG_MARK, APLOG_WARNING, 0, s,
                     "RS0103: certificate id from mod_ssl does not match the certificate "
                     "of %s, not stapled", vhost_name(s));
        return DECLINED;
    }
    if (!sc->force_url && !cert->aia_url) {
        /* Common since CAs started dropping OCSP (2025): nothing to do, but
         * the status page lists it. */
        rs_skipped_t *sk = apr_array_push(registry->skipped);
        sk->subject = cert->subject;
        sk->serial = cert->serial;
        sk->issuer = cert->issuer_name;
        sk->vhost = vhost_name(s);
        sk->must_staple = cert->must_staple;
        ap_log_error(APLOG_MARK, APLOG_INFO, 0, s,
                     "RS0104: certificate %s of %s has no http:// OCSP responder URL and "
                     "no ResilientStaplingForceURL is set, not stapled",
                     cert->subject, vhost_name(s));
        return DECLINED;
    }

    e = apr_pcalloc(registry->pool, sizeof(*e));
    e->cert = cert;
    rs_id_hex(cert->id, e->id_hex);
    e->url = sc->force_url ? sc->force_url : cert->aia_url;
    e->responder = rs_responder_key(e->url);
    e->vhosts = vhost_name(s);
    if (rs_ocsp_request_der(cert, registry->pool, &e->req_der, &e->req_len) != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_WARNING, 0, s,
                     "RS0105: cannot build an OCSP request for %s, not stapled",
                     cert->subject);
        return DECLINED;
    }
    apr_hash_set(registry->by_id, cert->id, RS_ID_LEN, e);
    e->index = registry->entries->nelts;
    APR_ARRAY_PUSH(registry->entries, rs_entry_t *) = e;
    ap_log_error(APLOG_MARK, APLOG_DEBUG, 0, s,
                 "RS0106: stapling %s (serial %s, id %s) for %s from %s%s",
                 cert->subject, cert->serial, e->id_hex, vhost_name(s), e->url,
                 cert->must_staple ? ", Must-Staple" : "");
    (void)p;
    return OK;
}

/* Debian's multi-instance setup (apache2@NAME: APACHE_CONFDIR is
 * /etc/apache2-NAME) runs several servers from copies of one
 * configuration, store line included. Each gets a store of its own
 * ("<store>-NAME"): a shared one would have every instance remove the
 * others' files at startup as no longer configured. */
static const char *instance_store(apr_pool_t *p, const char *dir)
{
    const char *confdir = getenv("APACHE_CONFDIR"), *base;

    if (!dir || !confdir)
        return dir;
    base = strrchr(confdir, '/');
    base = base ? base + 1 : confdir;
    if (strncmp(base, "apache2-", 8) != 0 || !base[8] || strchr(base + 8, '/'))
        return dir;
    return apr_pstrcat(p, dir, "-", base + 8, NULL);
}

static void resolve_conf(rs_registry_t *reg, const rs_srv_conf_t *g)
{
    reg->sched.renew_window_pct =
        g->renew_window_pct > 0 ? g->renew_window_pct : RS_DEFAULT_RENEW_WINDOW_PCT;
    reg->sched.retry_min = g->retry_min >= 0 ? g->retry_min : RS_DEFAULT_RETRY_MIN;
    reg->sched.retry_max = g->retry_max >= 0 ? g->retry_max : RS_DEFAULT_RETRY_MAX;
    if (reg->sched.retry_max < reg->sched.retry_min)
        reg->sched.retry_max = reg->sched.retry_min;
    reg->timeout = g->timeout >= 0 ? g->timeout : RS_DEFAULT_TIMEOUT;
    reg->skew = g->skew >= 0 ? g->skew : RS_DEFAULT_SKEW;
    reg->max_fetches = g->max_fetches > 0 ? g->max_fetches : RS_DEFAULT_MAX_FETCHES;
    reg->proxy = g->proxy;
    reg->notify_cmd = g->notify_cmd;
    reg->method = g->method >= 0 ? (rs_fetch_mode_e)g->method : RS_FETCH_AUTO;
    reg->startup_wait = g->startup_wait >= 0 ? g->startup_wait : RS_DEFAULT_STARTUP_WAIT;
    /* a round of auto may make two requests, each with the full timeout */
    reg->sched.lease = reg->timeout * (reg->method == RS_FETCH_AUTO ? 2 : 1) + LEASE_GRACE;
    if (!g->store)
        reg->store_dir = instance_store(reg->pool,
                                        ap_server_root_relative(reg->pool, RS_DEFAULT_STORE));
    else if (strcasecmp(g->store, "none") != 0)
        reg->store_dir = instance_store(reg->pool, ap_server_root_relative(reg->pool, g->store));
}

/* ResilientStaplingCache: the children share responses in shared memory
 * whatever is configured; only a cache other servers can reach (memcache,
 * redis) is used, as the fleet's. */
static int choose_cache(rs_registry_t *reg, const rs_srv_conf_t *g, apr_pool_t *pconf,
                        apr_pool_t *ptemp, server_rec *s)
{
    const char *name = g->cache_provider;
    const ap_socache_provider_t *provider;

    if (!name)
        return OK;
    provider = ap_lookup_provider(AP_SOCACHE_PROVIDER_GROUP, name, AP_SOCACHE_PROVIDER_VERSION);
    if (!provider) {
        ap_log_error(APLOG_MARK, APLOG_EMERG, 0, s,
                     "RS0001: ResilientStaplingCache: provider '%s' is not available "
                     "(LoadModule socache_%s_module?)", name, name);
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    /* memcache, redis: a cache other servers can share */
    if (!(provider->flags & AP_SOCACHE_FLAG_NOTMPSAFE))
        return rs_fleet_create(reg, provider, name, g->cache_args, pconf, ptemp, s);
    /* shmcb, dbm...: what they did, the shared memory does */
    ap_log_error(APLOG_MARK, APLOG_NOTICE, 0, s,
                 "RS0012: ResilientStaplingCache %s%s%s is not needed and not used: the "
                 "children of this server share the responses in shared memory sized for "
                 "the certificates", name, g->cache_args ? ":" : "",
                 g->cache_args ? g->cache_args : "");
    return OK;
}

static int rs_post_config(apr_pool_t *pconf, apr_pool_t *plog, apr_pool_t *ptemp,
                          server_rec *s)
{
    apr_status_t rv;
    int rc, i;
    (void)plog;

    /* httpd reads its configuration twice at first start; the first round
     * only checks it. Shared resources are made in the round that runs. */
    if (ap_state_query(AP_SQ_MAIN_STATE) == AP_SQ_MS_CREATE_PRE_CONFIG)
        return OK;
    registry->s = s;
    resolve_conf(registry, srv_conf(s));
    if (registry->entries->nelts == 0) {
        ap_log_error(APLOG_MARK, APLOG_DEBUG, 0, s,
                     "RS0010: no certificates to staple in this configuration");
        return OK;
    }
    if ((rc = choose_cache(registry, srv_conf(s), pconf, ptemp, s)) != OK)
        return rc;
    rv = ap_global_mutex_create(&registry->mutex, NULL, RS_MUTEX_TYPE, NULL, s, pconf, 0);
    if (rv != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_EMERG, rv, s,
                     "RS0005: cannot create the %s mutex", RS_MUTEX_TYPE);
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    if ((rc = rs_segment_create(registry, pconf, s)) != OK)
        return rc;
    /* the handshake finds its slot by id in the segment (rs_ocsp_get_resp) */
    for (i = 0; i < registry->entries->nelts; i++) {
        const rs_entry_t *e = APR_ARRAY_IDX(registry->entries, i, rs_entry_t *);
        rs_shm_staple_set_id(registry->staples, e->index, e->cert->id);
    }
    /* before any child: the first handshake after a restart finds them */
    if ((rc = rs_store_restore(registry, s, ptemp)) != OK)
        return rc;
    /* new certificates (none stored, or replaced at this reload) */
    rs_startup_fetch(registry, s, ptemp);
    ap_log_error(APLOG_MARK, APLOG_INFO, 0, s,
                 "RS0006: stapling %d certificate(s), responses in %s%s%s, store %s",
                 registry->entries->nelts, registry->cache_desc,
                 registry->fleet ? ", fleet cache " : "",
                 registry->fleet ? registry->fleet_desc : "",
                 registry->store_dir ? registry->store_dir : "none");
    return OK;
}

const char *rs_fmt_time(apr_pool_t *p, apr_time_t t)
{
    apr_time_exp_t x;
    char buf[32];
    apr_size_t len;
    if (t == 0)
        return "never";
    apr_time_exp_gmt(&x, t);
    apr_strftime(buf, &len, sizeof(buf), "%Y-%m-%d %H:%M:%S UTC", &x);
    return apr_pstrdup(p, buf);
}

double rs_jitter(void)
{
    apr_uint32_t v = 0;
    apr_generate_random_bytes((unsigned char *)&v, sizeof(v));
    return (double)v / 4294967295.0 * 2.0 - 1.0;
}

apr_status_t rs_thread_pool_create(apr_pool_t **pp, apr_pool_t *pchild)
{
    apr_allocator_t *allocator;
    apr_thread_mutex_t *mutex;
    apr_status_t rv;

    if ((rv = apr_allocator_create(&allocator)) != APR_SUCCESS)
        return rv;
    if ((rv = apr_pool_create_ex(pp, pchild, NULL, allocator)) != APR_SUCCESS) {
        apr_allocator_destroy(allocator);
        return rv;
    }
    /* the pool owns the allocator: both go when pchild is destroyed */
    apr_allocator_owner_set(allocator, *pp);
    apr_pool_tag(*pp, "resilient_stapling_threads");
    if ((rv = apr_thread_mutex_create(&mutex, APR_THREAD_MUTEX_DEFAULT, *pp)) != APR_SUCCESS)
        return rv;
    apr_allocator_mutex_set(allocator, mutex);
    return APR_SUCCESS;
}

static void rs_child_init(apr_pool_t *pchild, server_rec *s)
{
    rs_notifier_t *notifier = NULL;
    apr_status_t rv;

    if (!registry || !registry->mutex)
        return;
    rv = apr_global_mutex_child_init(&registry->mutex,
                                     apr_global_mutex_lockfile(registry->mutex), pchild);
    if (rv != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, rv, s,
                     "RS0007: cannot attach to the %s mutex in this child, not stapling",
                     RS_MUTEX_TYPE);
        registry->mutex = NULL;
        return;
    }
    /* nothing per certificate here: the responses are the server's, in
     * shared memory, and the registry is not written in a child */
    rs_store_check(registry, s, pchild);
    if (registry->notify_cmd
        && (rv = rs_notifier_start(&notifier, registry->notify_cmd, s, pchild)) != APR_SUCCESS)
        ap_log_error(APLOG_MARK, APLOG_ERR, rv, s,
                     "RS0011: cannot start the notifier thread; ResilientStaplingNotifyCmd "
                     "will not run in this child");
    /* started after the notifier: its cleanup runs first (LIFO) */
    if ((rv = rs_refresher_start(registry, pchild, s, notifier)) != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, rv, s,
                     "RS0009: cannot start the refresher thread, nothing will be fetched "
                     "by this child");
    }
}

/* The handshake path (docs/DESIGN.md section 2, rule 1): the id looked up
 * and a bounded copy out of shared memory, without any lock
 * (rs_shm_staple.c; the id index there holds exactly the certificates of
 * registry->by_id). Returning OK for our certificates even when there is
 * nothing to staple keeps mod_ssl from fetching in the handshake. */
static int rs_ocsp_get_resp(server_rec *s, conn_rec *c, const char *id, apr_size_t id_len,
                            ap_ssl_ocsp_copy_resp *cb, void *userdata)
{
    int i;
    (void)c;

    if (!registry || !registry->staples || id_len != RS_ID_LEN
        || srv_conf(s)->enabled != 1)
        return DECLINED;
    if ((i = rs_shm_staple_find(registry->staples, (const unsigned char *)id)) < 0)
        return DECLINED;
    rs_shm_staple_serve(registry->staples, i, apr_time_now(), cb, userdata);
    return OK;
}

static void rs_register_hooks(apr_pool_t *p)
{
    /* after mod_ssl: it primes inside its post_config, we size the cache for that */
    static const char *const after_ssl[] = {"mod_ssl.c", NULL};
    (void)p;

    ap_hook_pre_config(rs_pre_config, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_post_config(rs_post_config, after_ssl, NULL, APR_HOOK_MIDDLE);
    ap_hook_child_init(rs_child_init, NULL, NULL, APR_HOOK_MIDDLE);
    /* FIRST: where ResilientStapling is on, we answer before mod_md's
     * MDStapling; where it is off we decline and mod_md/mod_ssl decide. */
    ap_hook_ssl_ocsp_prime_hook(rs_ocsp_prime, NULL, NULL, APR_HOOK_FIRST);
    ap_hook_ssl_ocsp_get_resp_hook(rs_ocsp_get_resp, NULL, NULL, APR_HOOK_FIRST);
    ap_hook_handler(rs_status_handler, NULL, NULL, APR_HOOK_MIDDLE);
    APR_OPTIONAL_HOOK(ap, status_hook, rs_status_hook, NULL, NULL, APR_HOOK_MIDDLE);
}

AP_DECLARE_MODULE(resilient_stapling) = {
    STANDARD20_MODULE_STUFF,
    NULL,               /* dir config */
    NULL,               /* merge dir config */
    rs_create_srv_conf,
    rs_merge_srv_conf,
    rs_cmds,
    rs_register_hooks,
#if defined(AP_MODULE_FLAG_ALWAYS_MERGE)
    AP_MODULE_FLAG_ALWAYS_MERGE
#endif
};
