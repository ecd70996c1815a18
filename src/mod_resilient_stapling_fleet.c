/* mod_resilient_stapling_fleet.c: the cache a fleet of servers shares.
 *
 * With ResilientStaplingCache memcache:... or redis:... several httpd
 * servers share verified responses, fetch leases and a generation record
 * that changes with every new response. Each server keeps its responses in
 * its own shared memory (rs_shared.h), so a fleet cache that is down, slow
 * or flushed costs the fleet its sharing, never a server its staples: the
 * server falls back to fetching for itself, and puts its responses back
 * when the cache returns (mod_resilient_stapling_fleet_client.c).
 *
 * The providers log their own errors (one line per failed call); this file
 * logs the change of state once per server and stops calling a cache that
 * is down, except for one probe per FLEET_PROBE. Every call goes through
 * this child's fleet I/O thread and is bounded (rs_fleet_io.h): a frozen
 * cache is a cache that is down, and a child never waits for it to exit.
 */
#include <apr_atomic.h>
#include <apr_strings.h>
#include <httpd.h>
#include <http_log.h>
#include <ap_provider.h>

#include "mod_resilient_stapling.h"
#include "rs_fleet_io.h"
#include "rs_ocsp.h"
#include "rs_record.h"

APLOG_USE_MODULE(resilient_stapling);

/* memcached and Redis keep a key at most this long without a write */
#define GENERATION_TTL apr_time_from_sec(86400)
#define MAX_EXPIRY apr_time_from_sec(29 * 86400)
/* How often a child tries a fleet cache that is down. */
#define FLEET_PROBE apr_time_from_sec(5)
/* The most any thread waits for one fleet call, its turn included.
 * memcached answers locally in well under a millisecond, a distant Redis in
 * a few; the README promises a frozen cache is noticed within 2 s. */
#define FLEET_CALL_BOUND apr_time_from_msec(1500)
/* apr_memcache and apr_redis retry a dead server after 5 s, per process. */
#define FLEET_BACK_GRACE apr_time_from_sec(10)

/* This child's side of the fleet cache. */
struct rs_fleet_t {
    rs_registry_t *reg;
    server_rec *s;
    rs_fleet_io_t *io;
    apr_uint32_t down;           /* this child found the cache failing; atomic */
    apr_uint32_t next_probe_sec; /* when to try it again; atomic */
};

