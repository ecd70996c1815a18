/* mod_resilient_stapling_fleet.c: the cache a fleet of servers shares.
 *
 * With ResilientStaplingCache memcache:... or redis:... several httpd
 * servers share verified responses, fetch leases and a generation record
 * that changes with every new response. Each server keeps its own shmcb for
 * its children, so a fleet cache that is down, slow or flushed costs the
 * fleet its sharing, never a server its staples: the server falls back to
 * fetching for itself, and puts its responses back when the cache returns.
 *
 * The providers log their own errors (one line per failed call); this file
 * logs the change of state once per server and stops calling a cache that
 * is down, except for one probe per FLEET_PROBE.
 */
#include <apr_atomic.h>
#include <apr_strings.h>
#include <httpd.h>
#include <http_log.h>
#include <ap_provider.h>

#include "mod_resilient_stapling.h"
#include "rs_record.h"

APLOG_USE_MODULE(resilient_stapling);

/* memcached and Redis keep a key at most this long without a write */
#define GENERATION_TTL apr_time_from_sec(86400)
#define MAX_EXPIRY apr_time_from_sec(29 * 86400)
/* How often a child tries a fleet cache that is down. */
#define FLEET_PROBE apr_time_from_sec(5)
/* A call with no progress for this long: the cache hangs. memcached
 * answers locally in well under a millisecond. */
#define FLEET_STALL apr_time_from_sec(2)
/* apr_memcache and apr_redis retry a dead server after 5 s, per process. */
#define FLEET_BACK_GRACE apr_time_from_sec(10)

/* Per child: calls in flight and finished, for rs_fleet_watch; whether
 * this child has found the cache failing, and when to try it again. */
static apr_uint32_t calls_in_flight, calls_done;
static apr_uint32_t child_down, next_probe_sec;
static apr_uint32_t watched_done;
static apr_time_t progress_at, watched_at;

int rs_fleet_create(rs_registry_t *reg, const char *name, const char *args,
                    apr_pool_t *pconf, apr_pool_t *ptemp, server_rec *s)
{
    reg->fleet = ap_lookup_provider(AP_SOCACHE_PROVIDER_GROUP, name,
                                    AP_SOCACHE_PROVIDER_VERSION);
    /* a short namespace: memcache prefixes every key with it */
    return rs_socache_open(reg->fleet, name, args, "rs-ocsp", &reg->fleet_inst,
                           &reg->fleet_desc, pconf, ptemp, s);
}

/* Whether a child calls the cache is decided per child: the client
 * libraries keep a dead server's state per process (and look again only
 * every 5 s), so one child may reach the cache while another cannot yet.
 * What is logged is the server's state: the first child to fail logs
 * RS0601, the first to get through again RS0602. */
int rs_fleet_down(rs_registry_t *reg)
{
    (void)reg;
    return apr_atomic_read32(&child_down) != 0;
}

int rs_fleet_server_down(rs_registry_t *reg)
{
    return apr_atomic_read32(&reg->shared->fleet_down) != 0;
}

static void mark_down(rs_registry_t *reg, server_rec *s, apr_status_t rv, const char *what)
{
    apr_time_t now = apr_time_now();
    int fresh = 0;

    if (apr_atomic_cas32(&child_down, 1, 0) != 0)
        return;
    apr_atomic_set32(&next_probe_sec, (apr_uint32_t)apr_time_sec(now + FLEET_PROBE));
    /* right after another child found it back, this child's library may
     * not have looked again yet: not a change of the server's state */
    if (apr_global_mutex_lock(reg->mutex) == APR_SUCCESS) {
        fresh = now - reg->shared->fleet_back_at < FLEET_BACK_GRACE;
        apr_global_mutex_unlock(reg->mutex);
    }
    if (fresh || apr_atomic_cas32(&reg->shared->fleet_down, 1, 0) != 0)
        return;
    ap_log_error(APLOG_MARK, APLOG_WARNING, rv, s,
                 "RS0601: the fleet cache %s is not usable (%s): this server staples what it "
                 "has and fetches for itself until the cache is back", reg->fleet_desc, what);
}

void rs_fleet_rejoin(rs_registry_t *reg, server_rec *s)
{
    apr_atomic_set32(&child_down, 0);
    if (apr_atomic_cas32(&reg->shared->fleet_down, 0, 1) != 1)
        return;
    if (apr_global_mutex_lock(reg->mutex) == APR_SUCCESS) {
        reg->shared->fleet_back_at = apr_time_now();
        apr_global_mutex_unlock(reg->mutex);
    }
    /* the cache may have been flushed or restarted: compare everything */
    apr_atomic_set32(&reg->shared->fleet_seen, 0xffffffffu);
    ap_log_error(APLOG_MARK, APLOG_NOTICE, 0, s,
                 "RS0602: the fleet cache %s is back: sharing responses with the fleet again",
                 reg->fleet_desc);
}

int rs_fleet_claim_probe(rs_registry_t *reg, apr_time_t now)
{
    apr_uint32_t at = apr_atomic_read32(&next_probe_sec);
    (void)reg;
    /* never while a call of this child hangs: the probe would hang too */
    if (apr_atomic_read32(&calls_in_flight) != 0 || (apr_uint32_t)apr_time_sec(now) < at)
        return 0;
    return apr_atomic_cas32(&next_probe_sec, (apr_uint32_t)apr_time_sec(now + FLEET_PROBE), at)
           == at;
}

