/* rs_staple.h: the response a child serves for one certificate.
 *
 * This is all a handshake touches (DESIGN.md rule 1): a read lock held for
 * a bounded copy, no network, no disk, no cross-process lock. The refresher
 * installs verified responses; expiry is checked again on every serve so an
 * expired response is never stapled even if the refresher is stuck.
 */
#ifndef RS_STAPLE_H
#define RS_STAPLE_H

#include <apr_pools.h>
#include <apr_time.h>

typedef struct rs_staple_t rs_staple_t;

/* The callback mod_ssl hands to the get_resp hook (ap_ssl_ocsp_copy_resp). */
typedef void rs_staple_copy_fn(const unsigned char *der, apr_size_t der_len, void *userdata);

apr_status_t rs_staple_create(rs_staple_t **pstaple, apr_pool_t *p);

/* Install a verified response (copied); revoked: its certificate status. */
apr_status_t rs_staple_set(rs_staple_t *st, const unsigned char *der, apr_size_t len,
                           apr_time_t this_update, apr_time_t next_update, int revoked);

/* Install a verified response unless the installed one is newer
 * (rs_sched_should_replace, decided under the lock): 1 if installed. */
int rs_staple_offer(rs_staple_t *st, const unsigned char *der, apr_size_t len,
                    apr_time_t this_update, apr_time_t next_update, int revoked, apr_time_t now);

/* Calls cb exactly once: with the response while now < nextUpdate, else
 * with (NULL, 0). Returns 1 if a response was handed over. */
int rs_staple_serve(rs_staple_t *st, apr_time_t now, rs_staple_copy_fn *cb, void *userdata);

/* A copy of the installed response (from p), for re-populating a shared
 * cache that lost it. APR_ENOENT if none. */
apr_status_t rs_staple_copy(rs_staple_t *st, apr_pool_t *p, unsigned char **pder,
                            apr_size_t *plen, apr_time_t *this_update, apr_time_t *next_update);

/* thisUpdate/nextUpdate of the installed response; 0 if none. */
void rs_staple_times(rs_staple_t *st, apr_time_t *this_update, apr_time_t *next_update);

/* Whether the installed response says revoked (0 if none). */
int rs_staple_revoked(rs_staple_t *st);

#endif
