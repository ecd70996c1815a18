/* rs_shm_staple.c: the served responses, once per server, in shared memory
 * (see rs_shm_staple.h).
 *
 * The protocol (a sequence lock, after Boehm, "Can seqlocks get along with
 * programming language memory models?", MSPC 2012):
 *
 *   writer (writers serialised by the caller's mutex):
 *     seq = odd             relaxed store
 *     release fence
 *     data, len, off, times relaxed atomic stores
 *     seq = next even       release store
 *
 *   reader:
 *     s1 = seq              acquire load; odd: a write is under way, retry
 *     len, off, times, data relaxed atomic loads into a private buffer
 *     acquire fence
 *     s2 = seq              relaxed load; s2 != s1: retry, the copy is discarded
 *
 * Why a reader never hands a torn copy to mod_ssl: if any value the reader
 * loaded was stored by a write W (or a later one), then W's release fence,
 * sequenced after W's odd store, synchronises with the reader's acquire
 * fence (C11 7.17.4p2: a relaxed load that reads a value written after a
 * release fence, followed by an acquire fence). So W's odd store happens
 * before the reader's second load of seq, which therefore reads W's odd
 * value or a later one, never s1. If instead every value loaded predates W,
 * the copy is the whole response of the write that published s1 (its
 * release store of s1 synchronises with the acquire load of s1). Every
 * access to shared bytes is atomic, so there is no data race to make the
 * program undefined (and ThreadSanitizer has nothing to report).
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
#define WORDS_PER_BLOCK (RS_SHM_BLOCK / 8)
#define NO_RUN UINT32_MAX
/* A handshake copies into its stack up to this; a larger response into a
 * malloc'd buffer (rare: with a delegated signer chain, 0.5-3 KiB). */
#define STACK_COPY 4096
/* Tries before a reader gives up: a write is a copy of a few KiB (well
 * under a microsecond), but the writing thread may be descheduled. The
 * first ones spin, the rest yield the CPU. */
#define SPIN_TRIES 8
#define MAX_TRIES 64

typedef struct {
    apr_uint32_t seq;          /* odd while written */
    apr_uint32_t len;          /* bytes, 0: none */
    apr_uint32_t off;          /* first block of the run */
    apr_uint32_t revoked;
    apr_int64_t this_update;
    apr_int64_t next_update;
    apr_uint32_t cap;          /* blocks in the run; writers only */
    apr_uint32_t pad;
} slot_t;

