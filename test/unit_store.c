/* Unit tests: the persistent store writes atomically, privately, and reads
 * back bounded bytes. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include <apr_file_io.h>
#include <apr_general.h>
#include <apr_strings.h>

#include "rs_store.h"

static apr_pool_t *pool;
static char *dir;

static int setup(void **state)
{
    char tmpl[] = "/tmp/rs-store-test.XXXXXX";
    (void)state;
    apr_initialize();
    apr_pool_create(&pool, NULL);
    if (!mkdtemp(tmpl))
        return -1;
    dir = apr_pstrcat(pool, tmpl, "/store/sub", NULL);
    return rs_store_prepare(dir, pool) == APR_SUCCESS ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    apr_dir_remove(dir, pool);
    apr_pool_destroy(pool);
    apr_terminate();
    return 0;
}

static void id_of(unsigned char *id, int n)
{
    memset(id, 0, RS_ID_LEN);
    id[0] = (unsigned char)n;
    id[19] = 0xfe;
}

static void test_roundtrip_and_mode(void **state)
{
    unsigned char id[RS_ID_LEN], *der;
    apr_size_t len;
    struct stat sb;
    char hex[41];
    (void)state;
    id_of(id, 1);
    assert_int_equal(rs_store_save(dir, id, RS_STORE_RESPONSE, (const unsigned char *)"response-1",
                                   10, pool), APR_SUCCESS);
    assert_int_equal(rs_store_save(dir, id, RS_STORE_RESPONSE,
                                   (const unsigned char *)"response-2!", 11, pool), APR_SUCCESS);
    assert_int_equal(rs_store_save(dir, id, RS_STORE_STATE, (const unsigned char *)"st", 2, pool),
                     APR_SUCCESS);
    assert_int_equal(rs_store_load(dir, id, RS_STORE_RESPONSE, pool, &der, &len), APR_SUCCESS);
    assert_int_equal(len, 11);
    assert_memory_equal(der, "response-2!", 11);
    assert_int_equal(rs_store_load(dir, id, RS_STORE_STATE, pool, &der, &len), APR_SUCCESS);
    assert_memory_equal(der, "st", 2);
    assert_int_equal(stat(apr_pstrcat(pool, dir, "/", rs_id_hex(id, hex), ".der", NULL), &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0600);
    assert_int_equal(stat(dir, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0700);
}

static void test_missing_and_oversized(void **state)
{
    unsigned char id[RS_ID_LEN], *der, *big = calloc(1, RS_MAX_RESPONSE_LEN + 1);
    apr_size_t len;
    (void)state;
    id_of(id, 2);
    assert_int_equal(rs_store_load(dir, id, RS_STORE_RESPONSE, pool, &der, &len), APR_ENOENT);
    assert_int_equal(rs_store_save(dir, id, RS_STORE_RESPONSE, big, RS_MAX_RESPONSE_LEN + 1, pool),
                     APR_SUCCESS);
    assert_int_equal(rs_store_load(dir, id, RS_STORE_RESPONSE, pool, &der, &len), APR_EINVAL);
    assert_int_equal(rs_store_remove(dir, id, pool), APR_SUCCESS);
    assert_int_equal(rs_store_load(dir, id, RS_STORE_RESPONSE, pool, &der, &len), APR_ENOENT);
    free(big);
}

static void test_list_skips_junk_and_cleans_temporaries(void **state)
{
    unsigned char id[RS_ID_LEN];
    apr_array_header_t *ids;
    apr_file_t *f;
    const char *tmp = apr_pstrcat(pool, dir, "/0100000000000000000000000000000000000000.der.tmp.abc", NULL);
    (void)state;
    id_of(id, 3);
    rs_store_save(dir, id, RS_STORE_RESPONSE, (const unsigned char *)"x", 1, pool);
    apr_file_open(&f, apr_pstrcat(pool, dir, "/README", NULL),
                  APR_FOPEN_CREATE | APR_FOPEN_WRITE, APR_FPROT_OS_DEFAULT, pool);
    apr_file_close(f);
    apr_file_open(&f, apr_pstrcat(pool, dir, "/ZZ00000000000000000000000000000000000000.der", NULL),
                  APR_FOPEN_CREATE | APR_FOPEN_WRITE, APR_FPROT_OS_DEFAULT, pool);
    apr_file_close(f);
    apr_file_open(&f, tmp, APR_FOPEN_CREATE | APR_FOPEN_WRITE, APR_FPROT_OS_DEFAULT, pool);
    apr_file_close(f);

    assert_int_equal(rs_store_list(dir, pool, &ids), APR_SUCCESS);
    assert_int_equal(ids->nelts, 3); /* id 1 (response and state) and id 3 */
    {
        int i, found = 0;
        for (i = 0; i < ids->nelts; i++)
            found += memcmp(ids->elts + i * RS_ID_LEN, id, RS_ID_LEN) == 0;
        assert_int_equal(found, 1);
    }
    assert_int_equal(apr_file_open(&f, tmp, APR_FOPEN_READ, 0, pool) == APR_SUCCESS, 0);
    apr_file_remove(apr_pstrcat(pool, dir, "/README", NULL), pool);
    apr_file_remove(apr_pstrcat(pool, dir, "/ZZ00000000000000000000000000000000000000.der", NULL), pool);
    rs_store_remove(dir, id, pool);
    id_of(id, 1);
    rs_store_remove(dir, id, pool);
}

