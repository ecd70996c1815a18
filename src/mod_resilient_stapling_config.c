/* mod_resilient_stapling_config.c: directives. Every bad value fails startup
 * with a message that names the directive. */
#include <string.h>

#include <apr_strings.h>
#include <httpd.h>
#include <http_config.h>
#include <http_log.h>
#include <ap_provider.h>
#include <apr_file_info.h>

#include "mod_resilient_stapling.h"

#define UNSET_TIME ((apr_interval_time_t)-1)

void *rs_create_srv_conf(apr_pool_t *p, server_rec *s)
{
    rs_srv_conf_t *c = apr_pcalloc(p, sizeof(*c));
    (void)s;
    c->enabled = -1;
    c->renew_window_pct = -1;
    c->timeout = c->retry_min = c->retry_max = c->skew = UNSET_TIME;
    c->max_fetches = -1;
    c->method = -1;
    c->startup_wait = UNSET_TIME;
    return c;
}

#define MERGE(field, unset) (add->field != (unset) ? add->field : base->field)

void *rs_merge_srv_conf(apr_pool_t *p, void *basev, void *addv)
{
    const rs_srv_conf_t *base = basev, *add = addv;
    rs_srv_conf_t *c = apr_pcalloc(p, sizeof(*c));
    c->enabled = MERGE(enabled, -1);
    c->force_url = MERGE(force_url, NULL);
    c->cache_provider = MERGE(cache_provider, NULL);
    c->cache_args = MERGE(cache_args, NULL);
    c->renew_window_pct = MERGE(renew_window_pct, -1);
    c->timeout = MERGE(timeout, UNSET_TIME);
    c->retry_min = MERGE(retry_min, UNSET_TIME);
    c->retry_max = MERGE(retry_max, UNSET_TIME);
    c->skew = MERGE(skew, UNSET_TIME);
    c->proxy = MERGE(proxy, NULL);
    c->max_fetches = MERGE(max_fetches, -1);
    c->store = MERGE(store, NULL);
    c->notify_cmd = MERGE(notify_cmd, NULL);
    c->method = MERGE(method, -1);
    c->startup_wait = MERGE(startup_wait, UNSET_TIME);
    return c;
}

static rs_srv_conf_t *conf_of(cmd_parms *cmd)
{
    return ap_get_module_config(cmd->server->module_config, &resilient_stapling_module);
}

/* Whole seconds, at least min_sec; "1" is allowed so tests run fast. */
static const char *parse_seconds(cmd_parms *cmd, const char *arg, long min_sec,
                                 long max_sec, apr_interval_time_t *out)
{
    char *end;
    long v = strtol(arg, &end, 10);
    if (!*arg || *end || v < min_sec || v > max_sec)
        return apr_psprintf(cmd->pool, "%s: '%s' is not a number of seconds "
                            "between %ld and %ld", cmd->cmd->name, arg, min_sec, max_sec);
    *out = apr_time_from_sec(v);
    return NULL;
}

static const char *check_http_url(cmd_parms *cmd, const char *arg)
{
    if (strncasecmp(arg, "http://", 7) != 0 || strlen(arg) <= 7)
        return apr_psprintf(cmd->pool, "%s: '%s' is not an http:// URL",
                            cmd->cmd->name, arg);
    return NULL;
}

static const char *set_enabled(cmd_parms *cmd, void *dc, int flag)
{
    (void)dc;
    conf_of(cmd)->enabled = flag;
    return NULL;
}

static const char *set_force_url(cmd_parms *cmd, void *dc, const char *arg)
{
    const char *err = check_http_url(cmd, arg);
    (void)dc;
    if (err)
        return err;
    conf_of(cmd)->force_url = arg;
    return NULL;
}

