/* rs_sched.c: scheduling rules for fetches (see rs_sched.h). */
#include <string.h>
#include <apr_lib.h>
#include <apr_strings.h>

#include "rs_sched.h"

#define JITTER_FRACTION 0.10

void rs_state_init(rs_state_t *st)
{
    memset(st, 0, sizeof(*st));
    st->last_verdict = -1;
    st->last_resp_status = -1;
    st->last_method = -1;
}

rs_result_e rs_result_of(const rs_ocsp_result_t *res, int newer)
{
    switch (res->verdict) {
    case RS_VERDICT_GOOD:
    case RS_VERDICT_REVOKED:
        return newer ? RS_RESULT_OK : RS_RESULT_NOT_NEWER;
    case RS_VERDICT_TRANSPORT:
        return RS_RESULT_TRANSPORT;
    case RS_VERDICT_HTTP:
        return RS_RESULT_HTTP;
    case RS_VERDICT_NOT_NEWER:
        return RS_RESULT_NOT_NEWER;
    case RS_VERDICT_RESPONDER_ERROR:
        return RS_RESULT_RESPONDER_ERROR;
    default:
        return RS_RESULT_INVALID;
    }
}

void rs_state_count(rs_state_t *st, rs_method_e method, rs_result_e result)
{
    if ((unsigned)method >= RS_METHOD_COUNT || (unsigned)result >= RS_RESULT_COUNT)
        return;
    st->last_method = (apr_int32_t)method;
    st->attempts[method][result]++;
}

const char *rs_method_name(rs_method_e method)
{
    return method == RS_METHOD_GET ? "GET" : method == RS_METHOD_POST ? "POST" : "none";
}

const char *rs_result_name(rs_result_e result)
{
    static const char *const names[RS_RESULT_COUNT] = {
        "ok", "transport", "http", "responder-error", "invalid", "not-newer"};
    return (unsigned)result < RS_RESULT_COUNT ? names[result] : "none";
}

/* Children read the clock at different moments (a scheduler pass reads it
 * once, then walks every certificate): a lease another child took a moment
 * later ends a little after now + lease. Only what lies beyond this slack is
 * a lie. */
#define BOUND_SLACK apr_time_from_sec(60)

int rs_state_bound(rs_state_t *st, apr_time_t now, const rs_sched_conf_t *conf)
{
    apr_time_t latest = now + conf->retry_max + BOUND_SLACK;
    int changed = 0;

    if (st->resp_next_update > now) {
        /* the latest renewal any jitter gives the held response */
        apr_time_t renew = rs_sched_renew_at(conf, st->resp_this_update, st->resp_next_update,
                                             0, 1.0) + BOUND_SLACK;
        if (renew > latest)
            latest = renew;
    }
    if (st->next_attempt > latest) {
        st->next_attempt = latest;
        changed = 1;
    }
    if (st->forced_next > latest) {
        st->forced_next = latest;
        changed = 1;
    }
    if (st->lease_until > now + conf->lease + BOUND_SLACK) {
        st->lease_until = 0;
        st->lease_owner = 0;
        changed = 1;
    }
    return changed;
}

int rs_state_force(rs_state_t *st, apr_time_t now, apr_time_t *forced_at,
                   apr_interval_time_t min_interval)
{
    if (*forced_at && now >= *forced_at && now - *forced_at < min_interval)
        return 0;
    *forced_at = now;
    /* keep the schedule's own time, unless an earlier force already did */
    if (!st->forced_next)
        st->forced_next = st->next_attempt > now ? st->next_attempt : now;
    rs_state_request_refresh(st);
    return 1;
}

int rs_state_claim(rs_state_t *st, apr_uint64_t owner, apr_time_t now,
                   const rs_sched_conf_t *conf, int force)
{
    if (st->next_attempt > now && !force)
        return 0;
    /* A lease outlives a fetch that crashed its child, but only until it expires. */
    if (st->lease_until > now && st->lease_owner != owner)
        return 0;
    st->lease_owner = owner;
    st->lease_until = now + conf->lease;
    return 1;
}

void rs_state_request_refresh(rs_state_t *st)
{
    st->next_attempt = 0;
    st->refresh_asked = 1;
}

void rs_state_unclaim(rs_state_t *st, apr_uint64_t owner)
{
    if (st->lease_owner != owner)
        return;
    st->lease_owner = 0;
    st->lease_until = 0;
}

