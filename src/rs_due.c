/* rs_due.c: the due-time heap (see rs_due.h). */
#include <string.h>

#include "rs_due.h"

struct rs_due_t {
    apr_uint32_t n;
    apr_uint32_t pad;
    apr_int64_t next;          /* key of heap[0]; atomic */
    /* apr_int64_t key[n]; apr_uint32_t heap[n]; apr_uint32_t pos[n]; */
};

static apr_int64_t *keys(const rs_due_t *d)
{
    return (apr_int64_t *)(void *)((char *)d + sizeof(*d));
}

static apr_uint32_t *heap(const rs_due_t *d)
{
    return (apr_uint32_t *)(void *)(keys(d) + d->n);
}

static apr_uint32_t *pos(const rs_due_t *d)
{
    return heap(d) + d->n;
}

apr_size_t rs_due_size(int n)
{
    return sizeof(rs_due_t) + (apr_size_t)n * (sizeof(apr_int64_t) + 2 * sizeof(apr_uint32_t));
}

static void publish(rs_due_t *d)
{
    __atomic_store_n(&d->next, d->n ? keys(d)[heap(d)[0]] : RS_DUE_NEVER, __ATOMIC_RELAXED);
}

rs_due_t *rs_due_init(void *mem, int n)
{
    rs_due_t *d = mem;
    apr_uint32_t i;
    d->n = (apr_uint32_t)n;
    for (i = 0; i < d->n; i++) {
        keys(d)[i] = 0;
        heap(d)[i] = i;
        pos(d)[i] = i;
    }
    publish(d);
    return d;
}

static void swap(rs_due_t *d, apr_uint32_t a, apr_uint32_t b)
{
    apr_uint32_t *h = heap(d), *p = pos(d), t = h[a];
    h[a] = h[b];
    h[b] = t;
    p[h[a]] = a;
    p[h[b]] = b;
}

void rs_due_set(rs_due_t *d, int i, apr_time_t key)
{
    apr_int64_t *k = keys(d);
    apr_uint32_t *h = heap(d), at;

    if (i < 0 || (apr_uint32_t)i >= d->n || k[i] == key)
        return;
    k[i] = key;
    at = pos(d)[i];
    while (at > 0 && k[h[(at - 1) / 2]] > k[h[at]]) {
        swap(d, at, (at - 1) / 2);
        at = (at - 1) / 2;
    }
    for (;;) {
        apr_uint32_t l = 2 * at + 1, r = l + 1, m = at;
        if (l < d->n && k[h[l]] < k[h[m]])
            m = l;
        if (r < d->n && k[h[r]] < k[h[m]])
            m = r;
        if (m == at)
            break;
        swap(d, at, m);
        at = m;
    }
    publish(d);
}

apr_time_t rs_due_key(const rs_due_t *d, int i)
{
    return i >= 0 && (apr_uint32_t)i < d->n ? keys(d)[i] : RS_DUE_NEVER;
}

int rs_due_collect(const rs_due_t *d, apr_time_t now, int *out, int max)
{
    /* a walk of the subtree whose keys are <= now: O(found), not O(n) */
    apr_uint32_t stack[64], *h = heap(d);
    apr_int64_t *k = keys(d);
    int depth = 0, found = 0;

    if (!d->n || k[h[0]] > now)
        return 0;
    stack[depth++] = 0;
    while (depth && found < max) {
        apr_uint32_t at = stack[--depth], c;
        out[found++] = (int)h[at];
        for (c = 2 * at + 1; c <= 2 * at + 2; c++)
            if (c < d->n && k[h[c]] <= now && depth < 64)
                stack[depth++] = c;
    }
    return found;
}

apr_time_t rs_due_next(const rs_due_t *d)
{
    return (apr_time_t)__atomic_load_n(&d->next, __ATOMIC_RELAXED);
}
