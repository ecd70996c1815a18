/* mod_resilient_stapling_cache.c: the shared cache (an ap_socache provider)
 * and the persistent store behind it.
 *
 * The cache holds, per certificate, the verified DER response and its
 * scheduling state (rs_record.h), plus a generation counter bumped whenever a
 * response changes. Callers of the record functions hold the global mutex.
 * At startup the store is read back into the fresh cache, each file
 * validated like a fetched response, before any child starts.
 */
#include <errno.h>
#include <unistd.h>

#include <apr_atomic.h>
#include <apr_strings.h>
#include <httpd.h>
#include <http_config.h>
#include <http_log.h>
#include <ap_provider.h>
#include <unixd.h>

#include "mod_resilient_stapling.h"
#include "rs_record.h"
#include "rs_store.h"

APLOG_USE_MODULE(resilient_stapling);

/* Shared cache bytes per certificate: a response with a delegated signer
 * chain (up to ~4 KiB), with room for shmcb's index and cyclic buffer. */
#define CACHE_BYTES_PER_CERT (8 * 1024)
#define CACHE_BYTES_BASE (128 * 1024)
/* Below this a shmcb evicts valid responses under normal renewal traffic. */
#define RS_MIN_BYTES_PER_CERT (4 * 1024)

static apr_status_t cache_destroy(void *data)
{
    rs_registry_t *reg = data;
    if (reg->cache_inst) {
        reg->cache->destroy(reg->cache_inst, reg->s);
        reg->cache_inst = NULL;
    }
    return APR_SUCCESS;
}

/* An admin-sized shmcb that cannot hold a response per certificate evicts
 * valid responses; children put them back (RS0222), but say so at startup. */
static void warn_if_small(rs_registry_t *reg, const char *name, const char *args,
                          server_rec *s)
{
    const char *open = args ? strrchr(args, '(') : NULL;
    apr_int64_t size, need = (apr_int64_t)reg->entries->nelts * RS_MIN_BYTES_PER_CERT;
    if (strcmp(name, "shmcb") != 0 || !open)
        return;
    size = apr_atoi64(open + 1);
    if (size > 0 && size < need)
        ap_log_error(APLOG_MARK, APLOG_WARNING, 0, s,
                     "RS0012: ResilientStaplingCache %s: %" APR_INT64_T_FMT " bytes is small for "
                     "%d certificates (at least %" APR_INT64_T_FMT " recommended): valid "
                     "responses will be evicted and put back by the children (RS0222)",
                     reg->cache_desc, size, reg->entries->nelts, need);
}