void rs_fleet_watch(rs_registry_t *reg, server_rec *s, apr_time_t now)
{
    apr_uint32_t done = apr_atomic_read32(&calls_done);
    apr_time_t last = watched_at;
    watched_at = now;
    /* after a gap in the watch itself (a starved scheduler thread) nobody
     * knows how long the call in flight has waited: count from now */
    if (done != watched_done || !apr_atomic_read32(&calls_in_flight)
        || now - last > FLEET_STALL / 2) {
        watched_done = done;
        progress_at = now;
        return;
    }
    if (now - progress_at > FLEET_STALL)
        mark_down(reg, s, APR_TIMEUP, "no answer within 2 s");
}

static void key_of(unsigned char key[RS_KEY_LEN], char kind, const rs_entry_t *e)
{
    static const unsigned char zeros[RS_ID_LEN];
    rs_record_key(key, kind, e ? e->cert->id : zeros);
}

apr_status_t rs_fleet_get(rs_registry_t *reg, server_rec *s, char kind, const rs_entry_t *e,
                          unsigned char *buf, apr_size_t cap, apr_size_t *plen, apr_pool_t *p)
{
    unsigned char key[RS_KEY_LEN];
    unsigned int len = (unsigned int)cap;
    apr_status_t rv;

    key_of(key, kind, e);
    apr_atomic_inc32(&calls_in_flight);
    rv = reg->fleet->retrieve(reg->fleet_inst, s, key, RS_KEY_LEN, buf, &len, p);
    if (rv != APR_SUCCESS && rv != APR_NOTFOUND) {
        /* a pooled connection the cache server closed fails once; the
         * provider drops it and the retry connects anew */
        len = (unsigned int)cap;
        rv = reg->fleet->retrieve(reg->fleet_inst, s, key, RS_KEY_LEN, buf, &len, p);
    }
    apr_atomic_dec32(&calls_in_flight);
    apr_atomic_inc32(&calls_done);
    *plen = len;
    if (rv != APR_SUCCESS && rv != APR_NOTFOUND)
        mark_down(reg, s, rv, "read failed");
    return rv;
}

apr_status_t rs_fleet_put(rs_registry_t *reg, server_rec *s, char kind, const rs_entry_t *e,
                          const unsigned char *data, apr_size_t len, apr_time_t expiry,
                          apr_pool_t *p)
{
    unsigned char key[RS_KEY_LEN];
    apr_status_t rv;

    key_of(key, kind, e);
    /* memcache wants at least a second: a record about to expire is not worth it */
    if (expiry - apr_time_now() < apr_time_from_sec(2))
        return APR_EINVAL;
    /* memcached reads more than 30 days as an absolute time (in 1970) */
    if (expiry - apr_time_now() > MAX_EXPIRY)
        expiry = apr_time_now() + MAX_EXPIRY;
    apr_atomic_inc32(&calls_in_flight);
    rv = reg->fleet->store(reg->fleet_inst, s, key, RS_KEY_LEN, expiry, (unsigned char *)data,
                           (unsigned int)len, p);
    if (rv != APR_SUCCESS) /* see rs_fleet_get */
        rv = reg->fleet->store(reg->fleet_inst, s, key, RS_KEY_LEN, expiry,
                               (unsigned char *)data, (unsigned int)len, p);
    apr_atomic_dec32(&calls_in_flight);
    apr_atomic_inc32(&calls_done);
    if (rv != APR_SUCCESS)
        mark_down(reg, s, rv, "write failed");
    return rv;
}

void rs_fleet_remove(rs_registry_t *reg, server_rec *s, char kind, const rs_entry_t *e,
                     apr_pool_t *p)
{
    unsigned char key[RS_KEY_LEN];
    key_of(key, kind, e);
    apr_atomic_inc32(&calls_in_flight);
    /* a missing key is an error for memcache: nothing to mark down for */
    reg->fleet->remove(reg->fleet_inst, s, key, RS_KEY_LEN, p);
    apr_atomic_dec32(&calls_in_flight);
    apr_atomic_inc32(&calls_done);
}

apr_status_t rs_fleet_generation(rs_registry_t *reg, server_rec *s, apr_uint32_t *gen,
                                 apr_pool_t *p)
{
    unsigned char buf[8];
    apr_size_t len;
    apr_status_t rv = rs_fleet_get(reg, s, RS_KEY_GENERATION, NULL, buf, sizeof(buf), &len, p);
    *gen = 0;
    if (rv == APR_NOTFOUND)
        return APR_SUCCESS;
    if (rv != APR_SUCCESS)
        return rv;
    if (len == sizeof(buf))
        *gen = (apr_uint32_t)rs_u64_decode(buf) | 1u; /* never 0: 0 is "none" */
    return APR_SUCCESS;
}

apr_status_t rs_fleet_probe(rs_registry_t *reg, server_rec *s, apr_pool_t *p)
{
    unsigned char token[8], back[8];
    apr_size_t len;
    apr_status_t rv;
    /* A write read back: apr_memcache answers "not found" to reads when no
     * server is alive, so a read alone would take a dead cache for an
     * empty one. */
    apr_generate_random_bytes(token, sizeof(token));
    rv = rs_fleet_put(reg, s, RS_KEY_PROBE, NULL, token, sizeof(token),
                      apr_time_now() + apr_time_from_sec(10), p);
    if (rv == APR_SUCCESS)
        rv = rs_fleet_get(reg, s, RS_KEY_PROBE, NULL, back, sizeof(back), &len, p);
    if (rv == APR_SUCCESS && (len != sizeof(back) || memcmp(token, back, len) != 0))
        rv = APR_EGENERAL;
    return rv;
}

void rs_fleet_bump(rs_registry_t *reg, server_rec *s, apr_pool_t *p)
{
    unsigned char token[8];
    apr_generate_random_bytes(token, sizeof(token));
    rs_fleet_put(reg, s, RS_KEY_GENERATION, NULL, token, sizeof(token),
                 apr_time_now() + GENERATION_TTL, p);
}
