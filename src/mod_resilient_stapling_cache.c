/* mod_resilient_stapling_cache.c: the cache side: the shared memory segment
 * of a server's children and the persistent store behind it.
 *
 * One anonymous segment per configuration generation (rs_shared.h, which
 * alone knows its layout) holds, per certificate, the verified DER
 * response every child staples (read by handshakes without a lock), the
 * scheduling state, and when it is next due. This file makes it, with the
 * global mutex as its lock, and fills it at startup from the store: each
 * file validated like a fetched response and offered like one
 * (rs_shared_offer), before any child starts. The children write the store
 * after each change, outside the lock.
 *
 * No socache is shared between the children: shmcb is a cyclic buffer that
 * evicts valid responses, so every child had to keep its own copy and audit
 * the cache. memcache and redis remain, as the cache a fleet of servers
 * shares (mod_resilient_stapling_fleet.c).
 */
#include <errno.h>
#include <unistd.h>

#include <apr_atomic.h>
#include <apr_strings.h>
#include <httpd.h>
#include <http_config.h>
#include <http_log.h>
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

/* The global mutex is the segment's lock. A child that could not attach
 * to it (RS0007) has none: every transaction then does nothing. */
static apr_status_t segment_lock(void *baton)
{
    rs_registry_t *reg = baton;
    return reg->mutex ? apr_global_mutex_lock(reg->mutex) : APR_EINIT;
}

static void segment_unlock(void *baton)
{
    apr_global_mutex_unlock(((rs_registry_t *)baton)->mutex);
}

static apr_status_t segment_resp_put(void *baton, int index, const unsigned char *der,
                                     apr_size_t len, const rs_ocsp_result_t *res)
{
    rs_registry_t *reg = baton;
    return rs_shm_staple_set(reg->staples, index, der, len, res->this_update,
                             res->next_update, res->verdict == RS_VERDICT_REVOKED);
}

int rs_segment_create(rs_registry_t *reg, apr_pool_t *pconf, server_rec *s)
{
    rs_shared_ops_t ops = {
        .baton = reg, .lock = segment_lock, .unlock = segment_unlock,
        .resp_put = segment_resp_put};
    int n = reg->entries->nelts;
    apr_size_t arena = ARENA_BYTES_BASE + (apr_size_t)n * ARENA_BYTES_PER_CERT;
    apr_size_t size = rs_shared_size(n, arena), used, reserved;
    /* anonymous: inherited by the children of this generation only, and
     * its pages are allocated when first written */
    apr_status_t rv = apr_shm_create(&reg->shm, size, NULL, pconf);
    if (rv != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_EMERG, rv, s,
                     "RS0004: cannot create %" APR_SIZE_T_FMT " bytes of shared memory", size);
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    reg->shared = rs_shared_init(apr_shm_baseaddr_get(reg->shm), n, arena, &reg->sched, &ops,
                                 pconf);
    reg->staples = rs_shared_staples(reg->shared);
    rs_shm_staple_usage(reg->staples, &used, &reserved);
    reg->cache_desc = apr_psprintf(pconf, "shared memory (%" APR_SIZE_T_FMT " KiB reserved for "
                                   "responses, used as they come)", reserved / 1024);
    return OK;
}

/* --- the persistent store --- */

/* Restore one certificate's response and state from disk into the segment.
 * The response is validated like a fetched one. */
static void restore_one(rs_registry_t *reg, server_rec *s, rs_entry_t *e, apr_time_t now,
                        apr_pool_t *p)
{
    unsigned char *der, *raw;
    apr_size_t len, rawlen;
    rs_state_t stored;
    rs_offer_t o;
    rs_outcome_t out;
    apr_status_t rv = rs_store_load(reg->store_dir, e->cert->id, RS_STORE_RESPONSE, p, &der,
                                    &len);

    memset(&o, 0, sizeof(o));
    o.origin = RS_ORIGIN_RESTORED;
    o.index = e->index;
    o.slot = -1;
    o.now = now;
    if (rv == APR_SUCCESS)
        rs_ocsp_check(e->cert, der, len, now, reg->skew, &o.res);
    if (rv != APR_ENOENT && (rv != APR_SUCCESS || !rs_verdict_is_valid(o.res.verdict))) {
        ap_log_error(APLOG_MARK, APLOG_WARNING, rv, s,
                     "RS0302: stored response for %s in %s is not usable (%s), removed",
                     e->cert->subject, reg->store_dir,
                     rv != APR_SUCCESS ? "unreadable or too large"
                                       : apr_pstrcat(p, rs_verdict_name(o.res.verdict), ": ",
                                                     o.res.detail, NULL));
        rs_store_remove(reg->store_dir, e->cert->id, p);
    }
    else if (rv == APR_SUCCESS) {
        o.der = der;
        o.len = len;
    }
    if (rs_store_load(reg->store_dir, e->cert->id, RS_STORE_STATE, p, &raw, &rawlen)
            == APR_SUCCESS
        && rs_state_decode(&stored, raw, rawlen) == APR_SUCCESS)
        o.stored = &stored;
    if (rs_shared_offer(reg->shared, &o, &out) == APR_SUCCESS && out.installed)
        ap_log_error(APLOG_MARK, APLOG_INFO, 0, s,
                     "RS0301: restored the %s response for %s from %s (valid until %s)",
                     rs_verdict_name(o.res.verdict), e->cert->subject, reg->store_dir,
                     ap_ht_time(p, o.res.next_update, "%Y-%m-%d %H:%M:%S UTC", 1));
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
    int was, failing = rv != APR_SUCCESS;

    reason[0] = '\0';
    if (failing)
        apr_snprintf(reason, sizeof(reason), "%s: %s", what, apr_strerror(rv, buf, sizeof(buf)));
    if (!reg->shared)
        return;
    was = rs_shared_store_result(reg->shared, failing, reason);
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
    err[0] = '\0';
    if (!reg->store_dir || !reg->shared)
        return 0;
    return rs_shared_store_health(reg->shared, err, errlen);
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
