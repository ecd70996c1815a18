/* rs_fetch_net.h: inside one fetch (rs_fetch.c): its deadline and cancel,
 * and the connection to the responder or proxy (rs_fetch_net.c). Not part
 * of the module's API. */
#ifndef RS_FETCH_NET_H
#define RS_FETCH_NET_H

#include <apr_pools.h>
#include <apr_time.h>

#include "rs_fetch.h"

/* One fetch in progress. */
typedef struct {
    apr_pool_t *pool;
    const rs_fetch_opts_t *opts;
    apr_time_t deadline;
    char *err;
    apr_size_t errlen;
    apr_size_t read_cap;     /* bytes the filter lets through */
    apr_size_t bytes_in;
    char *head;              /* the status line and headers as read, MAX_HEADER_BYTES */
    apr_size_t head_len;
    int head_done;           /* the empty line that ends them was read */
    apr_status_t cut;        /* why the filter stopped reading, APR_SUCCESS if it did not */
} rs_fetch_ctx_t;

/* The deadline or the cancel: APR_SUCCESS while neither (err says which). */
apr_status_t rs_fetch_check_bounds(rs_fetch_ctx_t *f, const char *phase);
/* The slice of the deadline a wait may take, in ms (at least 1): how
 * often a wait looks at the cancel flag. */
int rs_fetch_slice_ms(rs_fetch_ctx_t *f);
/* Wait until the socket is ready, the deadline passes or we are cancelled. */
apr_status_t rs_fetch_wait_fd(rs_fetch_ctx_t *f, int fd, int for_write, const char *phase);
/* Resolve (on a thread the fetch does not wait for past its deadline) and
 * connect to the first address that takes it: a non-blocking socket. */
apr_status_t rs_fetch_connect(rs_fetch_ctx_t *f, const char *host, const char *port, int *pfd);

#endif