int rs_socache_open(const ap_socache_provider_t *provider, const char *name, const char *args,
                    const char *ns, ap_socache_instance_t **inst, const char **desc,
                    apr_pool_t *pconf, apr_pool_t *ptemp, server_rec *s)
{
    struct ap_socache_hints hints;
    const char *err;
    apr_status_t rv;

    *desc = apr_pstrcat(pconf, name, args ? ":" : "", args ? args : "", NULL);
    if ((err = provider->create(inst, args, ptemp, pconf)) != NULL) {
        ap_log_error(APLOG_MARK, APLOG_EMERG, 0, s, "RS0002: ResilientStaplingCache %s: %s",
                     *desc, err);
        *inst = NULL;
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    memset(&hints, 0, sizeof(hints));
    hints.avg_id_len = RS_KEY_LEN;
    hints.avg_obj_size = 1024; /* responses ~0.5-3 KiB */
    hints.expiry_interval = apr_time_from_sec(3600);
    if ((rv = provider->init(*inst, ns, &hints, s, pconf)) != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_EMERG, rv, s,
                     "RS0003: ResilientStaplingCache %s: cannot initialise the cache", *desc);
        *inst = NULL;
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    return OK;
}

int rs_cache_create(rs_registry_t *reg, const rs_srv_conf_t *g, apr_pool_t *pconf,
                    apr_pool_t *ptemp, server_rec *s)
{
    const char *name = g->cache_provider ? g->cache_provider : "shmcb";
    const char *args = g->cache_args;
    int rc;

    reg->cache = ap_lookup_provider(AP_SOCACHE_PROVIDER_GROUP, name,
                                    AP_SOCACHE_PROVIDER_VERSION);
    if (reg->cache && !(reg->cache->flags & AP_SOCACHE_FLAG_NOTMPSAFE)) {
        /* memcache, redis: a cache other servers can share. This server's
         * children still share through a shmcb of their own, so that the
         * fleet cache failing does not make each child fetch for itself. */
        if ((rc = rs_fleet_create(reg, name, args, pconf, ptemp, s)) != OK)
            return rc;
        name = "shmcb";
        reg->cache = ap_lookup_provider(AP_SOCACHE_PROVIDER_GROUP, name,
                                        AP_SOCACHE_PROVIDER_VERSION);
        args = NULL;
    }
    if (!reg->cache) {
        ap_log_error(APLOG_MARK, APLOG_EMERG, 0, s,
                     "RS0001: ResilientStaplingCache: provider '%s' is not available "
                     "(LoadModule socache_%s_module?)", name, name);
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    if (!args && !strcmp(name, "shmcb")) {
        apr_size_t size = CACHE_BYTES_BASE
                          + (apr_size_t)reg->entries->nelts * CACHE_BYTES_PER_CERT;
        args = apr_psprintf(pconf, "%s(%" APR_SIZE_T_FMT ")",
                            ap_runtime_dir_relative(pconf, "resilient_stapling_cache"), size);
    }
    if ((rc = rs_socache_open(reg->cache, name, args, "resilient-stapling", &reg->cache_inst,
                              &reg->cache_desc, pconf, ptemp, s)) != OK)
        return rc;
    apr_pool_cleanup_register(pconf, reg, cache_destroy, apr_pool_cleanup_null);
    warn_if_small(reg, name, args, s);
    return OK;
}

int rs_shared_state_get(rs_registry_t *reg, const rs_entry_t *e, rs_state_t *st)
{
    const rs_shared_entry_t *se = &reg->shared->entry[e->index];
    if (!se->present) {
        rs_state_init(st);
        return 0;
    }
    *st = se->st;
    return 1;
}

void rs_shared_state_put(rs_registry_t *reg, const rs_entry_t *e, const rs_state_t *st)
{
    rs_shared_entry_t *se = &reg->shared->entry[e->index];
    se->st = *st;
    se->present = 1;
}

apr_status_t rs_cache_resp_get(rs_registry_t *reg, server_rec *s, const rs_entry_t *e,
                               unsigned char *buf, apr_size_t cap, apr_size_t *plen,
                               apr_pool_t *p)
{
    unsigned char key[RS_KEY_LEN];
    unsigned int len = (unsigned int)cap;
    apr_status_t rv;
    rs_record_key(key, RS_KEY_RESPONSE, e->cert->id);
    rv = reg->cache->retrieve(reg->cache_inst, s, key, RS_KEY_LEN, buf, &len, p);
    *plen = len;
    return rv;
}

apr_status_t rs_cache_resp_put(rs_registry_t *reg, server_rec *s, const rs_entry_t *e,
                               const unsigned char *der, apr_size_t len, apr_time_t next_update,
                               apr_pool_t *p)
{
    unsigned char key[RS_KEY_LEN];
    rs_record_key(key, RS_KEY_RESPONSE, e->cert->id);
    /* the cache drops it at nextUpdate: an expired response is worth nothing */
    return reg->cache->store(reg->cache_inst, s, key, RS_KEY_LEN, next_update,
                             (unsigned char *)der, (unsigned int)len, p);
}

/* shmcb splits its segment into subcaches (mod_socache_shmcb's init: as
 * many as keep two index slots per subcache squared, at most 256) and an
 * object must fit in one subcache's data area: the same sums, doubled for
 * the index and the cyclic buffer's wrap. */
apr_size_t rs_cache_size_for(apr_size_t len)
{
    apr_size_t size = CACHE_BYTES_BASE;
    for (;;) {
        apr_size_t num_idx = size / (1024 + RS_KEY_LEN), n = 256;
        while (n > 1 && num_idx / n < 2 * n)
            n /= 2;
        if (size / n >= 2 * len || size >= ((apr_size_t)1 << 40))
            return size;
        size *= 2;
    }
}

void rs_cache_changed(rs_registry_t *reg, const rs_entry_t *e)
{
    apr_atomic_inc32(&reg->shared->entry[e->index].version);
    apr_atomic_inc32(&reg->shared->generation);
}

int rs_shared_create(rs_registry_t *reg, apr_pool_t *pconf, server_rec *s)
{
    apr_size_t size = sizeof(rs_shared_t)
                      + sizeof(rs_shared_entry_t) * (apr_size_t)reg->entries->nelts;
    /* anonymous: inherited by the children of this generation only */
    apr_status_t rv = apr_shm_create(&reg->shm, size, NULL, pconf);
    if (rv != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_EMERG, rv, s,
                     "RS0004: cannot create %" APR_SIZE_T_FMT " bytes of shared memory", size);
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    reg->shared = apr_shm_baseaddr_get(reg->shm);
    memset(reg->shared, 0, size);
    return OK;
}

int rs_shared_force(rs_registry_t *reg, const rs_entry_t *e, apr_time_t now,
                    apr_interval_time_t min_interval)
{
    rs_state_t st;
    int forced;

    if (apr_global_mutex_lock(reg->mutex) != APR_SUCCESS)
        return 0;
    rs_shared_state_get(reg, e, &st);
    forced = rs_state_force(&st, now, &reg->shared->entry[e->index].forced_at, min_interval);
    if (forced) {
        rs_shared_state_put(reg, e, &st);
        rs_cache_changed(reg, e);
    }
    apr_global_mutex_unlock(reg->mutex);
    return forced;
}

/* --- the persistent store --- */

/* Restore one certificate's response and state from disk into the cache.
 * The response is validated like a fetched one; the state brings back the
 * counters, the last error and the backoff, never a lease. */
static void restore_one(rs_registry_t *reg, server_rec *s, rs_entry_t *e, apr_time_t now,
                        apr_pool_t *p)
{
    unsigned char *der, *raw;
    apr_size_t len, rawlen;
    rs_ocsp_result_t res;
    rs_state_t st;
    int have_resp = 0;
    apr_status_t rv = rs_store_load(reg->store_dir, e->cert->id, RS_STORE_RESPONSE, p, &der,
                                    &len);

    if (rv == APR_SUCCESS)
        rs_ocsp_check(e->cert, der, len, now, reg->skew, &res);
    if (rv != APR_ENOENT && (rv != APR_SUCCESS || !rs_verdict_is_valid(res.verdict))) {
        ap_log_error(APLOG_MARK, APLOG_WARNING, rv, s,
                     "RS0302: stored response for %s in %s is not usable (%s), removed",
                     e->cert->subject, reg->store_dir,
                     rv != APR_SUCCESS ? "unreadable or too large"
                                       : apr_pstrcat(p, rs_verdict_name(res.verdict), ": ",
                                                     res.detail, NULL));
        rs_store_remove(reg->store_dir, e->cert->id, p);
    }
    else if (rv == APR_SUCCESS) {
        /* held even if the cache cannot take it (too large): the children
         * then read it from the store */
        rs_cache_resp_put(reg, s, e, der, len, res.next_update, p);
        have_resp = 1;
    }

    if (rs_store_load(reg->store_dir, e->cert->id, RS_STORE_STATE, p, &raw, &rawlen)
            != APR_SUCCESS
        || rs_state_decode(&st, raw, rawlen) != APR_SUCCESS)
        rs_state_init(&st);
    st.lease_until = 0;
    st.lease_owner = 0;
    if (have_resp) {
        st.resp_this_update = res.this_update;
        st.resp_next_update = res.next_update;
        st.resp_revoked = res.verdict == RS_VERDICT_REVOKED;
        if (!st.next_attempt) /* renewal as if fetched now: an overdue one right away */
            st.next_attempt = rs_sched_renew_at(&reg->sched, res.this_update,
                                                res.next_update, 0, 0.0);
    }
    else {
        /* nothing to staple: try right after start, whatever the backoff said */
        st.resp_this_update = st.resp_next_update = 0;
        st.resp_revoked = 0;
        st.next_attempt = 0;
    }
    /* a state file from before a clock step must not hold fetching back */
    rs_state_bound(&st, now, &reg->sched);
    if (!have_resp && !st.fetches)
        return;
    rs_shared_state_put(reg, e, &st);
    rs_cache_changed(reg, e);
    if (have_resp)
        ap_log_error(APLOG_MARK, APLOG_INFO, 0, s,
                     "RS0301: restored the %s response for %s from %s (valid until %s)",
                     rs_verdict_name(res.verdict), e->cert->subject, reg->store_dir,
                     ap_ht_time(p, res.next_update, "%Y-%m-%d %H:%M:%S UTC", 1));
}

/* Files of certificates no longer configured are removed: a replaced
 * certificate leaves nothing behind. */
static void collect_garbage(rs_registry_t *reg, server_rec *s, apr_pool_t *p)
{
    apr_array_header_t *ids;
    int i;
    if (rs_store_list(reg->store_dir, p, &ids) != APR_SUCCESS)
        return;
    for (i = 0; i < ids->nelts; i++) {
        const unsigned char *id = (const unsigned char *)ids->elts + i * RS_ID_LEN;
        char hex[2 * RS_ID_LEN + 1];
        if (apr_hash_get(reg->by_id, id, RS_ID_LEN))
            continue;
        rs_store_remove(reg->store_dir, id, p);
        ap_log_error(APLOG_MARK, APLOG_INFO, 0, s,
                     "RS0304: removed the stored response of certificate %s, which is no "
                     "longer configured", rs_id_hex(id, hex));
    }
}

int rs_store_restore(rs_registry_t *reg, server_rec *s, apr_pool_t *ptemp)
{
    apr_status_t rv;
    apr_time_t now = apr_time_now();
    int i;

    if (!reg->store_dir)
        return OK;
    if ((rv = rs_store_prepare(reg->store_dir, ptemp)) != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_EMERG, rv, s,
                     "RS0305: ResilientStaplingStore: cannot create %s", reg->store_dir);
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    /* the children write it: it belongs to the user they run as, and to
     * nobody else (a response planted there is verified, but a link could
     * make root chown any directory) */
    {
        int as_root = geteuid() == 0;
        char why[256];
        if (rs_store_secure(reg->store_dir, as_root,
                            as_root ? (unsigned)ap_unixd_config.user_id : (unsigned)geteuid(),
                            as_root ? (unsigned)ap_unixd_config.group_id : (unsigned)getegid(),
                            why, sizeof(why)) != APR_SUCCESS) {
            ap_log_error(APLOG_MARK, APLOG_EMERG, 0, s,
                         "RS0306: ResilientStaplingStore %s refused: %s", reg->store_dir, why);
            return HTTP_INTERNAL_SERVER_ERROR;
        }
    }
    for (i = 0; i < reg->entries->nelts; i++)
        restore_one(reg, s, APR_ARRAY_IDX(reg->entries, i, rs_entry_t *), now, ptemp);
    collect_garbage(reg, s, ptemp);
    return OK;
}

/* The store's health is the server's, in shared memory: every child
 * writes there, and a change is logged once per server, not per write. */
static void store_result(rs_registry_t *reg, server_rec *s, apr_status_t rv, const char *what)
{
    char reason[RS_ERR_LEN], buf[120];
    int was = 0, failing = rv != APR_SUCCESS;

    if (failing)
        apr_snprintf(reason, sizeof(reason), "%s: %s", what, apr_strerror(rv, buf, sizeof(buf)));
    if (!reg->mutex || apr_global_mutex_lock(reg->mutex) != APR_SUCCESS)
        return;
    was = (int)reg->shared->store_failing;
    reg->shared->store_failing = (apr_uint32_t)failing;
    if (failing)
        apr_cpystrn(reg->shared->store_error, reason, sizeof(reg->shared->store_error));
    else
        reg->shared->store_error[0] = '\0';
    apr_global_mutex_unlock(reg->mutex);
    /* logged after the unlock: the error log is a file */
    if (failing && !was)
        ap_log_error(APLOG_MARK, APLOG_ERR, rv, s,
                     "RS0303: the store %s is failing (%s): responses are served from "
                     "memory but will not survive a restart; check ResilientStaplingStore "
                     "and that the server's User can write there", reg->store_dir, what);
    else if (!failing && was)
        ap_log_error(APLOG_MARK, APLOG_NOTICE, 0, s,
                     "RS0308: the store %s works again", reg->store_dir);
}

int rs_store_health(rs_registry_t *reg, char *err, apr_size_t errlen)
{
    int failing = 0;
    err[0] = '\0';
    if (!reg->store_dir || !reg->mutex || apr_global_mutex_lock(reg->mutex) != APR_SUCCESS)
        return 0;
    failing = reg->shared->store_failing != 0;
    apr_cpystrn(err, reg->shared->store_error, errlen);
    apr_global_mutex_unlock(reg->mutex);
    return failing;
}

void rs_store_check(rs_registry_t *reg, server_rec *s, apr_pool_t *p)
{
    if (!reg->store_dir)
        return;
    store_result(reg, s, rs_store_probe(reg->store_dir, p), "writing a probe file");
}

void rs_store_write_state(rs_registry_t *reg, server_rec *s, const rs_entry_t *e,
                          const rs_state_t *st, apr_pool_t *p)
{
    unsigned char buf[RS_STATE_WIRE_LEN];
    if (!reg->store_dir)
        return;
    rs_state_encode(st, buf);
    store_result(reg, s, rs_store_save(reg->store_dir, e->cert->id, RS_STORE_STATE, buf,
                                       sizeof(buf), p),
                 apr_pstrcat(p, "writing the state of ", e->cert->subject, NULL));
}

void rs_store_write(rs_registry_t *reg, server_rec *s, const rs_entry_t *e,
                    const unsigned char *der, apr_size_t len, apr_pool_t *p)
{
    if (!reg->store_dir)
        return;
    store_result(reg, s, rs_store_save(reg->store_dir, e->cert->id, RS_STORE_RESPONSE, der,
                                       len, p),
                 apr_pstrcat(p, "writing the response for ", e->cert->subject, NULL));
}