static const char *set_cache(cmd_parms *cmd, void *dc, const char *arg)
{
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);
    rs_srv_conf_t *c = conf_of(cmd);
    const char *sep = strchr(arg, ':');
    const char *name = sep ? apr_pstrmemdup(cmd->pool, arg, (apr_size_t)(sep - arg)) : arg;
    (void)dc;
    if (err)
        return err;
    if (!ap_lookup_provider(AP_SOCACHE_PROVIDER_GROUP, name, AP_SOCACHE_PROVIDER_VERSION))
        return apr_psprintf(cmd->pool, "%s: unknown cache provider '%s' (is mod_socache_%s "
                            "loaded?)", cmd->cmd->name, name, name);
    c->cache_provider = name;
    c->cache_args = sep ? sep + 1 : NULL;
    return NULL;
}

static const char *set_renew_window(cmd_parms *cmd, void *dc, const char *arg)
{
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);
    char *end;
    long v;
    (void)dc;
    if (err)
        return err;
    v = strtol(arg, &end, 10);
    if (!*arg || (*end && strcmp(end, "%") != 0) || v < 1 || v > 99)
        return apr_psprintf(cmd->pool, "%s: '%s' is not a percentage between 1%% and 99%%",
                            cmd->cmd->name, arg);
    conf_of(cmd)->renew_window_pct = (int)v;
    return NULL;
}

static const char *set_timeout(cmd_parms *cmd, void *dc, const char *arg)
{
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);
    (void)dc;
    return err ? err : parse_seconds(cmd, arg, 1, 300, &conf_of(cmd)->timeout);
}

static const char *set_skew(cmd_parms *cmd, void *dc, const char *arg)
{
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);
    (void)dc;
    return err ? err : parse_seconds(cmd, arg, 0, 86400, &conf_of(cmd)->skew);
}

static const char *set_retry(cmd_parms *cmd, void *dc, const char *min, const char *max)
{
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);
    rs_srv_conf_t *c = conf_of(cmd);
    (void)dc;
    if (err || (err = parse_seconds(cmd, min, 1, 86400, &c->retry_min))
        || (err = parse_seconds(cmd, max, 1, 86400 * 7, &c->retry_max)))
        return err;
    if (c->retry_max < c->retry_min)
        return apr_psprintf(cmd->pool, "%s: the maximum (%s) is below the minimum (%s)",
                            cmd->cmd->name, max, min);
    return NULL;
}

static const char *set_proxy(cmd_parms *cmd, void *dc, const char *arg)
{
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);
    (void)dc;
    if (err || (err = check_http_url(cmd, arg)))
        return err;
    conf_of(cmd)->proxy = arg;
    return NULL;
}

static const char *set_max_fetches(cmd_parms *cmd, void *dc, const char *arg)
{
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);
    char *end;
    long v;
    (void)dc;
    if (err)
        return err;
    v = strtol(arg, &end, 10);
    if (!*arg || *end || v < 1 || v > 256)
        return apr_psprintf(cmd->pool, "%s: '%s' is not a number between 1 and 256",
                            cmd->cmd->name, arg);
    conf_of(cmd)->max_fetches = (int)v;
    return NULL;
}

static const char *set_store(cmd_parms *cmd, void *dc, const char *arg)
{
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);
    (void)dc;
    if (err)
        return err;
    if (!*arg)
        return apr_psprintf(cmd->pool, "%s: a directory or 'none' is needed", cmd->cmd->name);
    conf_of(cmd)->store = arg;
    return NULL;
}

static const char *set_notify_cmd(cmd_parms *cmd, void *dc, const char *arg)
{
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);
    apr_finfo_t fi;
    (void)dc;
    if (err)
        return err;
    if (!ap_os_is_path_absolute(cmd->pool, arg))
        return apr_psprintf(cmd->pool, "%s: '%s' is not an absolute path", cmd->cmd->name, arg);
    if (apr_stat(&fi, arg, APR_FINFO_TYPE | APR_FINFO_PROT, cmd->pool) != APR_SUCCESS
        || fi.filetype != APR_REG
        || !(fi.protection & (APR_FPROT_UEXECUTE | APR_FPROT_GEXECUTE | APR_FPROT_WEXECUTE)))
        return apr_psprintf(cmd->pool, "%s: '%s' is not an executable file", cmd->cmd->name,
                            arg);
    conf_of(cmd)->notify_cmd = arg;
    return NULL;
}

