/* rs_shm_staple.c: the served responses, once per server, in shared memory
 * (see rs_shm_staple.h).
 *
 * The protocol (a sequence lock, as Linux's seqcount and DPDK's
 * rte_seqlock; Boehm, "Can seqlocks get along with programming language
 * memory models?", MSPC 2012):
 *
 *   writer (writers serialised by the caller's mutex):
 *     seq = odd             relaxed store
 *     release fence
 *     data                  memcpy into the arena
 *     len, off, times       relaxed atomic stores
 *     seq = next even       release store
 *
 *   reader:
 *     s1 = seq              acquire load; odd: a write is under way, retry
 *     len, off, times       relaxed atomic loads
 *     data                  memcpy into a private buffer (copy_racy)
 *     acquire fence
 *     s2 = seq              relaxed load; s2 != s1: retry, the copy is discarded
 *
 * Why a reader never hands a torn copy to mod_ssl: if any value the reader
 * loaded was stored by a write W (or a later one), then W's release fence,
 * sequenced after W's odd store, synchronises with the reader's acquire
 * fence (C11 7.17.4p2 for the atomic fields; for the bytes, the fences
 * order them as Linux's smp_wmb/smp_rmb do). So W's odd store happens
 * before the reader's second load of seq, which therefore reads W's odd
 * value or a later one, never s1. If instead every value loaded predates W,
 * the copy is the whole response of the write that published s1 (its
 * release store of s1 synchronises with the acquire load of s1).
 *
 * The bytes are copied with memcpy, not with atomic loads: a reader may
 * read bytes a writer is storing, which C11 calls a data race, and which
 * every seqlock in use accepts (the kernel's, DPDK's, folly's) because the
 * copy is thrown away unless seq is unchanged. Only the copy is racy: seq,
 * len, off and the times are atomics, and the bounds come from them. Word
 * by word with relaxed atomic loads (C11-clean) the copy could not be
 * vectorised and a 1.5 KiB response took 3-4 times the old per-child
 * copy's time (bench/lookup); memcpy makes the handshake cheaper than the
 * read lock it replaced. ThreadSanitizer would report exactly that
 * intended race, so under TSan the reader's copy runs inside
 * AnnotateIgnoreReadsBegin/End (copy_racy): every other access, the
 * writer's bytes included, stays checked, and test/unit_shm_staple checks
 * every copy for tearing (its RS_SHM_STAPLE_NO_RECHECK build proves that
 * the test sees torn copies once the recheck is gone).
 *
 * Blocks move between slots: a response that outgrows its run gets a new
 * run and the old one is freed after the slot's write ends. A reader still
 * copying from the freed run may see bytes of a later write into it by
 * another slot's writer W2. W2 takes the mutex after the freeing writer W1
 * released it, and stores those bytes after its own release fence; so W1's
 * final seq store happens before W2's fence, which synchronises with the
 * reader's acquire fence as above: the reader's second load sees W1's new
 * seq, not s1, and retries. off and len are single atomic words but may
 * come from different writes: they are bounds-checked against the arena
 * before any byte is read, so a torn pair costs a retry, never a read out
 * of the segment.
 *
 * A writer that dies between its odd and even stores (its child killed)
 * leaves the slot odd: readers give up after a bounded number of tries and
 * staple nothing rather than spin, and the next writer of the slot (the
 * global mutex is released with the process) moves seq on to a new odd and
 * then even value.
 */
#include <sched.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <apr_strings.h>

#include "rs_ocsp.h"
#include "rs_shm_staple.h"

#define LOAD(p) __atomic_load_n((p), __ATOMIC_RELAXED)
#define STORE(p, v) __atomic_store_n((p), (v), __ATOMIC_RELAXED)
#define NO_RUN UINT32_MAX
/* slot_t.len: the bytes, and whether the response says revoked (one word:
 * one load, and never a length of one write with the status of another) */
#define LEN_MASK 0x7fffffffu
#define LEN_REVOKED 0x80000000u
/* A handshake copies into its stack up to this; a larger response into a
 * malloc'd buffer (rare: with a delegated signer chain, 0.5-3 KiB). */
#define STACK_COPY 4096
/* Tries before a reader gives up: a write is a copy of a few KiB (well
 * under a microsecond), but the writing thread may be descheduled. The
 * first ones spin, the rest yield the CPU. */
