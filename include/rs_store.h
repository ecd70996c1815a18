/* rs_store.h: the persistent copy of verified responses, so that they
 * survive graceful and full restarts while the responder is down.
 *
 * One file per certificate, "<id hex>.der", written atomically (temporary
 * file, fsync, rename; see rs_store_save for what a crash may cost) with
 * mode 0600. What is read back is only bytes: the
 * caller validates it exactly like a fetched response (the disk is not
 * trusted more than the network). No httpd types.
 */
#ifndef RS_STORE_H
#define RS_STORE_H

#include <apr_pools.h>
#include <apr_tables.h>
#include "rs_ocsp.h"

/* What a file holds: "<id hex>.der" a response, "<id hex>.state" the
 * scheduling state and counters (rs_record.h) so that backoff and counters
 * survive restarts too. */
typedef enum { RS_STORE_RESPONSE = 0, RS_STORE_STATE } rs_store_kind_e;

/* Create the directory (0700) if needed, and its missing parents 0755:
 * httpd starts as root and the children, which write here, run as User;
 * a parent only root can enter makes every write fail. */
apr_status_t rs_store_prepare(const char *dir, apr_pool_t *p);

/* Refuse a store another user could plant files in or redirect, and give
 * it to the children's user. The directory must not be a symbolic link,
 * nor world-writable; it must belong to uid (or to root, when as_root: it
 * is then given to uid:gid, without following links). Ends as mode 0700.
 * On refusal, err says why, in words for the error log. */
apr_status_t rs_store_secure(const char *dir, int as_root, unsigned uid, unsigned gid,
                             char *err, apr_size_t errlen);

/* Prove the directory writable by this process: a file written, synced
 * and removed. */
apr_status_t rs_store_probe(const char *dir, apr_pool_t *p);

apr_status_t rs_store_save(const char *dir, const unsigned char *id, rs_store_kind_e kind,
                           const unsigned char *data, apr_size_t len, apr_pool_t *p);

/* APR_ENOENT if there is none; APR_EINVAL if larger than RS_MAX_RESPONSE_LEN. */
apr_status_t rs_store_load(const char *dir, const unsigned char *id, rs_store_kind_e kind,
                           apr_pool_t *p, unsigned char **pdata, apr_size_t *plen);

/* Removes both files of a certificate. */
apr_status_t rs_store_remove(const char *dir, const unsigned char *id, apr_pool_t *p);

/* The ids that have files (unsigned char[RS_ID_LEN] each, possibly twice);
 * leftover temporary files of interrupted writes are removed on the way. */
apr_status_t rs_store_list(const char *dir, apr_pool_t *p, apr_array_header_t **pids);

#endif