/* Parents created for the store are traversable by the children's user,
 * whatever the umask; the store itself is private. */
static void test_prepare_modes(void **state)
{
    char tmpl[] = "/tmp/rs-store-prep.XXXXXX";
    struct stat st;
    mode_t old = umask(077);
    (void)state;

    assert_non_null(mkdtemp(tmpl));
    assert_int_equal(rs_store_prepare(apr_pstrcat(pool, tmpl, "/state/rs", NULL), pool),
                     APR_SUCCESS);
    umask(old);
    assert_int_equal(stat(apr_pstrcat(pool, tmpl, "/state", NULL), &st), 0);
    assert_int_equal(st.st_mode & 07777, 0755);
    assert_int_equal(stat(apr_pstrcat(pool, tmpl, "/state/rs", NULL), &st), 0);
    assert_int_equal(st.st_mode & 07777, 0700);
    /* again: nothing to do */
    assert_int_equal(rs_store_prepare(apr_pstrcat(pool, tmpl, "/state/rs", NULL), pool),
                     APR_SUCCESS);
}

/* A store that is a link, world-writable or someone else's is refused;
 * one of root's is given to the user without following links. */
static void test_secure(void **state)
{
    char tmpl[] = "/tmp/rs-store-sec.XXXXXX", err[256];
    const char *d, *link, *victim;
    struct stat st;
    unsigned me = (unsigned)geteuid();
    (void)state;

    assert_non_null(mkdtemp(tmpl));
    d = apr_pstrcat(pool, tmpl, "/store", NULL);
    assert_int_equal(rs_store_prepare(d, pool), APR_SUCCESS);
    assert_int_equal(rs_store_secure(d, 0, me, (unsigned)getegid(), err, sizeof(err)),
                     APR_SUCCESS);

    chmod(d, 0777);
    assert_int_not_equal(rs_store_secure(d, 0, me, (unsigned)getegid(), err, sizeof(err)),
                         APR_SUCCESS);
    assert_non_null(strstr(err, "world-writable"));
    chmod(d, 0750);
    assert_int_equal(rs_store_secure(d, 0, me, (unsigned)getegid(), err, sizeof(err)),
                     APR_SUCCESS);
    assert_int_equal(stat(d, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0700);

    /* someone else's */
    assert_int_not_equal(rs_store_secure(d, 0, me + 1, (unsigned)getegid(), err, sizeof(err)),
                         APR_SUCCESS);
    assert_non_null(strstr(err, "belongs to uid"));

    /* a link to a directory the attacker wants chowned */
    victim = apr_pstrcat(pool, tmpl, "/victim", NULL);
    link = apr_pstrcat(pool, tmpl, "/link", NULL);
    assert_int_equal(mkdir(victim, 0700), 0);
    assert_int_equal(symlink(victim, link), 0);
    assert_int_not_equal(rs_store_secure(link, 1, 65534, 65534, err, sizeof(err)),
                         APR_SUCCESS);
    assert_non_null(strstr(err, "symbolic link"));
    assert_int_equal(stat(victim, &st), 0);
    assert_int_equal(st.st_uid, me);

    if (me == 0) {
        /* root's store goes to the user (nobody) */
        assert_int_equal(rs_store_secure(d, 1, 65534, 65534, err, sizeof(err)), APR_SUCCESS);
        assert_int_equal(stat(d, &st), 0);
        assert_int_equal(st.st_uid, 65534);
    }
}

static void test_probe(void **state)
{
    apr_array_header_t *ids;
    (void)state;
    assert_int_equal(rs_store_probe(dir, pool), APR_SUCCESS);
    assert_int_equal(rs_store_list(dir, pool, &ids), APR_SUCCESS);
    assert_int_equal(ids->nelts, 0);
    assert_int_not_equal(rs_store_probe(apr_pstrcat(pool, dir, "/missing", NULL), pool),
                         APR_SUCCESS);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_and_mode),
        cmocka_unit_test(test_missing_and_oversized),
        cmocka_unit_test(test_list_skips_junk_and_cleans_temporaries),
        cmocka_unit_test(test_prepare_modes),
        cmocka_unit_test(test_secure),
        cmocka_unit_test(test_probe),
    };
    return cmocka_run_group_tests_name("rs_store", tests, setup, teardown);
}