#define SPIN_TRIES 8
#define MAX_TRIES 64

/* 32 bytes, slots 64-byte aligned: a handshake's slot is one cache line */
typedef struct {
    apr_uint32_t seq;          /* odd while written */
    apr_uint32_t len;          /* bytes (0: none) | LEN_REVOKED */
    apr_uint32_t off;          /* first block of the run */
    apr_uint32_t cap;          /* blocks in the run; writers only */
    apr_int64_t this_update;
    apr_int64_t next_update;
} slot_t;
_Static_assert(sizeof(slot_t) == 32, "a slot must not straddle cache lines");

#if defined(__SANITIZE_THREAD__)
#define RS_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define RS_TSAN 1
#endif
#endif
#ifdef RS_TSAN
/* ThreadSanitizer's dynamic annotations (its runtime defines them) */
void AnnotateIgnoreReadsBegin(const char *file, int line);
void AnnotateIgnoreReadsEnd(const char *file, int line);
#endif

/* The handshake's way from mod_ssl's certificate id to a slot: an open
 * addressing table in the segment, written by the parent before any child
 * exists and only read after (no protocol needed). One entry is half a
 * cache line, so a lookup is usually one miss, where an apr_hash_t is
 * three (bucket, entry, key) before the entry it leads to. */
typedef struct {
    unsigned char id[RS_ID_LEN];
    apr_uint32_t slot_plus1;   /* 0: empty */
    apr_uint64_t pad;
} idx_t;
_Static_assert(sizeof(idx_t) == 32, "an index entry must not straddle cache lines");

struct rs_shm_staple_t {
    apr_uint32_t n;
    apr_uint32_t nblocks;
    apr_uint32_t idx_mask;     /* entries - 1 (a power of two >= 2n) */
    apr_uint32_t hint;         /* no free block below it; writers only */
    apr_uint32_t used;         /* blocks in runs; written by writers, read relaxed */
    apr_size_t slots_off;      /* from the start of this struct: the segment may */
    apr_size_t bitmap_off;     /* be mapped at another address in a unit test */
    apr_size_t arena_off;
    apr_size_t idx_off;
};

static apr_size_t align64(apr_size_t x)
{
    return (x + 63) & ~(apr_size_t)63;
}

static apr_uint32_t blocks_of(apr_size_t bytes)
{
    return (apr_uint32_t)((bytes + RS_SHM_BLOCK - 1) / RS_SHM_BLOCK);
}

static slot_t *slots(const rs_shm_staple_t *sh)
{
    return (slot_t *)((char *)sh + sh->slots_off);
}

static apr_uint64_t *bitmap(const rs_shm_staple_t *sh)
{
    return (apr_uint64_t *)((char *)sh + sh->bitmap_off);
}

static unsigned char *arena(const rs_shm_staple_t *sh)
{
    return (unsigned char *)sh + sh->arena_off;
}

static idx_t *idx(const rs_shm_staple_t *sh)
{
    return (idx_t *)((char *)sh + sh->idx_off);
}

/* at most half full: a miss ends at an empty entry within a few probes */
static apr_size_t idx_entries(int n)
{
    apr_size_t e = 2;
    while (e < 2 * (apr_size_t)n)
        e *= 2;
    return e;
}

apr_size_t rs_shm_staple_size(int n, apr_size_t arena_bytes)
{
    apr_uint32_t nblocks = blocks_of(arena_bytes);
    return align64(sizeof(rs_shm_staple_t)) + align64(sizeof(slot_t) * (apr_size_t)n)
           + align64(((apr_size_t)nblocks + 63) / 64 * 8) + sizeof(idx_t) * idx_entries(n)
           + (apr_size_t)nblocks * RS_SHM_BLOCK;
}

