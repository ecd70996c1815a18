/* rs_store.c: see rs_store.h. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <apr_file_io.h>
#include <apr_file_info.h>
#include <apr_strings.h>

#include "rs_store.h"

#define TMP_MARK ".tmp."
static const char *const SUFFIX[] = {".der", ".state"};

static const char *path_of(const char *dir, const unsigned char *id, rs_store_kind_e kind,
                           apr_pool_t *p)
{
    char hex[2 * RS_ID_LEN + 1];
    return apr_pstrcat(p, dir, "/", rs_id_hex(id, hex), SUFFIX[kind], NULL);
}

apr_status_t rs_store_prepare(const char *dir, apr_pool_t *p)
{
    char *path = apr_pstrdup(p, dir), *c;

    /* each missing parent, 0755 whatever the umask: it only has to be
     * traversable; the store itself holds the private files */
    for (c = path + 1; *c; c++) {
        if (*c != '/')
            continue;
        *c = '\0';
        if (mkdir(path, 0755) == 0) {
            if (chmod(path, 0755) != 0)
                return errno;
        }
        else if (errno != EEXIST)
            return errno;
        *c = '/';
    }
    if (mkdir(path, 0700) != 0 && errno != EEXIST)
        return errno;
    return APR_SUCCESS;
}

apr_status_t rs_store_secure(const char *dir, int as_root, unsigned uid, unsigned gid,
                             char *err, apr_size_t errlen)
{
    struct stat st;
    apr_status_t rv = APR_SUCCESS;
    int fd;

    if (lstat(dir, &st) != 0) {
        rv = errno;
        snprintf(err, errlen, "cannot examine it: %s", strerror(errno));
        return rv;
    }
    if (S_ISLNK(st.st_mode)) {
        snprintf(err, errlen, "it is a symbolic link; name the real directory");
        return APR_EINVAL;
    }
    /* O_NOFOLLOW: a link swapped in after the lstat is not followed either */
    fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        rv = errno;
        snprintf(err, errlen, "cannot open it: %s", strerror(errno));
        return rv;
    }
    if (fstat(fd, &st) != 0 || !S_ISDIR(st.st_mode)) {
        snprintf(err, errlen, "it is not a directory");
        rv = APR_EINVAL;
    }
    else if (st.st_mode & S_IWOTH) {
        snprintf(err, errlen, "it is world-writable (mode %04o): anyone could plant files",
                 (unsigned)(st.st_mode & 07777));
        rv = APR_EINVAL;
    }
    else if (st.st_uid != uid && !(as_root && st.st_uid == 0)) {
        snprintf(err, errlen, "it belongs to uid %u, not to the server's user (uid %u)",
                 (unsigned)st.st_uid, uid);
        rv = APR_EINVAL;
    }
    else if (as_root && (st.st_uid != uid || st.st_gid != gid) && fchown(fd, uid, gid) != 0) {
        rv = errno;
        snprintf(err, errlen, "cannot give it to uid %u: %s", uid, strerror(errno));
    }
    else if ((st.st_mode & 07777) != 0700 && fchmod(fd, 0700) != 0) {
        rv = errno;
        snprintf(err, errlen, "cannot make it mode 0700: %s", strerror(errno));
    }
    close(fd);
    return rv;
}

/* A new file from the template tmp (mkstemp semantics: a unique name, so
 * two writers never share a file), mode 0600; synced: its bytes on disk
 * before it is closed, so that a rename never exposes an empty file after
 * a crash. The file is removed if any step fails. */
static apr_status_t write_file(char *tmp, const void *data, apr_size_t len, int synced,
                               apr_pool_t *p)
{
    apr_file_t *f;
    apr_size_t written;
    apr_status_t rv;

    rv = apr_file_mktemp(&f, tmp, APR_FOPEN_CREATE | APR_FOPEN_WRITE | APR_FOPEN_EXCL, p);
    if (rv != APR_SUCCESS)
        return rv;
    rv = apr_file_perms_set(tmp, APR_FPROT_UREAD | APR_FPROT_UWRITE);
    if (rv == APR_SUCCESS || rv == APR_ENOTIMPL)
        rv = apr_file_write_full(f, data, len, &written);
    if (rv == APR_SUCCESS && synced)
        rv = apr_file_sync(f);
    apr_file_close(f);
    if (rv != APR_SUCCESS)
        apr_file_remove(tmp, p);
    return rv;
}

apr_status_t rs_store_probe(const char *dir, apr_pool_t *p)
{
    char *tmp = apr_pstrcat(p, dir, "/probe" TMP_MARK "XXXXXX", NULL);
    apr_status_t rv = write_file(tmp, "probe\n", 6, 1, p);
    if (rv == APR_SUCCESS)
        apr_file_remove(tmp, p);
    return rv;
}