static const char *set_method(cmd_parms *cmd, void *dc, const char *arg)
{
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);
    (void)dc;
    if (err)
        return err;
    if (!strcasecmp(arg, "auto"))
        conf_of(cmd)->method = RS_FETCH_AUTO;
    else if (!strcasecmp(arg, "get"))
        conf_of(cmd)->method = RS_FETCH_GET_ONLY;
    else if (!strcasecmp(arg, "post"))
        conf_of(cmd)->method = RS_FETCH_POST_ONLY;
    else
        return apr_psprintf(cmd->pool, "%s: '%s' is not auto, get or post", cmd->cmd->name,
                            arg);
    return NULL;
}

static const char *set_startup_wait(cmd_parms *cmd, void *dc, const char *arg)
{
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);
    (void)dc;
    return err ? err : parse_seconds(cmd, arg, 0, 60, &conf_of(cmd)->startup_wait);
}

const command_rec rs_cmds[] = {
    AP_INIT_FLAG("ResilientStapling", set_enabled, NULL, RSRC_CONF,
                 "on|off: staple OCSP responses for this server's certificates"),
    AP_INIT_TAKE1("ResilientStaplingForceURL", set_force_url, NULL, RSRC_CONF,
                  "responder URL to use instead of the certificate's AIA"),
    AP_INIT_TAKE1("ResilientStaplingCache", set_cache, NULL, RSRC_CONF,
                  "provider[:args] of the shared cache (default: shmcb sized "
                  "for the certificates)"),
    AP_INIT_TAKE1("ResilientStaplingRenewWindow", set_renew_window, NULL, RSRC_CONF,
                  "N%: renew when N percent of a response's lifetime remains (50%)"),
    AP_INIT_TAKE1("ResilientStaplingResponderTimeout", set_timeout, NULL, RSRC_CONF,
                  "seconds: total deadline of one fetch (10)"),
    AP_INIT_TAKE2("ResilientStaplingRetry", set_retry, NULL, RSRC_CONF,
                  "min max seconds: backoff bounds after a failed fetch (60 3600)"),
    AP_INIT_TAKE1("ResilientStaplingClockSkew", set_skew, NULL, RSRC_CONF,
                  "seconds: tolerance for a thisUpdate in the future (300)"),
    AP_INIT_TAKE1("ResilientStaplingProxy", set_proxy, NULL, RSRC_CONF,
                  "http://host:port of a proxy for fetches"),
    AP_INIT_TAKE1("ResilientStaplingMaxFetches", set_max_fetches, NULL, RSRC_CONF,
                  "fetches in flight at once for the whole server (8)"),
    AP_INIT_TAKE1("ResilientStaplingStore", set_store, NULL, RSRC_CONF,
                  "directory for the persistent copy of responses, or 'none' "
                  "(default: state/resilient_stapling under ServerRoot)"),
    AP_INIT_TAKE1("ResilientStaplingNotifyCmd", set_notify_cmd, NULL, RSRC_CONF,
                  "program run on expiring, expired, revoked and recovered, with the "
                  "arguments EVENT ID SUBJECT STATE REASON"),
    AP_INIT_TAKE1("ResilientStaplingMethod", set_method, NULL, RSRC_CONF,
                  "auto|get|post: auto asks by RFC 5019 GET when the request fits in "
                  "255 bytes and falls back to POST in the same round (auto)"),
    AP_INIT_TAKE1("ResilientStaplingStartupWait", set_startup_wait, NULL, RSRC_CONF,
                  "seconds: at startup and reload, how long certificates without a valid "
                  "response are fetched for before children serve them; 0: off (5)"),
    {NULL}
};
