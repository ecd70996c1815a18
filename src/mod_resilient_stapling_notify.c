/* mod_resilient_stapling_notify.c: ResilientStaplingNotifyCmd.
 *
 * Alerts (expiring, expired, revoked, recovered) are queued by whoever
 * noticed them and run by one notifier thread per child, so neither a
 * handshake nor the refresher ever waits for the program. The program runs
 * without a shell, with the arguments
 *     EVENT CERTIFICATE-ID SUBJECT STATE REASON
 * under a deadline; its exit status is logged.
 */
#include <stdlib.h>
#include <string.h>

#include <apr_queue.h>
#include <apr_strings.h>
#include <apr_thread_proc.h>
#include <httpd.h>
#include <http_log.h>

#include "mod_resilient_stapling.h"

APLOG_USE_MODULE(resilient_stapling);

#define QUEUE_LEN 64
#define RUN_DEADLINE apr_time_from_sec(10)

typedef struct {
    char *argv[7];
} job_t;

struct rs_notifier_t {
    const char *cmd;
    server_rec *s;
    apr_pool_t *pool;
    apr_queue_t *queue;
    apr_thread_t *thread;
};

static void job_free(job_t *j)
{
    int i;
    for (i = 1; i < 6; i++)
        free(j->argv[i]);
    free(j);
}

static void run(rs_notifier_t *n, job_t *j)
{
    apr_pool_t *p;
    apr_procattr_t *attr;
    apr_proc_t proc;
    apr_exit_why_e why = APR_PROC_EXIT;
    int code = 0;
    apr_time_t deadline = apr_time_now() + RUN_DEADLINE;
    apr_status_t rv;

    apr_pool_create(&p, n->pool);
    j->argv[0] = (char *)n->cmd;
    if ((rv = apr_procattr_create(&attr, p)) != APR_SUCCESS
        || (rv = apr_procattr_cmdtype_set(attr, APR_PROGRAM_ENV)) != APR_SUCCESS
        || (rv = apr_procattr_error_check_set(attr, 1)) != APR_SUCCESS
        || (rv = apr_proc_create(&proc, n->cmd, (const char *const *)j->argv, NULL, attr, p))
               != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_ERR, rv, n->s,
                     "RS0401: cannot run ResilientStaplingNotifyCmd %s for %s %s", n->cmd,
                     j->argv[1], j->argv[3]);
        apr_pool_destroy(p);
        return;
    }
    while ((rv = apr_proc_wait(&proc, &code, &why, APR_NOWAIT)) == APR_CHILD_NOTDONE
           && apr_time_now() < deadline)
        apr_sleep(apr_time_from_msec(50));
    if (rv == APR_CHILD_NOTDONE) {
        apr_proc_kill(&proc, SIGKILL);
        apr_proc_wait(&proc, &code, &why, APR_WAIT);
        ap_log_error(APLOG_MARK, APLOG_ERR, 0, n->s,
                     "RS0402: ResilientStaplingNotifyCmd %s %s %s took longer than %d s, "
                     "killed", n->cmd, j->argv[1], j->argv[3],
                     (int)apr_time_sec(RUN_DEADLINE));
    }
    else {
        ap_log_error(APLOG_MARK, code == 0 && APR_PROC_CHECK_EXIT(why) ? APLOG_INFO : APLOG_ERR,
                     0, n->s, "RS0403: ResilientStaplingNotifyCmd %s %s %s exited with %s %d",
                     n->cmd, j->argv[1], j->argv[3],
                     APR_PROC_CHECK_EXIT(why) ? "status" : "signal", code);
    }
    apr_pool_destroy(p);
}

static void *APR_THREAD_FUNC notifier_main(apr_thread_t *t, void *data)
{
    rs_notifier_t *n = data;
    void *item;
    (void)t;
    while (apr_queue_pop(n->queue, &item) == APR_SUCCESS) {
        run(n, item);
        job_free(item);
    }
    return NULL;
}

static apr_status_t notifier_stop(void *data)
{
    rs_notifier_t *n = data;
    apr_status_t trv;
    void *item;
    apr_queue_interrupt_all(n->queue);
    apr_queue_term(n->queue);
    apr_thread_join(&trv, n->thread);
    while (apr_queue_trypop(n->queue, &item) == APR_SUCCESS)
        job_free(item);
    return APR_SUCCESS;
}

apr_status_t rs_notifier_start(rs_notifier_t **pn, const char *cmd, server_rec *s,
                               apr_pool_t *pchild)
{
    rs_notifier_t *n = apr_pcalloc(pchild, sizeof(*n));
    apr_status_t rv;

    *pn = NULL;
    n->cmd = cmd;
    n->s = s;
    if ((rv = rs_thread_pool_create(&n->pool, pchild)) != APR_SUCCESS
        || (rv = apr_queue_create(&n->queue, QUEUE_LEN, n->pool)) != APR_SUCCESS
        || (rv = apr_thread_create(&n->thread, NULL, notifier_main, n, n->pool)) != APR_SUCCESS)
        return rv;
    apr_pool_pre_cleanup_register(pchild, n, notifier_stop);
    *pn = n;
    return APR_SUCCESS;
}

void rs_notify(rs_notifier_t *n, const rs_entry_t *e, const char *event, const char *state,
               const char *reason)
{
    job_t *j;
    if (!n)
        return;
    j = calloc(1, sizeof(*j));
    if (!j)
        return;
    j->argv[1] = strdup(event);
    j->argv[2] = strdup(e->id_hex);
    j->argv[3] = strdup(e->cert->subject);
    j->argv[4] = strdup(state);
    j->argv[5] = strdup(reason ? reason : "");
    if (!j->argv[1] || !j->argv[2] || !j->argv[3] || !j->argv[4] || !j->argv[5]
        || apr_queue_trypush(n->queue, j) != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_WARNING, 0, n->s,
                     "RS0404: notification queue full, %s of %s not sent to %s", event,
                     e->cert->subject, n->cmd);
        job_free(j);
    }
}