rs_shm_staple_t *rs_shm_staple_init(void *mem, int n, apr_size_t arena_bytes)
{
    rs_shm_staple_t *sh = mem;
    apr_uint32_t nblocks = blocks_of(arena_bytes);

    sh->n = (apr_uint32_t)n;
    sh->nblocks = nblocks;
    sh->hint = 0;
    sh->used = 0;
    sh->slots_off = align64(sizeof(*sh));
    sh->bitmap_off = sh->slots_off + align64(sizeof(slot_t) * (apr_size_t)n);
    sh->idx_off = sh->bitmap_off + align64(((apr_size_t)nblocks + 63) / 64 * 8);
    sh->idx_mask = (apr_uint32_t)(idx_entries(n) - 1);
    sh->arena_off = sh->idx_off + sizeof(idx_t) * idx_entries(n);
    /* the arena is left alone: a page of it costs memory once written */
    memset(slots(sh), 0, sizeof(slot_t) * (apr_size_t)n);
    memset(bitmap(sh), 0, ((apr_size_t)nblocks + 63) / 64 * 8);
    memset(idx(sh), 0, sizeof(idx_t) * idx_entries(n));
    return sh;
}

/* --- the id index --- */

/* An id is a SHA-1: any 4 of its bytes are as good a hash as any. */
static apr_uint32_t idx_home(const rs_shm_staple_t *sh, const unsigned char *id)
{
    apr_uint32_t h;
    memcpy(&h, id, sizeof(h));
    return h & sh->idx_mask;
}

apr_status_t rs_shm_staple_set_id(rs_shm_staple_t *sh, int i, const unsigned char *id)
{
    apr_uint32_t k;

    if (i < 0 || (apr_uint32_t)i >= sh->n)
        return APR_EINVAL;
    for (k = idx_home(sh, id);; k = (k + 1) & sh->idx_mask) {
        idx_t *x = &idx(sh)[k];
        if (x->slot_plus1 && memcmp(x->id, id, RS_ID_LEN) != 0)
            continue;
        /* (the table has room: at most n of its 2n or more entries) */
        memcpy(x->id, id, RS_ID_LEN);
        x->slot_plus1 = (apr_uint32_t)i + 1;
        return APR_SUCCESS;
    }
}

int rs_shm_staple_find(const rs_shm_staple_t *sh, const unsigned char *id)
{
    apr_uint32_t k;

    for (k = idx_home(sh, id);; k = (k + 1) & sh->idx_mask) {
        const idx_t *x = &idx(sh)[k];
        if (!x->slot_plus1)
            return -1;
        if (memcmp(x->id, id, RS_ID_LEN) == 0)
            return (int)x->slot_plus1 - 1;
    }
}

/* --- the arena: first fit over a bitmap of blocks (writers only) --- */

static int block_used(const apr_uint64_t *bm, apr_uint32_t b)
{
    return (int)((bm[b >> 6] >> (b & 63)) & 1);
}

static void mark(apr_uint64_t *bm, apr_uint32_t from, apr_uint32_t count, int used)
{
    apr_uint32_t b;
    for (b = from; b < from + count; b++) {
        if (used)
            bm[b >> 6] |= (apr_uint64_t)1 << (b & 63);
        else
            bm[b >> 6] &= ~((apr_uint64_t)1 << (b & 63));
    }
}

/* The lowest run of need free blocks, marked used; NO_RUN if none. First
 * fit keeps the runs packed at the start of the arena, so the pages
 * touched follow the bytes held. */
static apr_uint32_t alloc_run(rs_shm_staple_t *sh, apr_uint32_t need)
{
    apr_uint64_t *bm = bitmap(sh);
    apr_uint32_t b = sh->hint, start = 0, run = 0;

    while (b < sh->nblocks) {
        if ((b & 63) == 0 && bm[b >> 6] == ~(apr_uint64_t)0) {
            run = 0;
            b += 64;
            continue;
        }
        if (block_used(bm, b)) {
            run = 0;
            b++;
            continue;
        }
        if (run++ == 0)
            start = b;
        b++;
        if (run == need) {
            mark(bm, start, need, 1);
            if (start == sh->hint)
                sh->hint = start + need;
            STORE(&sh->used, sh->used + need);
            return start;
        }
    }
    return NO_RUN;
}

static void free_run(rs_shm_staple_t *sh, apr_uint32_t off, apr_uint32_t count)
{
    if (!count)
        return;
    mark(bitmap(sh), off, count, 0);
    if (off < sh->hint)
        sh->hint = off;
    STORE(&sh->used, sh->used - count);
}

/* --- writers --- */