apr_time_t rs_sched_renew_at(const rs_sched_conf_t *conf, apr_time_t this_update,
                             apr_time_t next_update, apr_time_t last_fetch, double jitter)
{
    apr_interval_time_t lifetime = next_update - this_update;
    apr_interval_time_t window;
    apr_time_t at;

    if (lifetime < 0)
        lifetime = 0;
    window = (apr_interval_time_t)((double)lifetime * conf->renew_window_pct / 100.0);
    at = next_update - window + (apr_interval_time_t)(jitter * JITTER_FRACTION * (double)window);
    if (at < last_fetch + conf->retry_min)
        at = last_fetch + conf->retry_min;
    return at;
}

apr_time_t rs_sched_retry_at(const rs_sched_conf_t *conf, apr_time_t now,
                             unsigned failures, double jitter)
{
    apr_interval_time_t delay = conf->retry_min;
    unsigned i;

    for (i = 1; i < failures && delay < conf->retry_max; i++)
        delay *= 2;
    delay += (apr_interval_time_t)(jitter * JITTER_FRACTION * (double)delay);
    if (delay > conf->retry_max)
        delay = conf->retry_max;
    if (delay < conf->retry_min)
        delay = conf->retry_min;
    return now + delay;
}

int rs_sched_should_replace(apr_time_t stored_this, apr_time_t stored_next,
                            apr_time_t cand_this, apr_time_t cand_next, apr_time_t now)
{
    if (cand_this == stored_this && cand_next == stored_next)
        return 0;
    if (stored_this == 0 || stored_next <= now)
        return 1;
    if (cand_this != stored_this)
        return cand_this > stored_this;
    return cand_next > stored_next;
}

/* The next attempt never lands past the held response's nextUpdate minus
 * a margin (a tenth of its lifetime, within [1 s, 5 min]): whatever the
 * backoff or the retry minimum say, a response that cannot be renewed is
 * tried for again while it is still valid. Past that point, attempts come
 * at half the time left (at least 1 s apart). */
#define HELD_MARGIN_MIN apr_time_from_sec(1)
#define HELD_MARGIN_MAX apr_time_from_sec(300)

static void cap_to_held(rs_state_t *st, apr_time_t now)
{
    apr_interval_time_t margin = (st->resp_next_update - st->resp_this_update) / 10;
    apr_time_t limit, soon;

    if (st->resp_next_update <= now || !st->resp_this_update)
        return;
    if (margin < HELD_MARGIN_MIN)
        margin = HELD_MARGIN_MIN;
    if (margin > HELD_MARGIN_MAX)
        margin = HELD_MARGIN_MAX;
    limit = st->resp_next_update - margin;
    if (st->next_attempt <= limit)
        return;
    soon = now + (st->resp_next_update - now) / 2;
    if (soon < now + HELD_MARGIN_MIN)
        soon = now + HELD_MARGIN_MIN;
    st->next_attempt = limit > now ? limit : soon;
}

apr_time_t rs_sched_fast_retry_at(const rs_sched_conf_t *conf, apr_time_t now,
                                  unsigned failures, double jitter)
{
    apr_interval_time_t fast;
    apr_time_t configured;

    if (failures > RS_FAST_STEPS)
        return rs_sched_retry_at(conf, now, failures - RS_FAST_STEPS, jitter);
    fast = RS_FAST_FIRST << (failures > 0 ? failures - 1 : 0);
    fast += (apr_interval_time_t)(jitter * JITTER_FRACTION * (double)fast);
    configured = rs_sched_retry_at(conf, now, failures, jitter);
    return now + fast < configured ? now + fast : configured;
}

static void release(rs_state_t *st, apr_time_t now)
{
    st->forced_next = 0;
    st->lease_until = 0;
    st->lease_owner = 0;
    st->last_attempt = now;
    st->fetches++;
    st->refresh_asked = 0;
}

void rs_state_success(rs_state_t *st, apr_time_t now, const rs_ocsp_result_t *fetched,
                      int replaced, const rs_sched_conf_t *conf, double jitter)
{
    release(st, now);
    st->failures = 0;
    st->last_success = now;
    st->last_verdict = fetched->verdict;
    st->last_resp_status = fetched->resp_status;
    st->last_error[0] = '\0';
    if (replaced) {
        st->resp_this_update = fetched->this_update;
        st->resp_next_update = fetched->next_update;
        st->resp_revoked = fetched->verdict == RS_VERDICT_REVOKED;
    }
    /* Schedule from what is stored: if the responder handed back an older
     * response than ours, ours decides when renewal is due. */
    st->next_attempt = rs_sched_renew_at(conf, st->resp_this_update, st->resp_next_update,
                                         now, jitter);
    cap_to_held(st, now);
}

