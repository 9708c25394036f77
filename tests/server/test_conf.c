/* Config tests: etc/xformd.conf agrees with conf.def, every option type parses (and bad values
 * are refused naming file:line, the option, the value and the range), precedence defaults <
 * file < command line, the command-line forms, --help and the /v1/stats JSON. */
#include "config.h"

#include "../helpers/xf_test.h"
#include "server/batcher.h"
#include "server/conf.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <xformd/model.h>

static char *mem_text(int (*fn)(FILE *), size_t *len)
{
    char *buf = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&buf, &n);
    assert_non_null(f);
    assert_int_equal(fn(f), 0);
    fclose(f);
    if (len)
        *len = n;
    return buf;
}

static int help_to(FILE *f)
{
    return xf_conf_help(f, "xformd");
}

/* A scratch file with the given text; returns its path in buf. */
static const char *write_tmp(char *buf, size_t len, const char *name, const char *text)
{
    char dir[512];
    assert_non_null(xf_test_tmpdir(dir, sizeof(dir), "conf"));
    snprintf(buf, len, "%s/%s", dir, name);
    assert_int_equal(xf_test_write_file(buf, text, strlen(text)), 0);
    return buf;
}

static void test_defaults(void **state)
{
    (void)state;
    xf_conf_t c;
    assert_int_equal(xf_conf_init(&c), 0);
    assert_string_equal(c.http_listen, "127.0.0.1");
    assert_int_equal(c.http_port, 8080);
    assert_int_equal(c.http_max_body_bytes, 1 << 20);
    assert_int_equal(c.request_timeout_ms, 10000);
    assert_int_equal(c.batcher_policy, XF_BATCH_TOKENS);
    assert_string_equal(xf_conf_enum_name(XF_OPTID_batcher_policy, c.batcher_policy), "tokens");
    assert_true(c.metrics_enabled);
    assert_string_equal(c.model_dir, "");
    assert_string_equal(c.auth_api_key, "");
    assert_int_equal(c.log_level, XF_LOG_INFO);
    assert_null(c.config_path);
    assert_false(c.check_config);
    /* Every default lies inside its own range, every enum default is one of its choices. */
    size_t n;
    const xf_opt_desc_t *t = xf_conf_table(&n);
    assert_int_equal(n, XF_OPT_COUNT);
    for (size_t i = 0; i < n; i++) {
        if (t[i].type == XF_OPT_ENUM) {
            assert_non_null(xf_conf_enum_name((enum xf_opt_id)i, 0));
        } else if (t[i].type != XF_OPT_STRING && t[i].type != XF_OPT_PATH) {
            assert_true(t[i].def_i >= t[i].min && t[i].def_i <= t[i].max);
        }
        assert_ptr_equal(xf_conf_find(t[i].name), &t[i]);
        /* Dotted lowercase names (STYLE §2). */
        assert_non_null(strchr(t[i].name, '.'));
        for (const char *p = t[i].name; *p; p++)
            assert_true((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '.' ||
                        *p == '_');
    }
    /* The C enums the table's order stands for. */
    assert_string_equal(xf_conf_enum_name(XF_OPTID_batcher_policy, XF_BATCH_TOKENS), "tokens");
    assert_string_equal(xf_conf_enum_name(XF_OPTID_model_pooling, XF_POOL_MEAN), "mean");
    assert_string_equal(xf_conf_enum_name(XF_OPTID_log_level, XF_LOG_DEBUG), "debug");
    assert_null(xf_conf_enum_name(XF_OPTID_batcher_policy, XF_BATCH_POLICY_COUNT));
    for (int p = 0; p < XF_BATCH_POLICY_COUNT; p++)
        assert_string_equal(xf_conf_enum_name(XF_OPTID_batcher_policy, p),
                            xf_batch_policy_name((enum xf_batch_policy)p));
    xf_conf_deinit(&c);
}

static void test_example_file_agrees(void **state)
{
    (void)state;
    size_t glen;
    char *gen = mem_text(xf_conf_write_example, &glen);
    const char *src = getenv("XF_SRCDIR");
    char path[1024];
    snprintf(path, sizeof(path), "%s/etc/xformd.conf", src ? src : ".");
    if (getenv("XF_REGEN_CONF")) {
        assert_int_equal(xf_test_write_file(path, gen, glen), 0);
        print_message("# rewrote %s\n", path);
    }
    size_t flen = 0;
    char *file = xf_test_slurp(path, &flen);
    if (!file)
        fail_msg("%s is missing", path);
    if (flen != glen || memcmp(file, gen, glen) != 0) {
        /* Name the first differing line so the fix is obvious. */
        size_t i = 0, line = 1;
        while (i < flen && i < glen && file[i] == gen[i])
            line += file[i++] == '\n';
        fail_msg("%s differs from conf.def at line %zu (run with XF_REGEN_CONF=1 to rewrite)",
                 path, line);
    }
    /* Every option appears commented out at its default, with its help right above. */
    size_t n;
    const xf_opt_desc_t *t = xf_conf_table(&n);
    xf_conf_t c;
    assert_int_equal(xf_conf_init(&c), 0);
    for (size_t i = 0; i < n; i++) {
        char want[256], val[128];
        xf_conf_format(&c, &t[i], val, sizeof(val));
        snprintf(want, sizeof(want), "\n#%s =%s%s\n", t[i].name, val[0] ? " " : "", val);
        const char *at = strstr(file, want);
        if (!at)
            fail_msg("etc/xformd.conf lacks '%s'", want + 1);
        char help[300];
        snprintf(help, sizeof(help), "# %s.\n", t[i].help);
        const char *h = strstr(file, help);
        assert_non_null(h);
        assert_true(h < at);
    }
    /* Uncommenting every option line gives back the defaults: the file's values parse. */
    char *un = strdup(file);
    assert_non_null(un);
    size_t w = 0;
    for (size_t r = 0; un[r]; r++) {
        if (un[r] == '#' && (r == 0 || un[r - 1] == '\n') && un[r + 1] >= 'a' &&
            un[r + 1] <= 'z')
            continue;   /* "#name = value" → "name = value" */
        un[w++] = un[r];
    }
    un[w] = '\0';
    char p2[1024];
    write_tmp(p2, sizeof(p2), "uncommented.conf", un);
    xf_conf_t d;
    xf_diag_t diag = {0};
    assert_int_equal(xf_conf_init(&d), 0);
    assert_int_equal(xf_conf_set(&d, "http.port", "1", NULL, &diag), 0);
    int rc = xf_conf_load_file(&d, p2, &diag);
    if (rc)
        fail_msg("%s", diag.msg);
    for (size_t i = 0; i < n; i++) {
        char a[256], b[256];
        xf_conf_format(&c, &t[i], a, sizeof(a));
        xf_conf_format(&d, &t[i], b, sizeof(b));
        assert_string_equal(a, b);
    }
    xf_conf_deinit(&c);
    xf_conf_deinit(&d);
    free(un);
    free(file);
    free(gen);
}

static void expect_set(xf_conf_t *c, const char *name, const char *v, int rc)
{
    xf_diag_t diag = {0};
    int got = xf_conf_set(c, name, v, "test", &diag);
    if (got != rc)
        fail_msg("%s = '%s': rc %d, want %d (%s)", name, v, got, rc, diag.msg);
    if (rc != 0) {
        assert_non_null(strstr(diag.msg, name));
        assert_int_equal(diag.code, rc);
    }
}

static void test_types(void **state)
{
    (void)state;
    xf_conf_t c;
    assert_int_equal(xf_conf_init(&c), 0);
    /* size */
    expect_set(&c, "http.max_body_bytes", "64k", 0);
    assert_int_equal(c.http_max_body_bytes, 65536);
    expect_set(&c, "http.max_body_bytes", "2M", 0);
    assert_int_equal(c.http_max_body_bytes, 2 << 20);
    expect_set(&c, "http.max_body_bytes", "1G", 0);
    assert_int_equal(c.http_max_body_bytes, 1 << 30);
    expect_set(&c, "http.max_body_bytes", "1MiB", 0);
    expect_set(&c, "http.max_body_bytes", "5000", 0);
    assert_int_equal(c.http_max_body_bytes, 5000);
    expect_set(&c, "http.max_body_bytes", "2G", XF_EPARAM);      /* above 1G */
    expect_set(&c, "http.max_body_bytes", "100", XF_EPARAM);     /* below 1k */
    expect_set(&c, "http.max_body_bytes", "1X", XF_EPARAM);
    expect_set(&c, "http.max_body_bytes", "-5", XF_EPARAM);
    expect_set(&c, "http.max_body_bytes", "99999999999999999999999", XF_EPARAM);
    assert_int_equal(c.http_max_body_bytes, 5000);   /* failures leave the value alone */
    /* duration */
    expect_set(&c, "request.timeout_ms", "250ms", 0);
    assert_int_equal(c.request_timeout_ms, 250);
    expect_set(&c, "request.timeout_ms", "30s", 0);
    assert_int_equal(c.request_timeout_ms, 30000);
    expect_set(&c, "request.timeout_ms", "2m", 0);
    assert_int_equal(c.request_timeout_ms, 120000);
    expect_set(&c, "request.timeout_ms", "15", 0);
    assert_int_equal(c.request_timeout_ms, 15);
    expect_set(&c, "request.timeout_ms", "0", XF_EPARAM);
    expect_set(&c, "request.timeout_ms", "11m", XF_EPARAM);
    expect_set(&c, "request.timeout_ms", "5 s", XF_EPARAM);
    expect_set(&c, "request.timeout_ms", "s", XF_EPARAM);
    /* int */
    expect_set(&c, "http.port", "0", 0);
    expect_set(&c, "http.port", "65535", 0);
    assert_int_equal(c.http_port, 65535);
    expect_set(&c, "http.port", "65536", XF_EPARAM);
    expect_set(&c, "http.port", "-1", XF_EPARAM);
    expect_set(&c, "http.port", "80a", XF_EPARAM);
    expect_set(&c, "http.port", "", XF_EPARAM);
    /* bool */
    const char *yes[] = {"yes", "true", "on", "1", "YES"}, *no[] = {"no", "false", "off", "0"};
    for (int i = 0; i < 5; i++) {
        expect_set(&c, "metrics.enabled", "no", 0);
        expect_set(&c, "metrics.enabled", yes[i], 0);
        assert_true(c.metrics_enabled);
    }
    for (int i = 0; i < 4; i++) {
        expect_set(&c, "metrics.enabled", no[i], 0);
        assert_false(c.metrics_enabled);
    }
    expect_set(&c, "metrics.enabled", "maybe", XF_EPARAM);
    /* enum */
    expect_set(&c, "batcher.policy", "FIFO", 0);
    assert_int_equal(c.batcher_policy, XF_BATCH_FIFO);
    expect_set(&c, "batcher.policy", "tokens", 0);
    assert_int_equal(c.batcher_policy, XF_BATCH_TOKENS);
    expect_set(&c, "batcher.policy", "fif", XF_EPARAM);
    expect_set(&c, "batcher.policy", "fifo|dp", XF_EPARAM);
    /* string and path */
    expect_set(&c, "model.attention", "{\"name\": \"bigbird\", \"block\": 64}", 0);
    assert_string_equal(c.model_attention, "{\"name\": \"bigbird\", \"block\": 64}");
    expect_set(&c, "model.dir", "/srv/models/bge-small", 0);
    assert_string_equal(c.model_dir, "/srv/models/bge-small");
    /* unknown */
    expect_set(&c, "http.prot", "1", XF_ENOTFOUND);
    /* The message shows value and range. */
    xf_diag_t diag = {0};
    assert_int_equal(xf_conf_set(&c, "http.port", "70000", "x.conf:7", &diag), XF_EPARAM);
    assert_non_null(strstr(diag.msg, "x.conf:7"));
    assert_non_null(strstr(diag.msg, "70000"));
    assert_non_null(strstr(diag.msg, "[0, 65535]"));
    xf_conf_deinit(&c);
}

static void test_file(void **state)
{
    (void)state;
    char path[1024];
    write_tmp(path, sizeof(path), "ok.conf",
              "# comment\n"
              "\n"
              "  http.port = 9000   # trailing comment\n"
              "batcher.policy=fifo\n"
              "auth.api_key = \"se#cret \\\"q\\\" \\\\ x\"\n"
              "model.dir = /opt/m#1\n"
              "log.file = \"\"\r\n"
              "request.timeout_ms = 3s\n");
    xf_conf_t c;
    xf_diag_t diag = {0};
    assert_int_equal(xf_conf_init(&c), 0);
    int rc = xf_conf_load_file(&c, path, &diag);
    if (rc)
        fail_msg("%s", diag.msg);
    assert_int_equal(c.http_port, 9000);
    assert_int_equal(c.batcher_policy, XF_BATCH_FIFO);
    assert_string_equal(c.auth_api_key, "se#cret \"q\" \\ x");
    assert_string_equal(c.model_dir, "/opt/m#1");   /* '#' only starts a comment after space */
    assert_string_equal(c.log_file, "");
    assert_int_equal(c.request_timeout_ms, 3000);
    xf_conf_deinit(&c);

    struct { const char *text, *want[3]; int rc; } bad[] = {
        {"http.port = 1\n\nhttp.prot = 5\n", {":3:", "http.prot", "unknown"}, XF_ENOTFOUND},
        {"# x\nhttp.port = 70000\n", {":2:", "http.port", "[0, 65535]"}, XF_EPARAM},
        {"batcher.policy = smart\n", {":1:", "none|fifo|dp|tokens", "smart"}, XF_EPARAM},
        {"http.port 8080\n", {":1:", "name = value", "http.port"}, XF_EFORMAT},
        {"auth.api_key = \"abc\n", {":1:", "auth.api_key", "unterminated"}, XF_EFORMAT},
        {"auth.api_key = \"abc\" x\n", {":1:", "auth.api_key", "after"}, XF_EFORMAT},
        {"request.timeout_ms = 10 parsecs\n", {":1:", "request.timeout_ms", "10 parsecs"},
         XF_EPARAM},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        write_tmp(path, sizeof(path), "bad.conf", bad[i].text);
        assert_int_equal(xf_conf_init(&c), 0);
        memset(&diag, 0, sizeof(diag));
        assert_int_equal(xf_conf_load_file(&c, path, &diag), bad[i].rc);
        for (int k = 0; k < 3; k++)
            if (!strstr(diag.msg, bad[i].want[k]))
                fail_msg("case %zu: '%s' lacks '%s'", i, diag.msg, bad[i].want[k]);
        assert_non_null(strstr(diag.msg, "bad.conf"));
        xf_conf_deinit(&c);
    }
    /* A missing file is -ENOENT with its name. */
    assert_int_equal(xf_conf_init(&c), 0);
    assert_int_equal(xf_conf_load_file(&c, "/nonexistent/xformd.conf", &diag), -ENOENT);
    assert_non_null(strstr(diag.msg, "/nonexistent/xformd.conf"));
    /* A line longer than the reader's buffer is refused, not split. */
    size_t big = 70000;
    char *long_line = malloc(big + 32);
    assert_non_null(long_line);
    strcpy(long_line, "model.attention = ");
    memset(long_line + 18, 'a', big);
    strcpy(long_line + 18 + big, "\n");
    write_tmp(path, sizeof(path), "long.conf", long_line);
    assert_int_equal(xf_conf_load_file(&c, path, &diag), XF_EFORMAT);
    assert_non_null(strstr(diag.msg, ":1:"));
    /* A long JSON value within the limit is fine. */
    long_line[18] = '"';
    memset(long_line + 19, 'b', 30000);
    strcpy(long_line + 19 + 30000, "\"\n");
    write_tmp(path, sizeof(path), "long2.conf", long_line);
    assert_int_equal(xf_conf_load_file(&c, path, &diag), 0);
    assert_int_equal(strlen(c.model_attention), 30000);
    /* A NUL byte is refused, naming the line. */
    write_tmp(path, sizeof(path), "nul.conf", "http.port = 1\n");
    FILE *nf = fopen(path, "ab");
    assert_non_null(nf);
    fwrite("log.file = a\0b\n", 1, 15, nf);
    fclose(nf);
    assert_int_equal(xf_conf_load_file(&c, path, &diag), XF_EFORMAT);
    assert_non_null(strstr(diag.msg, ":2:"));
    free(long_line);
    xf_conf_deinit(&c);
}

static void test_precedence_and_args(void **state)
{
    (void)state;
    char path[1024];
    write_tmp(path, sizeof(path), "p.conf",
              "http.port = 9000\nbatcher.policy = fifo\nengine.threads = 3\n");
    xf_conf_t c;
    xf_diag_t diag = {0};
    /* Command line beats the file whatever the order; the file beats the defaults. */
    char *argv[] = {"xformd", "--http.port=9100", "-c", path, "--engine.threads", "1",
                    "--metrics.enabled", "--check-config", "--model", "/m", NULL};
    int rc = xf_conf_load(&c, 10, argv, &diag);
    if (rc)
        fail_msg("%s", diag.msg);
    assert_int_equal(c.http_port, 9100);
    assert_int_equal(c.batcher_policy, XF_BATCH_FIFO);
    assert_int_equal(c.engine_threads, 1);
    assert_true(c.metrics_enabled);
    assert_true(c.check_config);
    assert_string_equal(c.model_dir, "/m");
    assert_string_equal(c.config_path, path);
    assert_int_equal(c.request_max_texts, 2048);   /* untouched: default */
    xf_conf_deinit(&c);

    /* Bare bool followed by a bool word consumes it; aliases; flags. */
    char *argv2[] = {"xformd", "--metrics.enabled", "no", "--port", "1234", "--policy=tokens",
                     "-h", "-V", "--listen", "::1", "--api-key", "k", NULL};
    assert_int_equal(xf_conf_load(&c, 12, argv2, &diag), 0);
    assert_false(c.metrics_enabled);
    assert_int_equal(c.http_port, 1234);
    assert_int_equal(c.batcher_policy, XF_BATCH_TOKENS);
    assert_true(c.help);
    assert_true(c.version);
    assert_string_equal(c.http_listen, "::1");
    assert_string_equal(c.auth_api_key, "k");
    xf_conf_deinit(&c);

    /* negative numbers are values; a dash-value goes through --name=VALUE */
    char *argv4[] = {"xformd", "--auth.api_key=--odd-key", "--http.port", "-1", NULL};
    assert_int_equal(xf_conf_load(&c, 4, argv4, &diag), XF_EPARAM);
    assert_non_null(strstr(diag.msg, "http.port"));
    xf_conf_deinit(&c);
    char *argv5[] = {"xformd", "--auth.api_key=--odd-key", NULL};
    assert_int_equal(xf_conf_load(&c, 2, argv5, &diag), 0);
    assert_string_equal(c.auth_api_key, "--odd-key");
    xf_conf_deinit(&c);

    struct { int argc; char *argv[4]; int rc; const char *want; } bad[] = {
        {2, {"xformd", "stray"}, -EINVAL, "stray"},
        {2, {"xformd", "--http.port"}, -EINVAL, "http.port"},
        {3, {"xformd", "--http.port", "x"}, XF_EPARAM, "command line: http.port"},
        {2, {"xformd", "--nope=1"}, XF_ENOTFOUND, "--nope"},
        {2, {"xformd", "-c"}, -EINVAL, "-c"},
        {3, {"xformd", "-c", "/nonexistent.conf"}, -ENOENT, "/nonexistent.conf"},
        {2, {"xformd", "--"}, -EINVAL, "--"},
        /* a value that looks like an option is an error, not the value (issue 8) */
        {3, {"xformd", "--api-key", "--check-config"}, -EINVAL, "--api-key: missing value"},
        {3, {"xformd", "--model.dir", "-c"}, -EINVAL, "'-c' is an option"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        memset(&diag, 0, sizeof(diag));
        int got = xf_conf_load(&c, bad[i].argc, bad[i].argv, &diag);
        if (got != bad[i].rc || !strstr(diag.msg, bad[i].want))
            fail_msg("case %zu: rc %d '%s'", i, got, diag.msg);
        xf_conf_deinit(&c);
    }
    /* parse_args alone (no file reading) applies options too. */
    assert_int_equal(xf_conf_init(&c), 0);
    char *argv3[] = {"xformd", "--batcher.max_batch=7", NULL};
    assert_int_equal(xf_conf_parse_args(&c, 2, argv3, &diag), 0);
    assert_int_equal(c.batcher_max_batch, 7);
    xf_conf_deinit(&c);
}

static void test_help(void **state)
{
    (void)state;
    char *h = mem_text(help_to, NULL);
    size_t n;
    const xf_opt_desc_t *t = xf_conf_table(&n);
    for (size_t i = 0; i < n; i++) {
        char want[128];
        snprintf(want, sizeof(want), "--%s=", t[i].name);
        if (!strstr(h, want))
            fail_msg("--help lacks %s", want);
        assert_non_null(strstr(h, t[i].help));
    }
    const char *sections[] = {"http options:", "auth options:", "model options:",
                              "engine options:", "batcher options:", "request options:",
                              "drain options:", "log options:", "cache options:",
                              "redis options:", "metrics options:"};
    const char *prev = h;
    for (size_t i = 0; i < sizeof(sections) / sizeof(sections[0]); i++) {
        const char *at = strstr(h, sections[i]);
        assert_non_null(at);
        assert_true(at >= prev);   /* in table order, each once */
        prev = at;
    }
    assert_non_null(strstr(h, "Default: 8080; integer in [0, 65535]"));
    assert_non_null(strstr(h, "Default: tokens; one of none|fifo|dp|tokens"));
    assert_non_null(strstr(h, "--check-config"));
    assert_non_null(strstr(h, "Usage: xformd"));
    /* for users: no C type names, no files this repository does not ship */
    assert_null(strstr(h, "enum "));
    assert_null(strstr(h, "xf_"));
    assert_null(strstr(h, "ATTENTION.md"));
    assert_null(strstr(h, "DESIGN.md"));
    assert_non_null(strstr(h, "--log.access="));
    free(h);
    /* the usage line names the program, not libtool's .libs/lt-xformd */
    FILE *f = tmpfile();
    assert_non_null(f);
    assert_int_equal(xf_conf_help(f, "/build/.libs/lt-xformd"), 0);
    rewind(f);
    char line[256] = "";
    assert_non_null(fgets(line, sizeof line, f));
    assert_int_equal(strncmp(line, "Usage: xformd [", 15), 0);
    fclose(f);
}

static void test_json(void **state)
{
    (void)state;
    xf_conf_t c;
    assert_int_equal(xf_conf_init(&c), 0);
    expect_set(&c, "auth.api_key", "hunter2", 0);
    expect_set(&c, "redis.url", "redis://user:pw@10.0.0.1:6379/0", 0);
    json_t *j = xf_conf_to_json(&c);
    assert_non_null(j);
    assert_int_equal(json_object_size(j), XF_OPT_COUNT);
    assert_int_equal(json_integer_value(json_object_get(j, "http.port")), 8080);
    assert_string_equal(json_string_value(json_object_get(j, "batcher.policy")), "tokens");
    assert_true(json_is_true(json_object_get(j, "metrics.enabled")));
    assert_string_equal(json_string_value(json_object_get(j, "auth.api_key")), "<set>");
    assert_string_equal(json_string_value(json_object_get(j, "redis.url")),
                        "redis://user:***@10.0.0.1:6379/0");
    char *s = json_dumps(j, 0);
    assert_null(strstr(s, "hunter2"));
    assert_null(strstr(s, ":pw@"));
    free(s);
    json_decref(j);
    xf_conf_deinit(&c);
    xf_conf_deinit(NULL);
}

static void test_validate(void **state)
{
    (void)state;
    struct { const char *argv[3]; const char *want; } bad[] = {
        {{"xformd", "--http.listen=localhost"}, "http.listen"},
        {{"xformd", "--model.attention={\"name\": "}, "model.attention"},
        {{"xformd", "--model.attention=[1]"}, "model.attention"},
        {{"xformd", "--redis.url=http://x"}, "redis.url"},
        {{"xformd", "--request.max_tokens=300000"}, "batcher.max_queued_tokens"},
    };
    xf_conf_t c;
    xf_diag_t diag;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        memset(&diag, 0, sizeof(diag));
        int rc = xf_conf_load(&c, 2, (char *const *)bad[i].argv, &diag);
        if (rc != XF_EPARAM || !strstr(diag.msg, bad[i].want))
            fail_msg("case %zu: rc %d '%s'", i, rc, diag.msg);
        xf_conf_deinit(&c);
    }
    const char *good[] = {"--http.listen=::1", "--http.listen=0.0.0.0",
                          "--model.attention={\"name\": \"dense\"}",
                          "--redis.url=redis://127.0.0.1:6379/0"};
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        const char *argv[] = {"xformd", good[i]};
        memset(&diag, 0, sizeof(diag));
        if (xf_conf_load(&c, 2, (char *const *)argv, &diag) != 0)
            fail_msg("%s: %s", good[i], diag.msg);
        xf_conf_deinit(&c);
    }
    /* --help skips validation: help must work with any other flags. */
    const char *argv[] = {"xformd", "--http.listen=nowhere", "--help"};
    assert_int_equal(xf_conf_load(&c, 3, (char *const *)argv, &diag), 0);
    assert_true(c.help);
    xf_conf_deinit(&c);
}