apr_status_t rs_shm_staple_set(rs_shm_staple_t *sh, int i, const unsigned char *der,
                               apr_size_t len, apr_time_t this_update, apr_time_t next_update,
                               int revoked)
{
    slot_t *sl;
    apr_uint32_t need = blocks_of(len), off, old_off, old_cap, seq;

    if (i < 0 || (apr_uint32_t)i >= sh->n || len == 0 || len > RS_MAX_RESPONSE_LEN)
        return APR_EINVAL;
    sl = &slots(sh)[i];
    old_off = sl->off;
    old_cap = sl->cap;
    if (need <= old_cap)
        off = old_off;             /* rewritten in place (readers retry meanwhile) */
    else if ((off = alloc_run(sh, need)) == NO_RUN)
        return APR_ENOSPC;         /* the slot keeps its response */

    /* odd: a write is under way. A slot left odd by a writer that died
     * moves to another odd value, so that its readers see a change. */
    seq = LOAD(&sl->seq);
    seq = (seq & 1) ? seq + 2 : seq + 1;
    STORE(&sl->seq, seq);
    __atomic_thread_fence(__ATOMIC_RELEASE);

    /* readers copying meanwhile retry: see the top of this file */
    memcpy(arena(sh) + (apr_size_t)off * RS_SHM_BLOCK, der, len);
    STORE(&sl->len, (apr_uint32_t)len | (revoked ? LEN_REVOKED : 0));
    STORE(&sl->off, off);
    STORE(&sl->this_update, (apr_int64_t)this_update);
    STORE(&sl->next_update, (apr_int64_t)next_update);

    __atomic_store_n(&sl->seq, seq + 1, __ATOMIC_RELEASE);

    if (need > old_cap) {
        /* freed only now: no reader can start on the old run any more
         * (one still copying from it retries, see the top of this file) */
        free_run(sh, old_off, old_cap);
        sl->cap = need;
    }
    return APR_SUCCESS;
}

/* --- readers --- */

typedef struct {
    apr_size_t len;
    apr_time_t this_update, next_update;
    int revoked;
} meta_t;

enum { READ_OK, READ_EMPTY, READ_EXPIRED, READ_RETRY, READ_SMALL };

/* The reader's copy of bytes a writer may be rewriting: the one data race
 * of the protocol, made harmless by the recheck of seq after it (see the
 * top of this file). Told to ThreadSanitizer, which would report it. */
static inline void copy_racy(unsigned char *dst, const unsigned char *src, apr_size_t len)
{
#ifdef RS_TSAN
    AnnotateIgnoreReadsBegin(__FILE__, __LINE__);
#endif
    memcpy(dst, src, len);
#ifdef RS_TSAN
    AnnotateIgnoreReadsEnd(__FILE__, __LINE__);
#endif
}

/* One attempt at a whole copy of sl into buf (cap bytes). now: a response
 * with nextUpdate <= now is not copied (READ_EXPIRED); 0: any. READ_SMALL:
 * m->len says how much room it needs. */
static inline int read_once(const rs_shm_staple_t *sh, const slot_t *sl, unsigned char *buf,
                            apr_size_t cap, apr_time_t now, meta_t *m)
{
    apr_uint32_t s1 = __atomic_load_n(&sl->seq, __ATOMIC_ACQUIRE), len, off;
    int rc;

    if (s1 & 1)
        return READ_RETRY;
    len = LOAD(&sl->len);
    off = LOAD(&sl->off);
    m->this_update = (apr_time_t)LOAD(&sl->this_update);
    m->next_update = (apr_time_t)LOAD(&sl->next_update);
    m->len = len & LEN_MASK;
    m->revoked = (len & LEN_REVOKED) != 0;
    if (m->len == 0)
        rc = READ_EMPTY;
    else if (m->len > RS_MAX_RESPONSE_LEN
             || (apr_size_t)off * RS_SHM_BLOCK + m->len > (apr_size_t)sh->nblocks * RS_SHM_BLOCK)
        rc = READ_RETRY;           /* off and len of different writes */
    else if (now && m->next_update <= now)
        rc = READ_EXPIRED;
    else if (m->len > cap || !buf)
        rc = READ_SMALL;           /* (no buf: only the times are wanted) */
    else {
        copy_racy(buf, arena(sh) + (apr_size_t)off * RS_SHM_BLOCK, m->len);
        rc = READ_OK;
    }
    __atomic_thread_fence(__ATOMIC_ACQUIRE);
#ifndef RS_SHM_STAPLE_NO_RECHECK   /* only to prove that the unit test sees tearing */
    if (LOAD(&sl->seq) != s1)
        return READ_RETRY;
#endif
    return rc;
}