static int socache_open(const ap_socache_provider_t *provider, const char *name, const char *args,
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

int rs_fleet_create(rs_registry_t *reg, const ap_socache_provider_t *provider, const char *name,
                    const char *args, apr_pool_t *pconf, apr_pool_t *ptemp, server_rec *s)
{
    reg->fleet = provider;
    /* a short namespace: memcache prefixes every key with it */
    return socache_open(provider, name, args, "rs-ocsp", &reg->fleet_inst, &reg->fleet_desc,
                        pconf, ptemp, s);
}

/* Runs on the fleet I/O thread, the only thread that calls the provider. */
static apr_status_t io_call(void *baton, rs_fleet_io_call_t *c, apr_pool_t *p)
{
    rs_fleet_t *f = baton;
    const ap_socache_provider_t *fleet = f->reg->fleet;
    ap_socache_instance_t *inst = f->reg->fleet_inst;
    apr_status_t rv = APR_EGENERAL;
    unsigned int len;
    int attempt;

    if (c->op == RS_FLEET_IO_REMOVE) {
        /* a missing key is an error for memcache: nothing to mark down for */
        fleet->remove(inst, f->s, c->key, (unsigned int)c->key_len, p);
        return APR_SUCCESS;
    }
    /* a pooled connection the cache server closed fails once; the provider
     * drops it and the retry connects anew */
    for (attempt = 0; attempt < 2; attempt++) {
        if (c->op == RS_FLEET_IO_GET) {
            len = (unsigned int)c->cap;
            rv = fleet->retrieve(inst, f->s, c->key, (unsigned int)c->key_len, c->data, &len,
                                 p);
            c->len = len;
            /* ENOMEM: the value is larger than the buffer (both providers) */
            if (rv == APR_SUCCESS || rv == APR_NOTFOUND || rv == APR_ENOMEM)
                return rv;
        }
        else {
            rv = fleet->store(inst, f->s, c->key, (unsigned int)c->key_len, c->expiry, c->data,
                              (unsigned int)c->len, p);
            if (rv == APR_SUCCESS)
                return rv;
        }
    }
    return rv;
}

rs_fleet_t *rs_fleet_child_init(rs_registry_t *reg, server_rec *s)
{
    /* from pconf, which a child never destroys: the I/O thread is never
     * joined, and a call that hangs when the child stops still reads f
     * (its server, the provider) once the cache answers */
    rs_fleet_t *f = apr_pcalloc(reg->pool, sizeof(*f));
    apr_status_t rv;

    f->reg = reg;
    f->s = s;
    /* a child that cannot call the cache boundedly does not call it */
    f->down = 1;
    f->next_probe_sec = 0xffffffffu;
    rv = rs_fleet_io_start(&f->io, io_call, f, RS_MAX_RESPONSE_LEN);
    if (rv != APR_SUCCESS)
        ap_log_error(APLOG_MARK, APLOG_ERR, rv, s,
                     "RS0609: cannot start the fleet cache thread: this child fetches for "
                     "itself");
    else
        f->down = 0;
    return f;
}

void rs_fleet_stop(rs_fleet_t *f)
{
    if (f->io)
        rs_fleet_io_stop(f->io);
}

/* Whether a child calls the cache is decided per child: the client
 * libraries keep a dead server's state per process (and look again only
 * every 5 s), so one child may reach the cache while another cannot yet.
 * What is logged is the server's state: the first child to fail logs
 * RS0601, the first to get through again RS0602. */
int rs_fleet_down(rs_fleet_t *f)
{
    return apr_atomic_read32(&f->down) != 0;
}

int rs_fleet_server_down(rs_registry_t *reg)
{
    return apr_atomic_read32(&rs_shared_fleet(reg->shared)->down) != 0;
}

static void mark_down(rs_fleet_t *f, apr_status_t rv, const char *what)
{
    rs_registry_t *reg = f->reg;
    apr_time_t now = apr_time_now();
    int fresh = 0;

    if (apr_atomic_cas32(&f->down, 1, 0) != 0)
        return;
    apr_atomic_set32(&f->next_probe_sec, (apr_uint32_t)apr_time_sec(now + FLEET_PROBE));
    /* right after another child found it back, this child's library may
     * not have looked again yet: not a change of the server's state */
    fresh = rs_shared_fleet_back_lately(reg->shared, now, FLEET_BACK_GRACE);
    if (fresh || apr_atomic_cas32(&rs_shared_fleet(reg->shared)->down, 1, 0) != 0)
        return;
    ap_log_error(APLOG_MARK, APLOG_WARNING, rv, f->s,
                 "RS0601: the fleet cache %s is not usable (%s): this server staples what it "
                 "has and fetches for itself until the cache is back", reg->fleet_desc, what);
}

void rs_fleet_rejoin(rs_fleet_t *f)
{
    rs_registry_t *reg = f->reg;
    rs_shared_fleet_t *sf = rs_shared_fleet(reg->shared);

    apr_atomic_set32(&f->down, 0);
    if (apr_atomic_cas32(&sf->down, 0, 1) != 1)
        return;
    rs_shared_fleet_back(reg->shared, apr_time_now());
    /* the cache may have been flushed or restarted: compare everything */
    apr_atomic_set32(&sf->seen, 0xffffffffu);
    ap_log_error(APLOG_MARK, APLOG_NOTICE, 0, f->s,
                 "RS0602: the fleet cache %s is back: sharing responses with the fleet again",
                 reg->fleet_desc);
}

int rs_fleet_claim_probe(rs_fleet_t *f, apr_time_t now)
{
    apr_uint32_t at;

    /* never while a call of this child hangs: the probe would fail at once */
    if (!f->io || rs_fleet_io_hung(f->io))
        return 0;
    at = apr_atomic_read32(&f->next_probe_sec);
    if ((apr_uint32_t)apr_time_sec(now) < at)
        return 0;
    return apr_atomic_cas32(&f->next_probe_sec, (apr_uint32_t)apr_time_sec(now + FLEET_PROBE), at)
           == at;
}

int rs_fleet_note_bad(rs_registry_t *reg, const rs_entry_t *e, char kind, apr_uint32_t digest)
{
    return rs_shared_fleet_note(reg->shared, e->index, kind == RS_KEY_LEASE, digest);
}

int rs_fleet_note_bogus_lease(rs_registry_t *reg)
{
    return apr_atomic_xchg32(&rs_shared_fleet(reg->shared)->bogus_lease, 1) == 0;
}

static void key_of(unsigned char key[RS_KEY_LEN], char kind, const rs_entry_t *e)
{
    static const unsigned char zeros[RS_ID_LEN];
    rs_record_key(key, kind, e ? e->cert->id : zeros);
}

/* One bounded call; a failure (timeout included) marks the cache down. */
static apr_status_t call(rs_fleet_t *f, rs_fleet_io_op_e op, char kind, const rs_entry_t *e,
                         unsigned char *value, apr_size_t *len, apr_size_t cap,
                         apr_time_t expiry)
{
    unsigned char key[RS_KEY_LEN];
    apr_status_t rv;

    if (rs_fleet_down(f) && kind != RS_KEY_PROBE)
        return APR_ECONNREFUSED;
    key_of(key, kind, e);
    rv = rs_fleet_io_call(f->io, op, key, sizeof(key), value, len, cap, expiry,
                          FLEET_CALL_BOUND);
    /* apr_memcache stores with APR_NOTFOUND when it has no live server */
    if (rv == APR_SUCCESS || rv == APR_EOF || op == RS_FLEET_IO_REMOVE
        || (rv == APR_NOTFOUND && op == RS_FLEET_IO_GET))
        return rv;
    if (rv == APR_ENOMEM)
        return APR_ENOSPC; /* a record too large: bad content, the cache works */
    mark_down(f, rv, rv == APR_TIMEUP ? "no answer within 1.5 s"
                          : op == RS_FLEET_IO_GET ? "read failed" : "write failed");
    return rv;
}

apr_status_t rs_fleet_get(rs_fleet_t *f, char kind, const rs_entry_t *e, unsigned char *buf,
                          apr_size_t cap, apr_size_t *plen)
{
    *plen = 0;
    return call(f, RS_FLEET_IO_GET, kind, e, buf, plen, cap, 0);
}

apr_status_t rs_fleet_put(rs_fleet_t *f, char kind, const rs_entry_t *e,
                          const unsigned char *data, apr_size_t len, apr_time_t expiry)
{
    /* memcache wants at least a second: a record about to expire is not worth it */
    if (expiry - apr_time_now() < apr_time_from_sec(2))
        return APR_EINVAL;
    /* memcached reads more than 30 days as an absolute time (in 1970) */
    if (expiry - apr_time_now() > MAX_EXPIRY)
        expiry = apr_time_now() + MAX_EXPIRY;
    return call(f, RS_FLEET_IO_PUT, kind, e, (unsigned char *)data, &len, 0, expiry);
}

void rs_fleet_remove(rs_fleet_t *f, char kind, const rs_entry_t *e)
{
    apr_size_t len = 0;
    call(f, RS_FLEET_IO_REMOVE, kind, e, NULL, &len, 0, 0);
}

apr_status_t rs_fleet_generation(rs_fleet_t *f, apr_uint32_t *gen)
{
    unsigned char buf[8];
    apr_size_t len;
    apr_status_t rv = rs_fleet_get(f, RS_KEY_GENERATION, NULL, buf, sizeof(buf), &len);
    *gen = 0;
    /* none, or garbage (too large, wrong size): no generation to follow */
    if (rv == APR_NOTFOUND || rv == APR_ENOSPC)
        return APR_SUCCESS;
    if (rv != APR_SUCCESS)
        return rv;
    if (len == sizeof(buf))
        *gen = (apr_uint32_t)rs_u64_decode(buf) | 1u; /* never 0: 0 is "none" */
    return APR_SUCCESS;
}

apr_status_t rs_fleet_probe(rs_fleet_t *f)
{
    unsigned char token[8], back[8];
    apr_size_t len;
    apr_status_t rv;
    /* A write read back: apr_memcache answers "not found" to reads when no
     * server is alive, so a read alone would take a dead cache for an
     * empty one. */
    apr_generate_random_bytes(token, sizeof(token));
    rv = rs_fleet_put(f, RS_KEY_PROBE, NULL, token, sizeof(token),
                      apr_time_now() + apr_time_from_sec(10));
    if (rv == APR_SUCCESS)
        rv = rs_fleet_get(f, RS_KEY_PROBE, NULL, back, sizeof(back), &len);
    if (rv == APR_SUCCESS && (len != sizeof(back) || memcmp(token, back, len) != 0))
        rv = APR_EGENERAL;
    return rv;
}

void rs_fleet_bump(rs_fleet_t *f)
{
    unsigned char token[8];
    apr_generate_random_bytes(token, sizeof(token));
    rs_fleet_put(f, RS_KEY_GENERATION, NULL, token, sizeof(token),
                 apr_time_now() + GENERATION_TTL);
}