/* Seconds of the first "key=<n>s" (or "key: <n>s") in a file, -1 when absent. */
static long file_seconds(const char *path, const char *key)
{
    char *t = xf_test_slurp(path, NULL);
    if (!t)
        return -1;
    const char *at = strstr(t, key);
    long v = -1;
    if (at) {
        char unit = 0;
        if (sscanf(at + strlen(key), "%ld%c", &v, &unit) != 2 || unit != 's')
            v = -1;
    }
    free(t);
    return v;
}

static void test_service_files(void **state)
{
    (void)state;
    const char *src = getenv("XF_SRCDIR");
    char path[1024];
    const xf_opt_desc_t *drain = xf_conf_find("drain.timeout_ms");
    assert_non_null(drain);
    /* systemd and docker must wait longer than a drain before they kill xformd. */
    snprintf(path, sizeof(path), "%s/systemd/xformd.service", src ? src : ".");
    long stop = file_seconds(path, "\nTimeoutStopSec=");
    assert_true(stop > 0);
    assert_true(stop * 1000 > drain->def_i);
    snprintf(path, sizeof(path), "%s/docker/compose.yaml", src ? src : ".");
    long grace = file_seconds(path, "stop_grace_period: ");
    assert_true(grace > 0);
    assert_true(grace * 1000 > drain->def_i);
    /* The container's config parses, binds every interface and keeps the drain short. */
    snprintf(path, sizeof(path), "%s/docker/xformd.conf", src ? src : ".");
    xf_conf_t c;
    xf_diag_t diag = {0};
    assert_int_equal(xf_conf_init(&c), 0);
    if (xf_conf_load_file(&c, path, &diag) != 0)
        fail_msg("%s", diag.msg);
    assert_string_equal(c.http_listen, "0.0.0.0");
    assert_true(grace * 1000 > c.drain_timeout_ms);
    assert_int_equal(xf_conf_validate(&c, &diag), 0);
    xf_conf_deinit(&c);
}