/* Retries read_once until it settles, growing the buffer (malloc'd into
 * *heap, which the caller frees) when the response is larger than it. */
static __attribute__((noinline)) int read_slot(const rs_shm_staple_t *sh, const slot_t *sl,
                                               unsigned char **buf, apr_size_t *cap, unsigned char **heap, apr_time_t now, meta_t *m)
{
    int tries = 0, rc;

    for (;;) {
        rc = read_once(sh, sl, *buf, *cap, now, m);
        if (rc == READ_OK)
            return rc;
        if (rc == READ_SMALL) {
            free(*heap);
            *cap = m->len;
            if (!(*heap = malloc(*cap)))
                return READ_EMPTY;
            *buf = *heap;
            continue;
        }
        if (rc != READ_RETRY)
            return rc;
        if (++tries >= MAX_TRIES)
            return READ_EMPTY;     /* a writer died mid-write: staple nothing */
        if (tries > SPIN_TRIES)
            sched_yield();
    }
}

int rs_shm_staple_serve(const rs_shm_staple_t *sh, int i, apr_time_t now,
                        rs_staple_copy_fn *cb, void *userdata)
{
    _Alignas(64) unsigned char stack[STACK_COPY];
    unsigned char *buf = stack, *heap = NULL;
    apr_size_t cap = sizeof(stack);
    meta_t m;
    int served = 0;

    if (i < 0 || (apr_uint32_t)i >= sh->n) {
        cb(NULL, 0, userdata);
        return 0;
    }
    if (!now)
        now = 1;
    /* the handshake's path: one try, inline; retries and large responses
     * in read_slot */
    if (read_once(sh, &slots(sh)[i], buf, cap, now, &m) == READ_OK
        || read_slot(sh, &slots(sh)[i], &buf, &cap, &heap, now, &m) == READ_OK) {
        cb(buf, m.len, userdata);
        served = 1;
    }
    if (!served)
        cb(NULL, 0, userdata);
    if (heap)
        free(heap);
    return served;
}

apr_status_t rs_shm_staple_copy(const rs_shm_staple_t *sh, int i, apr_pool_t *p,
                                unsigned char **pder, apr_size_t *plen,
                                apr_time_t *this_update, apr_time_t *next_update)
{
    unsigned char stack[STACK_COPY], *buf = stack, *heap = NULL;
    apr_size_t cap = sizeof(stack);
    apr_status_t rv = APR_ENOENT;
    meta_t m;

    if (i >= 0 && (apr_uint32_t)i < sh->n
        && read_slot(sh, &slots(sh)[i], &buf, &cap, &heap, 0, &m) == READ_OK) {
        *pder = apr_pmemdup(p, buf, m.len);
        *plen = m.len;
        *this_update = m.this_update;
        *next_update = m.next_update;
        rv = APR_SUCCESS;
    }
    free(heap);
    return rv;
}

void rs_shm_staple_times(const rs_shm_staple_t *sh, int i, apr_time_t *this_update,
                         apr_time_t *next_update, int *revoked)
{
    meta_t m;
    int tries;

    *this_update = *next_update = 0;
    if (revoked)
        *revoked = 0;
    if (i < 0 || (apr_uint32_t)i >= sh->n)
        return;
    /* the same protocol without the bytes: a zero-room buffer */
    for (tries = 0; tries < MAX_TRIES; tries++) {
        int rc = read_once(sh, &slots(sh)[i], NULL, 0, 0, &m);
        if (rc == READ_EMPTY)
            return;
        if (rc == READ_SMALL) {
            *this_update = m.this_update;
            *next_update = m.next_update;
            if (revoked)
                *revoked = m.revoked;
            return;
        }
        if (tries >= SPIN_TRIES)
            sched_yield();
    }
}

void rs_shm_staple_usage(const rs_shm_staple_t *sh, apr_size_t *used, apr_size_t *reserved)
{
    *used = (apr_size_t)LOAD(&sh->used) * RS_SHM_BLOCK;
    *reserved = (apr_size_t)sh->nblocks * RS_SHM_BLOCK;
}
