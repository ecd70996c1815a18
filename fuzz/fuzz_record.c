/* libFuzzer target: bytes from a state file or a shared cache ->
 * rs_state_decode() and rs_lease_decode() (a fleet lease from memcached or
 * Redis). Whatever they accept must encode back to the same bytes; a state
 * must carry a terminated error text. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "rs_record.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    rs_state_t st;
    unsigned char again[RS_STATE_WIRE_LEN];
    unsigned char lease[RS_LEASE_WIRE_LEN];
    apr_uint64_t owner;
    apr_time_t until;

    if (rs_lease_decode(data, size, &owner, &until) == APR_SUCCESS) {
        rs_lease_encode(owner, until, lease);
        if (memcmp(lease, data, RS_LEASE_WIRE_LEN) != 0)
            abort();
    }
    if (rs_state_decode(&st, data, size) != APR_SUCCESS)
        return 0;
    if (strnlen(st.last_error, RS_ERR_LEN) >= RS_ERR_LEN)
        abort();
    rs_state_encode(&st, again);
    /* the padding after the error text is not significant */
    if (memcmp(again, data, RS_STATE_WIRE_LEN - RS_ERR_LEN + strlen(st.last_error)) != 0)
        abort();
    return 0;
}