/* The rename is durable only once the directory entry is on disk. */
static apr_status_t sync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    apr_status_t rv = APR_SUCCESS;
    if (fd < 0)
        return errno;
    if (fsync(fd) != 0)
        rv = errno;
    close(fd);
    return rv;
}

/* What a crash may cost, and what it may not. The rename is atomic: after
 * a power loss the name holds the old file or the new one, never neither
 * and never a mix. A response's bytes are synced before the rename, so the
 * new name never points at an empty file, and the directory after it, so
 * that a response written is a response a restart finds (a new
 * certificate's first response included: without it a crash in the next
 * few seconds, ext4 commits every 5 s, left nothing to staple at start).
 * A state file is not synced at all: counters and backoff, which a crash
 * may lose or leave torn, and which rs_state_decode then refuses (the
 * certificate starts from a fresh state; its response is what matters).
 * Every file read back is validated (rs_store.h). At 10,000 certificates
 * four fsyncs per fetch (both files and the directory after each) were
 * most of the time until all were fetched; two remain. */
apr_status_t rs_store_save(const char *dir, const unsigned char *id, rs_store_kind_e kind,
                           const unsigned char *der, apr_size_t len, apr_pool_t *p)
{
    const char *final = path_of(dir, id, kind, p);
    char *tmp = apr_pstrcat(p, final, TMP_MARK "XXXXXX", NULL);
    int response = kind == RS_STORE_RESPONSE;
    apr_status_t rv = write_file(tmp, der, len, response, p);

    if (rv != APR_SUCCESS)
        return rv;
    if ((rv = apr_file_rename(tmp, final, p)) != APR_SUCCESS) {
        apr_file_remove(tmp, p);
        return rv;
    }
    return response ? sync_dir(dir) : APR_SUCCESS;
}

apr_status_t rs_store_load(const char *dir, const unsigned char *id, rs_store_kind_e kind,
                           apr_pool_t *p, unsigned char **pder, apr_size_t *plen)
{
    const char *path = path_of(dir, id, kind, p);
    apr_finfo_t fi;
    apr_file_t *f;
    apr_size_t n;
    apr_status_t rv;

    *pder = NULL;
    *plen = 0;
    rv = apr_stat(&fi, path, APR_FINFO_SIZE | APR_FINFO_TYPE, p);
    if (APR_STATUS_IS_ENOENT(rv))
        return APR_ENOENT;
    if (rv != APR_SUCCESS)
        return rv;
    if (fi.filetype != APR_REG || fi.size <= 0 || fi.size > RS_MAX_RESPONSE_LEN)
        return APR_EINVAL;
    if ((rv = apr_file_open(&f, path, APR_FOPEN_READ, 0, p)) != APR_SUCCESS)
        return rv;
    n = (apr_size_t)fi.size;
    *pder = apr_palloc(p, n);
    rv = apr_file_read_full(f, *pder, n, plen);
    apr_file_close(f);
    return rv;
}

apr_status_t rs_store_remove(const char *dir, const unsigned char *id, apr_pool_t *p)
{
    apr_status_t rv = apr_file_remove(path_of(dir, id, RS_STORE_RESPONSE, p), p);
    apr_file_remove(path_of(dir, id, RS_STORE_STATE, p), p);
    return rv;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

static int parse_name(const char *name, unsigned char *id)
{
    int i;
    if (strlen(name) <= 2 * RS_ID_LEN
        || (strcmp(name + 2 * RS_ID_LEN, SUFFIX[RS_STORE_RESPONSE]) != 0
            && strcmp(name + 2 * RS_ID_LEN, SUFFIX[RS_STORE_STATE]) != 0))
        return 0;
    for (i = 0; i < RS_ID_LEN; i++) {
        int hi = hexval(name[2 * i]), lo = hexval(name[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return 0;
        id[i] = (unsigned char)(hi << 4 | lo);
    }
    return 1;
}

apr_status_t rs_store_list(const char *dir, apr_pool_t *p, apr_array_header_t **pids)
{
    apr_dir_t *d;
    apr_finfo_t fi;
    apr_status_t rv;

    *pids = apr_array_make(p, 16, RS_ID_LEN);
    if ((rv = apr_dir_open(&d, dir, p)) != APR_SUCCESS)
        return rv;
    while (apr_dir_read(&fi, APR_FINFO_NAME | APR_FINFO_TYPE, d) == APR_SUCCESS) {
        unsigned char id[RS_ID_LEN];
        if (fi.filetype != APR_REG)
            continue;
        if (strstr(fi.name, TMP_MARK))
            apr_file_remove(apr_pstrcat(p, dir, "/", fi.name, NULL), p);
        else if (parse_name(fi.name, id))
            memcpy(apr_array_push(*pids), id, RS_ID_LEN);
    }
    apr_dir_close(d);
    return APR_SUCCESS;
}
