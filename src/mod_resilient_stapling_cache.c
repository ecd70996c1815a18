/* mod_resilient_stapling_cache.c: the shared memory of a server's children
 * and the persistent store behind it.
 *
 * One anonymous segment per configuration generation holds, per
 * certificate, the verified DER response every child staples
 * (rs_shm_staple.h: read by handshakes without a lock), the scheduling
 * state, and when it is next due (rs_due.h). Callers of the record
 * functions hold the global mutex. At startup the store is read back into
 * the fresh segment, each file validated like a fetched response, before
 * any child starts.
 *
 * There is no socache between the children any more: shmcb is a cyclic
 * buffer that evicts valid responses, so every child had to keep its own
 * copy and audit the cache (a per-child cost growing with the
 * certificates). memcache and redis remain, as the cache a fleet of
 * servers shares (mod_resilient_stapling_fleet.c).
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
#include "rs_status.h"
#include "rs_store.h"

APLOG_USE_MODULE(resilient_stapling);

/* Arena of the shared responses: reserved per certificate (a response with
 * a delegated signer chain is up to ~4 KiB), plus room for two of the
 * largest. Only the pages written cost memory: the arena is filled from
 * its start (rs_shm_staple.c), so what is touched follows the responses
 * held, about their DER size rounded up to 128 bytes each. */
#define ARENA_BYTES_PER_CERT (4 * 1024)
#define ARENA_BYTES_BASE (2 * RS_MAX_RESPONSE_LEN)

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
        return rs_fleet_create(reg, name, g->cache_args, pconf, ptemp, s);
    /* shmcb, dbm...: what they did, the shared memory does */
    ap_log_error(APLOG_MARK, APLOG_NOTICE, 0, s,
                 "RS0012: ResilientStaplingCache %s%s%s is not needed and not used: the "
                 "children of this server share the responses in shared memory sized for "
                 "the certificates", name, g->cache_args ? ":" : "",
                 g->cache_args ? g->cache_args : "");
    return OK;
}

/* When the scheduler next has to look at a certificate: when it may be
 * claimed (rs_state_claim: due and no live lease), or when time alone
 * moves its alert on (rs_alert_of: expiring at 3/4 of the lifetime,
 * expired at nextUpdate), whichever is first. */
static apr_time_t due_of(const rs_state_t *st)
{
    apr_time_t now = apr_time_now(), claim, alert = RS_DUE_NEVER;
    apr_time_t tu = st->resp_this_update, nu = st->resp_next_update;
    rs_alert_e cur = rs_alert_of(tu, nu, (int)st->resp_revoked, now);

    claim = st->next_attempt > st->lease_until ? st->next_attempt : st->lease_until;
    if ((int)cur != (int)st->alert)
        alert = now;               /* not reported yet */
    else if (cur == RS_ALERT_OK && nu)
        alert = nu - (nu - tu) / 4;
    else if (cur == RS_ALERT_EXPIRING || cur == RS_ALERT_REVOKED)
        alert = nu;
    return claim < alert ? claim : alert;
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
    rs_due_set(reg->due, e->index, due_of(st));
}

apr_status_t rs_shared_resp_put(rs_registry_t *reg, const rs_entry_t *e,
                                const unsigned char *der, apr_size_t len,
                                const rs_ocsp_result_t *res)
{
    return rs_shm_staple_set(reg->staples, e->index, der, len, res->this_update,
                             res->next_update, res->verdict == RS_VERDICT_REVOKED);
}

static apr_size_t align64(apr_size_t x)
{
    return (x + 63) & ~(apr_size_t)63;
}

int rs_shared_create(rs_registry_t *reg, apr_pool_t *pconf, server_rec *s)
{
    int n = reg->entries->nelts;
    apr_size_t state = align64(sizeof(rs_shared_t) + sizeof(rs_shared_entry_t) * (apr_size_t)n);
    apr_size_t due = align64(rs_due_size(n));
    apr_size_t arena = ARENA_BYTES_BASE + (apr_size_t)n * ARENA_BYTES_PER_CERT;
    apr_size_t size = state + due + rs_shm_staple_size(n, arena), used, reserved;
    char *base;
    /* anonymous: inherited by the children of this generation only, and
     * its pages are allocated when first written */
    apr_status_t rv = apr_shm_create(&reg->shm, size, NULL, pconf);
    if (rv != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_EMERG, rv, s,
                     "RS0004: cannot create %" APR_SIZE_T_FMT " bytes of shared memory", size);
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    base = apr_shm_baseaddr_get(reg->shm);
    reg->shared = (rs_shared_t *)(void *)base;
    memset(reg->shared, 0, state);
    reg->due = rs_due_init(base + state, n);
    /* the arena is not cleared: untouched, it costs nothing */
    reg->staples = rs_shm_staple_init(base + state + due, n, arena);
    rs_shm_staple_usage(reg->staples, &used, &reserved);
    reg->cache_desc = apr_psprintf(pconf, "shared memory (%" APR_SIZE_T_FMT " KiB reserved for "
                                   "responses, used as they come)", reserved / 1024);
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
    if (forced)
        rs_shared_state_put(reg, e, &st);
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
        have_resp = rs_shared_resp_put(reg, e, der, len, &res) == APR_SUCCESS;
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
