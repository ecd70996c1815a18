/* rs_record.c: encoding of shared-cache records (see rs_record.h). */
#include <string.h>

#include "rs_record.h"

static const unsigned char STATE_MAGIC[4] = {'R', 'S', 'S', '2'};
static const unsigned char LEASE_MAGIC[4] = {'R', 'S', 'L', '1'};

void rs_u64_encode(apr_uint64_t v, unsigned char out[8])
{
    int i;
    for (i = 0; i < 8; i++)
        out[i] = (unsigned char)(v >> (8 * i));
}

apr_uint64_t rs_u64_decode(const unsigned char in[8])
{
    apr_uint64_t v = 0;
    int i;
    for (i = 7; i >= 0; i--)
        v = (v << 8) | in[i];
    return v;
}

static unsigned char *put64(unsigned char *p, apr_uint64_t v)
{
    rs_u64_encode(v, p);
    return p + 8;
}

static unsigned char *put32(unsigned char *p, apr_uint32_t v)
{
    int i;
    for (i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
    return p + 4;
}

static const unsigned char *get64(const unsigned char *p, apr_uint64_t *v)
{
    *v = rs_u64_decode(p);
    return p + 8;
}

static const unsigned char *get32(const unsigned char *p, apr_uint32_t *v)
{
    *v = (apr_uint32_t)p[0] | (apr_uint32_t)p[1] << 8 | (apr_uint32_t)p[2] << 16
         | (apr_uint32_t)p[3] << 24;
    return p + 4;
}

void rs_state_encode(const rs_state_t *st, unsigned char out[RS_STATE_WIRE_LEN])
{
    unsigned char *p = out;
    size_t errlen = strnlen(st->last_error, RS_ERR_LEN - 1);

    memset(out, 0, RS_STATE_WIRE_LEN);
    memcpy(p, STATE_MAGIC, 4);
    p += 4;
    p = put64(p, (apr_uint64_t)st->next_attempt);
    p = put64(p, (apr_uint64_t)st->last_attempt);
    p = put64(p, (apr_uint64_t)st->last_success);
    p = put64(p, (apr_uint64_t)st->lease_until);
    p = put64(p, st->lease_owner);
    p = put64(p, (apr_uint64_t)st->resp_this_update);
    p = put64(p, (apr_uint64_t)st->resp_next_update);
    p = put32(p, st->resp_revoked);
    p = put32(p, st->alert);
    p = put32(p, st->failures);
    p = put32(p, st->fetches);
    p = put32(p, st->fetch_failures);
    p = put32(p, (apr_uint32_t)st->last_verdict);
    p = put32(p, (apr_uint32_t)st->last_resp_status);
    p[0] = (unsigned char)(errlen & 0xff);
    p[1] = (unsigned char)(errlen >> 8);
    memcpy(p + 2, st->last_error, errlen);
}

apr_status_t rs_state_decode(rs_state_t *st, const unsigned char *in, apr_size_t len)
{
    const unsigned char *p = in;
    apr_uint64_t v;
    apr_uint32_t u;
    size_t errlen;

    if (len != RS_STATE_WIRE_LEN || memcmp(p, STATE_MAGIC, 4) != 0)
        return APR_EINVAL;
    rs_state_init(st);
    p += 4;
    p = get64(p, &v); st->next_attempt = (apr_time_t)v;
    p = get64(p, &v); st->last_attempt = (apr_time_t)v;
    p = get64(p, &v); st->last_success = (apr_time_t)v;
    p = get64(p, &v); st->lease_until = (apr_time_t)v;
    p = get64(p, &st->lease_owner);
    p = get64(p, &v); st->resp_this_update = (apr_time_t)v;
    p = get64(p, &v); st->resp_next_update = (apr_time_t)v;
    p = get32(p, &st->resp_revoked);
    p = get32(p, &st->alert);
    p = get32(p, &st->failures);
    p = get32(p, &st->fetches);
    p = get32(p, &st->fetch_failures);
    p = get32(p, &u); st->last_verdict = (apr_int32_t)u;
    p = get32(p, &u); st->last_resp_status = (apr_int32_t)u;
    errlen = (size_t)p[0] | (size_t)p[1] << 8;
    /* a NUL inside the text would make it re-encode differently (fuzzing) */
    if (errlen >= RS_ERR_LEN || memchr(p + 2, 0, errlen))
        return APR_EINVAL;
    memcpy(st->last_error, p + 2, errlen);
    st->last_error[errlen] = '\0';
    return APR_SUCCESS;
}

void rs_record_key(unsigned char key[RS_KEY_LEN], char kind, const unsigned char *id)
{
    memcpy(key, id, RS_ID_LEN);
    key[RS_ID_LEN] = (unsigned char)kind;
}


void rs_lease_encode(apr_uint64_t owner, apr_time_t until, unsigned char out[RS_LEASE_WIRE_LEN])
{
    memcpy(out, LEASE_MAGIC, 4);
    rs_u64_encode(owner, out + 4);
    rs_u64_encode((apr_uint64_t)until, out + 12);
}

apr_status_t rs_lease_decode(const unsigned char *in, apr_size_t len, apr_uint64_t *owner,
                             apr_time_t *until)
{
    if (len != RS_LEASE_WIRE_LEN || memcmp(in, LEASE_MAGIC, 4) != 0)
        return APR_EINVAL;
    *owner = rs_u64_decode(in + 4);
    *until = (apr_time_t)rs_u64_decode(in + 12);
    return APR_SUCCESS;
}

apr_uint32_t rs_record_digest(char kind, const unsigned char *data, apr_size_t len)
{
    apr_uint32_t h = 2166136261u;
    apr_size_t i;

    h = (h ^ (unsigned char)kind) * 16777619u;
    for (i = 0; i < len; i++)
        h = (h ^ data[i]) * 16777619u;
    return h ? h : 1;
}
