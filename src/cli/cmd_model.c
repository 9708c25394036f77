/* xformd-cli inspect / mkmodel / variants: describe a model and its memory plan, write the
 * demo model, list the attention variants. */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"

static const char *arch_name(enum xf_arch a)
{
    switch (a) {
    case XF_ARCH_BERT: return "bert";
    case XF_ARCH_ROBERTA: return "roberta";
    case XF_ARCH_DISTILBERT: return "distilbert";
    default: return "?";
    }
}

static const char *pool_name(enum xf_pooling p)
{
    static const char *const names[XF_POOL_COUNT] = { "default", "cls", "mean", "pooler",
                                                      "none" };
    return (unsigned)p < XF_POOL_COUNT ? names[p] : "?";
}

/* Plan a batch of the given lengths and print its memory figures. */
static void print_plan(const xf_model_t *m, const char *label, const int32_t *lens, int32_t b,
                       int threads)
{
    int32_t *cu = malloc(((size_t)b + 1) * sizeof *cu);
    xf_plan_t *p = NULL;
    xf_plan_stats_t st;
    xf_batch_t batch = { 0 };
    xf_diag_t diag = { 0 };
    int rc;

    if (!cu)
        return;
    cu[0] = 0;
    for (int32_t i = 0; i < b; i++)
        cu[i + 1] = cu[i] + lens[i];
    batch.n_seq = b;
    batch.cu_len = cu;
    rc = xf_plan_create(m, &p);
    if (rc == 0)
        rc = xf_plan_build(p, &batch, threads, &diag);
    if (rc < 0) {
        printf("plan %-8s error: %s\n", label, diag.msg[0] ? diag.msg : xf_strerror(rc));
    } else {
        xf_plan_get_stats(p, &st);
        printf("plan %-8s tokens=%d arena_bytes=%zu naive_bytes=%zu lower_bound_bytes=%zu "
               "arena/lower=%.3f naive/arena=%.2f tensors=%d GFLOP=%.3f\n",
               label, st.n_tokens, st.arena_bytes, st.naive_bytes, st.lower_bound_bytes,
               st.lower_bound_bytes ? (double)st.arena_bytes / (double)st.lower_bound_bytes : 0.0,
               st.arena_bytes ? (double)st.naive_bytes / (double)st.arena_bytes : 0.0,
               st.n_tensors, st.flops * 1e-9);
    }
    xf_plan_free(p);
    free(cu);
}

int cmd_inspect(int argc, char **argv)
{
    cli_common c = { 0 };
    xf_model_t *m;
    const xf_model_info_t *mi;
    char attn[1024];
    static const int32_t varlen[16] = { 42, 153, 224, 213, 203, 24, 73, 38,
                                        134, 202, 123, 128, 174, 105, 209, 61 };
    int32_t lens[32];

    for (int i = 1; i < argc; i++) {
        if (cli_common_opt(argc, argv, &i, &c))
            continue;
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("usage: xformd-cli inspect [--model DIR] [--threads N] [--attention JSON] "
                   "[--quantize int8|bf16]\n"
                   "Prints the model summary, per-layer shapes and the memory plan (arena vs "
                   "the naive sum\nand the lifetime lower bound) for a few batch shapes.\n");
            return 0;
        }
        fprintf(stderr, "xformd-cli inspect: unknown option '%s'\n", argv[i]);
        return 2;
    }
    m = cli_open_model(&c);
    mi = xf_model_info(m);
    if (xf_attn_to_json(xf_model_attention(m), attn, sizeof attn) < 0)
        snprintf(attn, sizeof attn, "?");
    printf("name           %s%s\n", mi->name, mi->is_demo ? "  (demo model, RANDOM weights)" : "");
    printf("dir            %s\n", mi->dir);
    printf("architecture   %s (%s)\n", mi->arch_name, arch_name(mi->arch));
    printf("parameters     %lld\n", (long long)mi->n_params);
    printf("file dtype     %s\n", mi->file_dtype);
    printf("layers         %d  d_model %d  vocab %d  positions %d (offset %d)  types %d\n",
           mi->n_layer, mi->d_model, mi->vocab_size, mi->max_positions, mi->position_offset,
           mi->type_vocab_size);
    printf("activation     %s  ln_eps %g  %s\n",
           mi->act == XF_ACT_GELU ? "gelu(erf)" : mi->act == XF_ACT_GELU_TANH ? "gelu(tanh)"
                                                                              : "relu",
           (double)mi->ln_eps, mi->pre_ln ? "pre-LN" : "post-LN");
    printf("pooling        %s%s  pooler %s\n", pool_name(mi->pooling),
           mi->normalize ? " + L2 normalize" : "", mi->has_pooler ? "yes" : "no");
    printf("classifier     %d labels", mi->n_labels);
    for (int i = 0; mi->labels && i < mi->n_labels && i < 16; i++)
        printf("%s%s", i ? ", " : ": ", mi->labels[i]);
    printf("\nattention      %s\n", attn);
    printf("quantize       %s\n", mi->quantize ? mi->quantize : "none");
    printf("layer  heads  d_head  d_ff\n");
    for (int l = 0; l < mi->n_layer; l++)
        printf("%5d  %5d  %6d  %4d\n", l, mi->layers[l].n_head, mi->layers[l].d_head,
               mi->layers[l].d_ff);
    for (int i = 0; i < 32; i++)
        lens[i] = 128 < mi->max_positions ? 128 : mi->max_positions;
    print_plan(m, "b1n128", lens, 1, c.threads > 0 ? c.threads : 2);
    print_plan(m, "b32n128", lens, 32, c.threads > 0 ? c.threads : 2);
    if (mi->max_positions >= 224)
        print_plan(m, "varlen16", varlen, 16, c.threads > 0 ? c.threads : 2);
    xf_model_free(m);
    return 0;
}