struct rs_shm_staple_t {
    apr_uint32_t n;
    apr_uint32_t nblocks;
    apr_uint32_t hint;         /* no free block below it; writers only */
    apr_uint32_t used;         /* blocks in runs; written by writers, read relaxed */
    apr_size_t slots_off;      /* from the start of this struct: the segment may */
    apr_size_t bitmap_off;     /* be mapped at another address in a unit test */
    apr_size_t arena_off;
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

static apr_uint64_t *arena(const rs_shm_staple_t *sh)
{
    return (apr_uint64_t *)((char *)sh + sh->arena_off);
}

apr_size_t rs_shm_staple_size(int n, apr_size_t arena_bytes)
{
    apr_uint32_t nblocks = blocks_of(arena_bytes);
    return align64(sizeof(rs_shm_staple_t)) + align64(sizeof(slot_t) * (apr_size_t)n)
           + align64(((apr_size_t)nblocks + 63) / 64 * 8) + (apr_size_t)nblocks * RS_SHM_BLOCK;
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
    sh->arena_off = sh->bitmap_off + align64(((apr_size_t)nblocks + 63) / 64 * 8);
    /* the arena is left alone: a page of it costs memory once written */
    memset(slots(sh), 0, sizeof(slot_t) * (apr_size_t)n);
    memset(bitmap(sh), 0, ((apr_size_t)nblocks + 63) / 64 * 8);
    return sh;
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
    apr_uint64_t *dst;
    apr_uint32_t need = blocks_of(len), off, old_off, old_cap, seq;
    apr_size_t k, words = (len + 7) / 8;

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

    dst = arena(sh) + (apr_size_t)off * WORDS_PER_BLOCK;
    for (k = 0; k < words; k++) {
        apr_uint64_t w = 0;
        memcpy(&w, der + 8 * k, k + 1 < words || len % 8 == 0 ? 8 : len % 8);
        STORE(&dst[k], w);
    }
    STORE(&sl->len, (apr_uint32_t)len);
    STORE(&sl->off, off);
    STORE(&sl->this_update, (apr_int64_t)this_update);
    STORE(&sl->next_update, (apr_int64_t)next_update);
    STORE(&sl->revoked, (apr_uint32_t)(revoked != 0));

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

/* One attempt at a whole copy of sl into buf (cap bytes, a multiple of 8).
 * now: a response with nextUpdate <= now is not copied (READ_EXPIRED); 0:
 * any. READ_SMALL: m->len says how much room it needs. */
static int read_once(const rs_shm_staple_t *sh, const slot_t *sl, unsigned char *buf,
                     apr_size_t cap, apr_time_t now, meta_t *m)
{
    apr_uint32_t s1 = __atomic_load_n(&sl->seq, __ATOMIC_ACQUIRE), off;
    apr_size_t words, k;
    int rc;

    if (s1 & 1)
        return READ_RETRY;
    m->len = LOAD(&sl->len);
    off = LOAD(&sl->off);
    m->this_update = (apr_time_t)LOAD(&sl->this_update);
    m->next_update = (apr_time_t)LOAD(&sl->next_update);
    m->revoked = (int)LOAD(&sl->revoked);
    words = (m->len + 7) / 8;
    if (m->len == 0)
        rc = READ_EMPTY;
    else if (m->len > RS_MAX_RESPONSE_LEN
             || (apr_size_t)off * WORDS_PER_BLOCK + words
                    > (apr_size_t)sh->nblocks * WORDS_PER_BLOCK)
        rc = READ_RETRY;           /* off and len of different writes */
    else if (now && m->next_update <= now)
        rc = READ_EXPIRED;
    else if (words * 8 > cap)
        rc = READ_SMALL;
    else {
        const apr_uint64_t *src = arena(sh) + (apr_size_t)off * WORDS_PER_BLOCK;
        for (k = 0; k < words; k++) {
            apr_uint64_t w = LOAD(&src[k]);
            memcpy(buf + 8 * k, &w, 8);
        }
        rc = READ_OK;
    }
    __atomic_thread_fence(__ATOMIC_ACQUIRE);
    if (LOAD(&sl->seq) != s1)
        return READ_RETRY;
    return rc;
}

/* Retries read_once until it settles, growing the buffer (malloc'd into
 * *heap, which the caller frees) when the response is larger than it. */
static int read_slot(const rs_shm_staple_t *sh, const slot_t *sl, unsigned char **buf,
                     apr_size_t *cap, unsigned char **heap, apr_time_t now, meta_t *m)
{
    int tries = 0, rc;

    for (;;) {
        rc = read_once(sh, sl, *buf, *cap, now, m);
        if (rc == READ_SMALL) {
            free(*heap);
            *cap = (m->len + 7) & ~(apr_size_t)7;
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
    apr_uint64_t stack[STACK_COPY / 8];
    unsigned char *buf = (unsigned char *)stack, *heap = NULL;
    apr_size_t cap = sizeof(stack);
    meta_t m;
    int served = 0;

    if (i >= 0 && (apr_uint32_t)i < sh->n
        && read_slot(sh, &slots(sh)[i], &buf, &cap, &heap, now ? now : 1, &m) == READ_OK) {
        cb(buf, m.len, userdata);
        served = 1;
    }
    if (!served)
        cb(NULL, 0, userdata);
    free(heap);
    return served;
}

apr_status_t rs_shm_staple_copy(const rs_shm_staple_t *sh, int i, apr_pool_t *p,
                                unsigned char **pder, apr_size_t *plen,
                                apr_time_t *this_update, apr_time_t *next_update)
{
    apr_uint64_t stack[STACK_COPY / 8];
    unsigned char *buf = (unsigned char *)stack, *heap = NULL;
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