void rs_state_adopt(rs_state_t *st, apr_time_t now, const rs_ocsp_result_t *adopted,
                    const rs_sched_conf_t *conf, double jitter)
{
    st->forced_next = 0;
    st->lease_until = 0;
    st->lease_owner = 0;
    st->failures = 0;
    st->refresh_asked = 0;
    st->resp_this_update = adopted->this_update;
    st->resp_next_update = adopted->next_update;
    st->resp_revoked = adopted->verdict == RS_VERDICT_REVOKED;
    st->next_attempt = rs_sched_renew_at(conf, st->resp_this_update, st->resp_next_update, 0,
                                         jitter);
    if (st->next_attempt < now)
        st->next_attempt = now;
    cap_to_held(st, now);
}

rs_fleet_action_e rs_fleet_decide(const rs_sched_conf_t *conf, const rs_state_t *st,
                                  const rs_ocsp_result_t *fleet, apr_uint64_t lease_owner,
                                  apr_time_t lease_until, apr_uint64_t me, apr_time_t now,
                                  apr_time_t *wait_until)
{
    *wait_until = 0;
    if (st->refresh_asked)
        return RS_FLEET_FETCH;
    /* earliest renewal any server's jitter could give the fleet's response */
    if (fleet && rs_verdict_is_valid(fleet->verdict)
        && rs_sched_should_replace(st->resp_this_update, st->resp_next_update,
                                   fleet->this_update, fleet->next_update, now)
        && rs_sched_renew_at(conf, fleet->this_update, fleet->next_update, 0, -1.0) > now)
        return RS_FLEET_ADOPT;
    /* someone of this server stored a response (from the fleet) meanwhile */
    if (st->next_attempt > now) {
        *wait_until = st->next_attempt;
        return RS_FLEET_WAIT;
    }
    if (lease_owner && lease_owner != me && lease_until > now) {
        *wait_until = lease_until;
        return RS_FLEET_WAIT;
    }
    return RS_FLEET_FETCH;
}

void rs_state_failure(rs_state_t *st, apr_time_t now, rs_verdict_e verdict,
                      int resp_status, const char *reason,
                      const rs_sched_conf_t *conf, double jitter)
{
    apr_time_t scheduled = st->forced_next;

    release(st, now);
    st->fetch_failures++;
    st->last_verdict = verdict;
    st->last_resp_status = resp_status;
    apr_cpystrn(st->last_error, reason ? reason : rs_verdict_name(verdict),
                sizeof(st->last_error));
    /* a forced attempt that failed changes nothing the schedule decided:
     * the same consecutive failures, the same next attempt (unless that
     * was due by now anyway, then this attempt was the scheduled one) */
    if (scheduled > now) {
        st->next_attempt = scheduled;
        return;
    }
    st->failures++;
    /* nothing valid held: a certificate that is new to its responder
     * (unauthorized for a moment after issuance) is asked again soon */
    if (st->resp_next_update <= now)
        st->next_attempt = rs_sched_fast_retry_at(conf, now, st->failures, jitter);
    else
        st->next_attempt = rs_sched_retry_at(conf, now, st->failures, jitter);
    cap_to_held(st, now);
}

int rs_slots_take(rs_slots_t *slots, int max, apr_uint32_t responder, apr_uint64_t owner,
                  apr_time_t now, apr_time_t until)
{
    int i, busy_same = 0, free_index = -1;
    int per_responder = max / 2 > 0 ? max / 2 : 1;

    if (max > RS_MAX_SLOTS)
        max = RS_MAX_SLOTS;
    for (i = 0; i < max; i++) {
        if (slots->slot[i].until > now) {
            if (slots->slot[i].responder == responder)
                busy_same++;
        }
        else if (free_index < 0) {
            free_index = i;
        }
    }
    if (free_index < 0)
        return RS_SLOTS_FULL;
    if (busy_same >= per_responder)
        return RS_SLOTS_RESPONDER_FULL;
    slots->slot[free_index].until = until;
    slots->slot[free_index].owner = owner;
    slots->slot[free_index].responder = responder;
    return free_index;
}

void rs_slots_release(rs_slots_t *slots, int index, apr_uint64_t owner)
{
    /* only our own: an expired slot may have been taken by another fetch */
    if (index >= 0 && index < RS_MAX_SLOTS && slots->slot[index].owner == owner)
        memset(&slots->slot[index], 0, sizeof(slots->slot[index]));
}

apr_uint32_t rs_responder_key(const char *url)
{
    /* FNV-1a over "scheme://host:port", case-insensitive */
    apr_uint32_t h = 2166136261u;
    const char *p = strstr(url, "://");
    const char *end = p ? strchr(p + 3, '/') : NULL;
    size_t len = end ? (size_t)(end - url) : strlen(url);
    size_t i;
    for (i = 0; i < len; i++) {
        h ^= (unsigned char)apr_tolower(url[i]);
        h *= 16777619u;
    }
    return h;
}
