/* xformd: the daemon's main(). Reads the configuration (defaults < file < command line), sets
 * up logging, starts the server (model, workers, warm-up, HTTP, loop thread) and waits for the
 * drain that SIGTERM/SIGINT start. Only main() exits. Exit status: 0 after a clean drain, 1 on
 * a start-up failure, 2 on a configuration error. */
#include "config.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <xformd/xformd.h>

#include "server/conf.h"
#include "server/log.h"
#include "server/metrics.h"
#include "server/server.h"

static void engine_log(enum xf_log_level level, const char *msg, void *user)
{
    (void)user;
    xf_log_msg(level, "engine: %s", msg);
}

/* model.attention names a known variant with valid parameters: 0, or 2 after saying why. */
static int check_attention(const xf_conf_t *cfg)
{
    if (!cfg->model_attention[0])
        return 0;
    char err[256] = "";
    xf_attn_t *a = NULL;
    int rc = xf_attn_parse(cfg->model_attention, strlen(cfg->model_attention), &a, err,
                           sizeof err);
    xf_attn_free(a);
    if (rc == 0)
        return 0;
    fprintf(stderr, "xformd: model.attention: %s\n", err[0] ? err : xf_strerror(rc));
    return 2;
}

static int check_config(const xf_conf_t *cfg)
{
    int bad = check_attention(cfg) != 0;
    if (cfg->model_dir[0]) {
        char p[4200];
        snprintf(p, sizeof p, "%s/config.json", cfg->model_dir);
        if (access(p, R_OK) != 0) {
            fprintf(stderr, "xformd: model.dir: %s is not readable\n", p);
            bad = 1;
        } else {
            /* Load it (weights are mapped, not read): every header, offset, dtype and shape
             * is validated, so a truncated safetensors file fails here, not at start-up. */
            xf_model_t *m = NULL;
            xf_diag_t diag = { 0, "" };
            xf_load_opts_t lo = { .name = NULL, .tokenizer = NULL,
                                  .attention = cfg->model_attention[0] ? cfg->model_attention
                                                                       : NULL };
            int rc = xf_model_load(cfg->model_dir, &lo, &m, &diag);
            if (rc < 0) {
                fprintf(stderr, "xformd: model.dir: %s: %s\n", cfg->model_dir,
                        diag.msg[0] ? diag.msg : xf_strerror(rc));
                bad = 1;
            }
            xf_model_free(m);
        }
    }
    if (cfg->log_file[0]) {
        FILE *f = fopen(cfg->log_file, "a");
        if (!f) {
            fprintf(stderr, "xformd: log.file: cannot open %s\n", cfg->log_file);
            bad = 1;
        } else {
            fclose(f);
        }
    }
    if (bad)
        return 2;
    printf("configuration OK: listen %s:%lld, model %s, policy %s\n", cfg->http_listen,
           (long long)cfg->http_port, cfg->model_dir[0] ? cfg->model_dir : "(demo model)",
           xf_conf_enum_name(XF_OPTID_batcher_policy, cfg->batcher_policy));
    return 0;
}

int main(int argc, char **argv)
{
    xf_conf_t cfg;
    xf_diag_t diag = { 0, "" };
    int rc = xf_conf_load(&cfg, argc, argv, &diag);
    if (rc < 0) {
        fprintf(stderr, "xformd: %s\n", diag.msg[0] ? diag.msg : xf_strerror(rc));
        xf_conf_deinit(&cfg);
        return 2;
    }
    if (cfg.help) {
        xf_conf_help(stdout, argv[0]);
        xf_conf_deinit(&cfg);
        return 0;
    }
    if (cfg.version) {
        printf("xformd %s\n", xf_version());
        xf_conf_deinit(&cfg);
        return 0;
    }
    if (cfg.check_config) {
        rc = check_config(&cfg);
        xf_conf_deinit(&cfg);
        return rc;
    }
    if (check_attention(&cfg) != 0) {
        xf_conf_deinit(&cfg);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    rc = xf_log_open((enum xf_log_level)cfg.log_level, cfg.log_file);
    if (rc < 0)
        fprintf(stderr, "xformd: log.file %s: %s; logging to stderr\n", cfg.log_file,
                xf_strerror(rc));
    xf_log_set(engine_log, NULL);
    xf_metrics_init(&cfg);

    xf_server_t *srv = NULL;
    rc = xf_server_run(&cfg, &srv, &diag);
    if (rc < 0) {
        XF_LOGE("start-up failed: %s", diag.msg[0] ? diag.msg : xf_strerror(rc));
        xf_log_set(NULL, NULL);
        xf_log_close();
        xf_conf_deinit(&cfg);
        return 1;
    }
    int status = xf_server_wait(srv);
    xf_server_free(srv);
    xf_log_set(NULL, NULL);
    xf_log_close();
    xf_conf_deinit(&cfg);
    return status;
}