int cmd_mkmodel(int argc, char **argv)
{
    xf_demo_opts_t o;
    xf_diag_t diag = { 0 };
    int tiny = 0, rc;

    for (int i = 1; i < argc; i++) {
        const char *v = cli_opt(argc, argv, &i, "--arch");
        if (v && !strcmp(v, "transfo-xl"))
            return cmd_mkmodel_txl(argc, argv);
        if (v && strcmp(v, "bert")) {
            fprintf(stderr, "xformd-cli mkmodel: --arch must be bert or transfo-xl\n");
            return 2;
        }
        if (!strcmp(argv[i], "--tiny"))
            tiny = 1;
    }
    if (tiny)
        xf_demo_opts_init_tiny(&o);
    else
        xf_demo_opts_init(&o);
    const cli_int_opt ints[] = {
        { "--layers", 1, 256, &o.n_layer },
        { "--hidden", 8, 16384, &o.d_model },
        { "--heads", 1, 1024, &o.n_head },
        { "--ffn", 1, 1 << 18, &o.d_ff },
        { "--vocab", 1000, 1 << 22, &o.vocab_size },
        { "--max-positions", 8, 1 << 20, &o.max_positions },
        { "--labels", 0, 100000, &o.n_labels },
    };
    cli_mkmodel mk = { .seed = &o.seed, .ints = ints, .n_ints = sizeof ints / sizeof ints[0] };
    for (int i = 1; i < argc; i++) {
        const char *v;
        if (!strcmp(argv[i], "--tiny") || cli_mkmodel_opt(argc, argv, &i, &mk))
            continue;
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("usage: xformd-cli mkmodel --out DIR [--tiny] [--seed N] [--layers N] "
                   "[--hidden N] [--heads N]\n"
                   "                         [--ffn N] [--vocab N] [--max-positions N] "
                   "[--labels N] [--dtype F32|F16|BF16] [--force]\n"
                   "       xformd-cli mkmodel --arch transfo-xl --out DIR [--seed N] "
                   "[--layers N] [--hidden N]\n"
                   "                         [--heads N] [--head-dim N] [--ffn N] [--vocab N] "
                   "[--mem-len N]\n                         [--same-length] [--pre-lnorm] "
                   "[--force]\n"
                   "Writes a deterministic demo model (random weights from the seed) in Hugging "
                   "Face layout:\nconfig.json, model.safetensors, vocab.txt, "
                   "tokenizer_config.json. Default shape: BERT-base.\n"
                   "--arch transfo-xl writes a small random Transformer-XL LM (adaptive input "
                   "and softmax,\ndiv_val 2, two cutoffs) in the HF TransfoXL layout.\n"
                   "An existing model in DIR is refused unless --force is given.\n");
            return 0;
        }
        if ((v = cli_opt(argc, argv, &i, "--dtype")))
            o.dtype = v;
        else {
            fprintf(stderr, "xformd-cli mkmodel: unknown option '%s' (try --help)\n", argv[i]);
            return 2;
        }
    }
    if (mk.out && o.d_model % o.n_head) {
        fprintf(stderr, "xformd-cli mkmodel: --hidden %d is not divisible by --heads %d\n",
                o.d_model, o.n_head);
        return 2;
    }
    if ((rc = cli_mkmodel_ready(&mk)) != 0)
        return rc;
    if ((rc = cli_mkmodel_done(xf_demo_write(mk.out, &o, &diag), &diag)) != 0)
        return rc;
    fprintf(stderr, "xformd-cli: wrote demo model (%d layers, %d hidden, %d heads, seed %llu) "
                    "to %s\n", o.n_layer, o.d_model, o.n_head, (unsigned long long)o.seed, mk.out);
    return 0;
}

int cmd_variants(int argc, char **argv)
{
    int n = xf_attn_variant_count();
    int json = argc > 1 && !strcmp(argv[1], "--json");

    if (argc > 1 && !json) {
        printf("usage: xformd-cli variants [--json]\nLists every attention variant with its "
               "family, flags and default parameters.\n");
        return strcmp(argv[1], "--help") && strcmp(argv[1], "-h") ? 2 : 0;
    }
    if (!json)
        printf("%-12s %-3s %-26s %s\n", "variant", "fam", "flags", "parameters (defaults)");
    for (int i = 0; i < n; i++) {
        xf_attn_variant_info_t v;
        char flags[64] = "";
        if (xf_attn_variant_get(i, &v) < 0)
            continue;
        snprintf(flags, sizeof flags, "%s%s%s%s", v.flags & XF_ATTN_PER_REQUEST ? "request " : "",
                 v.flags & XF_ATTN_NEEDS_WEIGHTS ? "weights " : "",
                 v.flags & XF_ATTN_STATEFUL ? "stateful " : "",
                 v.flags & XF_ATTN_RANDOM ? "seeded" : "");
        if (json)
            printf("{\"variant\":\"%s\",\"family\":\"%s\",\"flags\":\"%s\",\"params\":\"%s\"}\n",
                   v.name, v.family, flags, v.params ? v.params : "");
        else
            printf("%-12s %-3s %-26s %s\n    %s\n", v.name, v.family, flags,
                   v.params ? v.params : "", v.summary ? v.summary : "");
    }
    return 0;
}