static int man_to(FILE *f)
{
    return xf_conf_write_man(f, "9.9.9");
}

static void test_man(void **state)
{
    (void)state;
    char *m = mem_text(man_to, NULL);
    assert_true(strncmp(m, ".TH XFORMD 1 ", 13) == 0);
    assert_non_null(strstr(m, "xformd 9.9.9"));
    size_t n;
    const xf_opt_desc_t *t = xf_conf_table(&n);
    for (size_t i = 0; i < n; i++) {
        char want[128];
        snprintf(want, sizeof(want), ".TP\n\\fB\\-\\-%s\\fR=", t[i].name);
        if (!strstr(m, want))
            fail_msg("man page lacks %s", t[i].name);
    }
    assert_non_null(strstr(m, ".SH BATCHER OPTIONS\n"));
    assert_non_null(strstr(m, ".SH EXIT STATUS\n"));
    /* No line may start with a stray control character ('.' or '\'') from help text. */
    for (const char *p = m; (p = strchr(p, '\n')) != NULL; p++)
        if (p[1] == '\'')
            fail_msg("line starting with a quote: %.40s", p + 1);
    free(m);
}

XF_TEST_MAIN(cmocka_unit_test(test_defaults), cmocka_unit_test(test_example_file_agrees),
             cmocka_unit_test(test_types), cmocka_unit_test(test_file),
             cmocka_unit_test(test_precedence_and_args), cmocka_unit_test(test_help),
             cmocka_unit_test(test_json), cmocka_unit_test(test_validate),
             cmocka_unit_test(test_service_files), cmocka_unit_test(test_man))
