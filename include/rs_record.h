/* rs_record.h: the byte layout of the scheduling state (kept in the store
 * next to each response) and the cache keys.
 *
 * A shared cache may be memcached or Redis used by servers of different
 * builds, so the layout is explicit (little endian, versioned) and decoding
 * checks every length: a foreign or truncated record is rejected, not read.
 * Responses themselves are stored as plain DER and re-validated on read.
 */
#ifndef RS_RECORD_H
#define RS_RECORD_H

#include "rs_sched.h"

#define RS_STATE_WIRE_LEN (4 + 8 * 7 + 4 * 7 + 2 + RS_ERR_LEN)

void rs_state_encode(const rs_state_t *st, unsigned char out[RS_STATE_WIRE_LEN]);
apr_status_t rs_state_decode(rs_state_t *st, const unsigned char *in, apr_size_t len);

/* Cache keys: the certificate id followed by a one-letter kind. The id comes
 * first because shmcb picks its subcache from the first key byte (made for
 * random session ids): a common prefix would put every record of a kind in
 * one subcache and overflow its index. */
#define RS_KEY_LEN (1 + RS_ID_LEN)
#define RS_KEY_RESPONSE 'R'
#define RS_KEY_LEASE 'L'      /* fleet only: who fetches this certificate */
#define RS_KEY_GENERATION 'G' /* fleet only, id of zeros: changes with any response */
#define RS_KEY_PROBE 'P'      /* fleet only, id of zeros: is a cache that failed back? */
void rs_record_key(unsigned char key[RS_KEY_LEN], char kind, const unsigned char *id);

/* A fleet lease (memcached/Redis): the owner token of the fetching child
 * and until when it holds the certificate. After a failed fetch the owner
 * keeps it until its next retry, so that the fleet backs off as one. */
#define RS_LEASE_WIRE_LEN (4 + 8 + 8)
void rs_lease_encode(apr_uint64_t owner, apr_time_t until, unsigned char out[RS_LEASE_WIRE_LEN]);
apr_status_t rs_lease_decode(const unsigned char *in, apr_size_t len, apr_uint64_t *owner,
                             apr_time_t *until);

/* A short digest of a record (FNV-1a), so that a bad one in the fleet
 * cache is logged once per key and change, not at every read. Never 0: 0
 * is "nothing logged yet". */
apr_uint32_t rs_record_digest(char kind, const unsigned char *data, apr_size_t len);

void rs_u64_encode(apr_uint64_t v, unsigned char out[8]);
apr_uint64_t rs_u64_decode(const unsigned char in[8]);

#endif
