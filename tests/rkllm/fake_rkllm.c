/*
 * A stand-in for Rockchip's librkllmrt.so, for testing the binding on machines without an NPU.
 *
 * Build one layout at a time:
 *   cc -shared -fPIC -O2 -DRKLLM_LAYOUT_13 -o libfake13.so fake_rkllm.c -lpthread
 *   cc -shared -fPIC -O2 -DRKLLM_LAYOUT_12 -o libfake12.so fake_rkllm.c -lpthread
 * Optional: -DFAKE_VERSION='"1.2.2"' (the version string in the .so's bytes) and
 * -DFAKE_BARE_VERSION (store it the way the real library does: a printf format plus
 * the bare version string, instead of the whole "rkllm-runtime version: X" line).
 *
 * It exports the 15 functions of rkllm.h with the same struct layouts and behaves like the
 * runtime as far as a binding can tell: rkllm_run calls the callback on the caller's thread
 * once per scripted token, honours rkllm_abort between tokens, reports rkllm_is_running,
 * fills perf at FINISH, fails rkllm_init for a missing model file, and refuses two live
 * handles in one IOMMU domain (base_domain_id).
 *
 * The "model file" is a text script, one directive per line:
 *   t TEXT          a token (state NORMAL)           TEXT escapes: \n \t \\ \xHH
 *   w TEXT          a token whose bytes are an incomplete UTF-8 character (state WAITING)
 *   r N TEXT        the token TEXT, N times
 *   delay_us N      sleep after each token           prefill_us N   sleep before the first
 *   error_at N      send ERROR instead of token N (0-based); rkllm_run then returns -1
 *   finish_on_abort 1   still send FINISH (with perf) after an abort (default: no FINISH)
 *   init_fail N     rkllm_init returns N             run_fail N     rkllm_run returns N at once
 *   # comment
 * perf.prefill_tokens is the prompt's length in bytes; perf.generate_tokens the tokens sent.
 * A run with infer->mode 1 (last hidden layer) sends no tokens: one NORMAL callback whose
 * last_hidden_layer holds one row of FAKE_EMBD floats per prompt byte (row i: the histogram of
 * prompt[0..i]'s letters folded into FAKE_EMBD buckets, so texts sharing words are close), then FINISH.
 *
 * For the tests it records the raw bytes of every struct it receives (and the strings they
 * point to) under a name, read back with fake_get_record(); counts calls (fake_calls());
 * tracks how many runs overlapped (fake_max_concurrent()); and appends a line per
 * init/run/abort/destroy to the file named by $FAKE_RKLLM_LOG.
 */
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#if !defined(RKLLM_LAYOUT_12) && !defined(RKLLM_LAYOUT_13)
#error "build with -DRKLLM_LAYOUT_12 or -DRKLLM_LAYOUT_13"
#endif

#ifndef FAKE_VERSION
#ifdef RKLLM_LAYOUT_13
#define FAKE_VERSION "1.3.0"
#else
#define FAKE_VERSION "1.2.3"
#endif
#endif

#define EXPORT __attribute__((visibility("default")))

#ifdef FAKE_BARE_VERSION
__attribute__((used)) static const char fake_banner_format[] =
    "rkllm-runtime version: %s, rknpu driver version: %s, platform: %s\n";
__attribute__((used, aligned(16))) static const char fake_version[] = FAKE_VERSION;
#else
__attribute__((used)) static const char fake_banner[] = "rkllm-runtime version: " FAKE_VERSION;
#endif

/* ---------------------------------------------------------------- rkllm.h */

typedef void *LLMHandle;

typedef enum {
    RKLLM_RUN_NORMAL = 0,
    RKLLM_RUN_WAITING = 1,
    RKLLM_RUN_FINISH = 2,
    RKLLM_RUN_ERROR = 3,
} LLMCallState;

typedef struct {
    int32_t base_domain_id;
    int8_t embed_flash;
    int8_t enabled_cpus_num;
    uint32_t enabled_cpus_mask;
    uint8_t n_batch;
    int8_t use_cross_attn;
    uint8_t reserved[104];
} RKLLMExtendParam;

typedef struct {
    const char *model_path;
    int32_t max_context_len;
    int32_t max_new_tokens;
    int32_t top_k;
    int32_t n_keep;
    float top_p;
    float temperature;
    float repeat_penalty;
    float frequency_penalty;
    float presence_penalty;
    int32_t mirostat;
    float mirostat_tau;
    float mirostat_eta;
    bool skip_special_token;
#ifdef RKLLM_LAYOUT_13
    bool ignore_eos_token;
    bool is_async;
#else
    bool is_async;
    const char *img_start;
    const char *img_end;
    const char *img_content;
#endif
    RKLLMExtendParam extend_param;
} RKLLMParam;

typedef struct {
    const char *lora_adapter_path;
    const char *lora_adapter_name;
    float scale;
} RKLLMLoraAdapter;

typedef struct {
    float *embed;
    size_t n_tokens;
} RKLLMEmbedInput;

typedef struct {
    int32_t *input_ids;
    size_t n_tokens;
} RKLLMTokenInput;

#ifdef RKLLM_LAYOUT_13
typedef struct {
    char *prompt;
    struct {
        float *image_embed;
        size_t n_image_tokens;
        size_t n_image;
        const char *image_start;
        const char *image_end;
        const char *image_content;
        size_t image_width;
        size_t image_height;
    } image;
    struct {
        float *video_embed;
        size_t n_frame_tokens;
        size_t n_frame_per_video;
        size_t n_video;
        const char *video_start;
        const char *video_end;
        const char *video_content;
        size_t frame_width;
        size_t frame_height;
    } video;
} RKLLMMultiModalInput;
#else
typedef struct {
    char *prompt;
    float *image_embed;
    size_t n_image_tokens;
    size_t n_image;
    size_t image_width;
    size_t image_height;
} RKLLMMultiModalInput;
#endif

typedef struct {
    const char *role;
    bool enable_thinking;
    int input_type;
    union {
        const char *prompt_input;
        RKLLMEmbedInput embed_input;
        RKLLMTokenInput token_input;
        RKLLMMultiModalInput multimodal_input;
    };
} RKLLMInput;

typedef struct {
    const char *lora_adapter_name;
} RKLLMLoraParam;

typedef struct {
    int save_prompt_cache;
    const char *prompt_cache_path;
} RKLLMPromptCacheParam;

typedef struct {
    float *encoder_k_cache;
    float *encoder_v_cache;
    float *encoder_mask;
    int32_t *encoder_pos;
    int num_tokens;
} RKLLMCrossAttnParam;

typedef struct {
    int32_t top_k;
    float top_p;
    float temperature;
    float repeat_penalty;
    float frequency_penalty;
    float presence_penalty;
    int32_t mirostat;
    float mirostat_tau;
    float mirostat_eta;
} RKLLMSamplingParam;

typedef struct {
    int mode;
    RKLLMLoraParam *lora_params;
    RKLLMPromptCacheParam *prompt_cache_params;
#ifdef RKLLM_LAYOUT_13
    RKLLMSamplingParam *sampling_params;
    int keep_history;
    int32_t max_new_tokens;
#else
    int keep_history;
#endif
} RKLLMInferParam;

typedef struct {
    const float *hidden_states;
    int embd_size;
    int num_tokens;
} RKLLMResultLastHiddenLayer;

typedef struct {
    const float *logits;
    int vocab_size;
    int num_tokens;
} RKLLMResultLogits;

typedef struct {
    float prefill_time_ms;
    int prefill_tokens;
    float generate_time_ms;
    int generate_tokens;
    float memory_usage_mb;
} RKLLMPerfStat;

typedef struct {
    const char *text;
    int32_t token_id;
    RKLLMResultLastHiddenLayer last_hidden_layer;
    RKLLMResultLogits logits;
    RKLLMPerfStat perf;
} RKLLMResult;

typedef int (*LLMResultCallback)(RKLLMResult *result, void *userdata, LLMCallState state);
typedef int (*LLMTokenizerCallback)(void *, const char *, int32_t, int32_t *, int32_t);
typedef int (*LLMGetEmbedCallback)(void *, int32_t *, uint64_t, void *, uint64_t);

typedef struct {
    LLMResultCallback result_callback;
    void *result_userdata;
    LLMTokenizerCallback tokenizer_callback;
    void *tokenizer_userdata;
    LLMGetEmbedCallback embed_callback;
    void *embed_userdata;
} RKLLMCallback;

#ifdef RKLLM_LAYOUT_13
typedef RKLLMCallback *InitCallback;
#else
typedef LLMResultCallback InitCallback;
#endif

_Static_assert(sizeof(RKLLMExtendParam) == 120, "RKLLMExtendParam");
_Static_assert(sizeof(RKLLMResult) == 72, "RKLLMResult");
#ifdef RKLLM_LAYOUT_13
_Static_assert(sizeof(RKLLMParam) == 184, "RKLLMParam L1.3");
_Static_assert(sizeof(RKLLMInput) == 160, "RKLLMInput L1.3");
_Static_assert(sizeof(RKLLMInferParam) == 40, "RKLLMInferParam L1.3");
_Static_assert(sizeof(RKLLMCallback) == 48, "RKLLMCallback");
_Static_assert(sizeof(RKLLMSamplingParam) == 36, "RKLLMSamplingParam");
#else
_Static_assert(sizeof(RKLLMParam) == 208, "RKLLMParam L1.2");
_Static_assert(sizeof(RKLLMInput) == 64, "RKLLMInput L1.2");
_Static_assert(sizeof(RKLLMInferParam) == 32, "RKLLMInferParam L1.2");
#endif

/* ---------------------------------------------------------------- test support */

typedef struct {
    char *bytes;
    int state;
    long repeat;
} Token;

typedef struct Handle {
    char *model_path;
    int domain;
    int max_new_tokens;
    LLMResultCallback callback;
    void *userdata;
    Token *tokens;
    int n_tokens;
    long delay_us, prefill_us;
    long error_at;
    int finish_on_abort, run_fail;
    atomic_int abort_flag;
    atomic_int running;
    struct Handle *next;
} Handle;

#define MAX_RECORDS 64
typedef struct {
    char name[48];
    char *data;
    int len;
} Record;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static Record records[MAX_RECORDS];
static Handle *live;
static atomic_int concurrent, max_concurrent;

enum { C_INIT, C_RUN, C_ABORT, C_DESTROY, C_CLEAR, C_TEMPLATE, C_IS_RUNNING, C_OTHER, C_COUNT };
static const char *call_names[C_COUNT] = {"init", "run", "abort", "destroy", "clear_kv_cache",
                                          "set_chat_template", "is_running", "other"};
static atomic_long calls[C_COUNT];

static void record(const char *name, const void *data, int len) {
    pthread_mutex_lock(&lock);
    Record *slot = NULL;
    for (int i = 0; i < MAX_RECORDS; i++) {
        if (records[i].data && strcmp(records[i].name, name) == 0) { slot = &records[i]; break; }
        if (!slot && !records[i].data) slot = &records[i];
    }
    if (slot) {
        free(slot->data);
        snprintf(slot->name, sizeof slot->name, "%s", name);
        slot->data = malloc(len > 0 ? len : 1);
        memcpy(slot->data, data, len);
        slot->len = len;
    }
    pthread_mutex_unlock(&lock);
}

static void record_str(const char *name, const char *s) {
    if (s) record(name, s, (int)strlen(s));
}

static void record_int(const char *name, long value) { record(name, &value, sizeof value); }

static void log_line(const char *fmt, ...) {
    const char *path = getenv("FAKE_RKLLM_LOG");
    if (!path || !*path) return;
    char line[4600];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line - 1, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if (n > (int)sizeof line - 2) n = (int)sizeof line - 2;
    line[n++] = '\n';
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT, 0644);
    if (fd < 0) return;
    ssize_t ignored = write(fd, line, (size_t)n);
    (void)ignored;
    close(fd);
}

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

EXPORT int fake_get_record(const char *which, void *buf, int cap) {
    int found = -1;
    pthread_mutex_lock(&lock);
    for (int i = 0; i < MAX_RECORDS; i++) {
        if (records[i].data && strcmp(records[i].name, which) == 0) {
            found = records[i].len;
            memcpy(buf, records[i].data, found < cap ? found : cap);
            break;
        }
    }
    pthread_mutex_unlock(&lock);
    return found;
}

EXPORT long fake_calls(const char *name) {
    for (int i = 0; i < C_COUNT; i++)
        if (strcmp(call_names[i], name) == 0) return atomic_load(&calls[i]);
    return -1;
}

EXPORT int fake_max_concurrent(void) { return atomic_load(&max_concurrent); }

EXPORT void fake_reset(void) {
    pthread_mutex_lock(&lock);
    for (int i = 0; i < MAX_RECORDS; i++) {
        free(records[i].data);
        records[i].data = NULL;
    }
    pthread_mutex_unlock(&lock);
    for (int i = 0; i < C_COUNT; i++) atomic_store(&calls[i], 0);
    atomic_store(&max_concurrent, 0);
}

/* ---------------------------------------------------------------- the script */

static char *unescape(const char *s) {
    size_t n = strlen(s);
    char *out = malloc(n + 1), *o = out;
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '\\' || i + 1 == n) { *o++ = s[i]; continue; }
        char c = s[++i];
        if (c == 'n') *o++ = '\n';
        else if (c == 't') *o++ = '\t';
        else if (c == 'x' && i + 2 < n + 1) {
            char hex[3] = {s[i + 1], s[i + 2], 0};
            *o++ = (char)strtol(hex, NULL, 16);
            i += 2;
        } else *o++ = c;
    }
    *o = 0;
    return out;
}

static void add_token(Handle *h, const char *text, int state, long repeat) {
    h->tokens = realloc(h->tokens, sizeof(Token) * (h->n_tokens + 1));
    h->tokens[h->n_tokens++] = (Token){unescape(text), state, repeat};
}

static int load_script(Handle *h, FILE *f, int *init_fail) {
    char line[8192];
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = 0;
        long n;
        char *rest;
        if (line[0] == '#' || line[0] == 0) continue;
        if (strncmp(line, "t ", 2) == 0) add_token(h, line + 2, RKLLM_RUN_NORMAL, 1);
        else if (strncmp(line, "w ", 2) == 0) add_token(h, line + 2, RKLLM_RUN_WAITING, 1);
        else if (strncmp(line, "r ", 2) == 0 && (n = strtol(line + 2, &rest, 10)) > 0 && *rest == ' ')
            add_token(h, rest + 1, RKLLM_RUN_NORMAL, n);
        else if (sscanf(line, "delay_us %ld", &h->delay_us) == 1) continue;
        else if (sscanf(line, "prefill_us %ld", &h->prefill_us) == 1) continue;
        else if (sscanf(line, "error_at %ld", &h->error_at) == 1) continue;
        else if (sscanf(line, "finish_on_abort %d", &h->finish_on_abort) == 1) continue;
        else if (sscanf(line, "run_fail %d", &h->run_fail) == 1) continue;
        else if (sscanf(line, "init_fail %d", init_fail) == 1) continue;
        else {
            fprintf(stderr, "E rkllm: bad model file line: %s\n", line);
            return -1;
        }
    }
    return 0;
}

static void free_handle(Handle *h) {
    for (int i = 0; i < h->n_tokens; i++) free(h->tokens[i].bytes);
    free(h->tokens);
    free(h->model_path);
    free(h);
}

/* ---------------------------------------------------------------- the 15 functions */

EXPORT RKLLMParam rkllm_createDefaultParam(void) {
    RKLLMParam p;
    memset(&p, 0, sizeof p);
    p.max_context_len = 512;
    p.max_new_tokens = -1;
    p.top_k = 40;
    p.n_keep = -1;
    p.top_p = 0.9f;
    p.temperature = 0.8f;
    p.repeat_penalty = 1.1f;
    p.mirostat_tau = 5.0f;
    p.mirostat_eta = 0.1f;
    p.extend_param.n_batch = 1;
    return p;
}

EXPORT int rkllm_init(LLMHandle *handle, RKLLMParam *param, InitCallback callback) {
    atomic_fetch_add(&calls[C_INIT], 1);
    if (!handle || !param) return -1;
    *handle = NULL;
    record("param", param, sizeof *param);
    record_str("param.model_path", param->model_path);
#ifdef RKLLM_LAYOUT_13
    if (callback) record("callback", callback, sizeof *callback);
    if (!callback || !callback->result_callback) return -1;
    LLMResultCallback result_cb = callback->result_callback;
    void *userdata = callback->result_userdata;
#else
    if (!callback) return -1;
    LLMResultCallback result_cb = callback;
    void *userdata = NULL;
#endif
    if (!param->model_path) return -1;
    FILE *f = fopen(param->model_path, "r");
    if (!f) {
        fprintf(stderr, "E rkllm: failed to open model file %s\n", param->model_path);
        return -1;
    }
    Handle *h = calloc(1, sizeof *h);
    h->model_path = strdup(param->model_path);
    h->domain = param->extend_param.base_domain_id;
    h->max_new_tokens = param->max_new_tokens;
    h->callback = result_cb;
    h->userdata = userdata;
    h->error_at = -1;
    int init_fail = 0;
    int bad = load_script(h, f, &init_fail);
    fclose(f);
    if (bad || init_fail) {
        free_handle(h);
        return bad ? -1 : init_fail;
    }
    pthread_mutex_lock(&lock);
    for (Handle *o = live; o; o = o->next) {
        if (o->domain == h->domain) {
            pthread_mutex_unlock(&lock);
            fprintf(stderr, "E rkllm: base_domain_id %d is already in use\n", h->domain);
            free_handle(h);
            return -2;
        }
    }
    h->next = live;
    live = h;
    pthread_mutex_unlock(&lock);
    log_line("init %s domain=%d", h->model_path, h->domain);
    *handle = h;
    return 0;
}

EXPORT int rkllm_destroy(LLMHandle handle) {
    atomic_fetch_add(&calls[C_DESTROY], 1);
    Handle *h = handle;
    if (!h) return -1;
    if (atomic_load(&h->running)) return -1; /* destroying a running handle: refuse */
    pthread_mutex_lock(&lock);
    for (Handle **p = &live; *p; p = &(*p)->next) {
        if (*p == h) { *p = h->next; break; }
    }
    pthread_mutex_unlock(&lock);
    log_line("destroy %s domain=%d", h->model_path, h->domain);
    free_handle(h);
    return 0;
}

static int emit_finish(Handle *h, void *ud, int prompt_len, double prefill_ms, double gen_start, long n) {
    RKLLMResult r;
    memset(&r, 0, sizeof r);
    r.perf.prefill_time_ms = (float)prefill_ms;
    r.perf.prefill_tokens = prompt_len;
    r.perf.generate_time_ms = (float)(now_ms() - gen_start);
    r.perf.generate_tokens = (int)n;
    r.perf.memory_usage_mb = 42.5f;
    r.token_id = -1;
    return h->callback(&r, ud, RKLLM_RUN_FINISH);
}

static int hidden_layer_run(Handle *h, void *ud, const char *prompt);

EXPORT int rkllm_run(LLMHandle handle, RKLLMInput *input, RKLLMInferParam *infer, void *userdata) {
    atomic_fetch_add(&calls[C_RUN], 1);
    Handle *h = handle;
    if (!h || !input || !infer) return -1;
    int idle = 0;
    if (!atomic_compare_exchange_strong(&h->running, &idle, 1)) return -2;
    int now_running = atomic_fetch_add(&concurrent, 1) + 1;
    for (int seen = atomic_load(&max_concurrent); now_running > seen;)
        if (atomic_compare_exchange_weak(&max_concurrent, &seen, now_running)) break;
    atomic_store(&h->abort_flag, 0);
    record_int("run.thread", (long)pthread_self());

    record("input", input, sizeof *input);
    record_str("input.role", input->role);
    int prompt_len = 0;
    if (input->input_type == 0 && input->prompt_input) {
        record_str("input.prompt", input->prompt_input);
        prompt_len = (int)strlen(input->prompt_input);
    }
    record("infer", infer, sizeof *infer);
    int limit = h->max_new_tokens;
#ifdef RKLLM_LAYOUT_13
    if (infer->sampling_params) record("sampling", infer->sampling_params, sizeof(RKLLMSamplingParam));
    if (infer->max_new_tokens > 0) limit = infer->max_new_tokens;
    void *ud = userdata ? userdata : h->userdata;
#else
    void *ud = userdata;
#endif
    log_line("run %s", h->model_path);
    int rc = 0;
    if (h->run_fail) {
        rc = h->run_fail;
        goto out;
    }
    if (infer->mode == 1) {
        rc = hidden_layer_run(h, ud, input->input_type == 0 ? input->prompt_input : NULL);
        goto out;
    }
    double start = now_ms();
    if (h->prefill_us) usleep((useconds_t)h->prefill_us); /* prefill is not interruptible */
    double gen_start = now_ms();
    long n = 0;
    int aborted = 0, failed = 0;
    RKLLMResult r;
    for (int i = 0; i < h->n_tokens && !aborted && !failed; i++) {
        Token *t = &h->tokens[i];
        for (long k = 0; k < t->repeat; k++) {
            if (atomic_load(&h->abort_flag)) { aborted = 1; break; }
            if (limit > 0 && n >= limit) { i = h->n_tokens; break; }
            if (h->error_at >= 0 && n == h->error_at) {
                memset(&r, 0, sizeof r);
                h->callback(&r, ud, RKLLM_RUN_ERROR);
                failed = 1;
                break;
            }
            memset(&r, 0, sizeof r);
            r.text = t->bytes;
            r.token_id = (int32_t)(1000 + n);
            n++;
            if (h->callback(&r, ud, (LLMCallState)t->state) == 1) { i = h->n_tokens; break; } /* pause */
            if (h->delay_us) usleep((useconds_t)h->delay_us);
        }
    }
    record_int("run.generated", n);
    record_int("run.aborted", aborted);
    if (!failed && (!aborted || h->finish_on_abort)) emit_finish(h, ud, prompt_len, gen_start - start, gen_start, n);
    if (failed) rc = -1;
out:
    atomic_fetch_sub(&concurrent, 1);
    atomic_store(&h->running, 0);
    return rc;
}

static int hidden_layer_run(Handle *h, void *ud, const char *prompt) {
    enum { FAKE_EMBD = 16 };
    if (!prompt || !*prompt) return -1;
    int n = (int)strlen(prompt);
    float *rows = calloc((size_t)n * FAKE_EMBD, sizeof(float));
    if (!rows) return -1;
    float acc[FAKE_EMBD] = {0};
    for (int i = 0; i < n; i++) {
        unsigned char c = (unsigned char)prompt[i];
        if ((c | 32) >= 'a' && (c | 32) <= 'z') acc[((c | 32) - 'a') % FAKE_EMBD] += 1.0f;
        memcpy(rows + (size_t)i * FAKE_EMBD, acc, sizeof acc);
    }
    RKLLMResult r;
    memset(&r, 0, sizeof r);
    r.last_hidden_layer.hidden_states = rows;
    r.last_hidden_layer.embd_size = FAKE_EMBD;
    r.last_hidden_layer.num_tokens = n;
    record_int("hidden.rows", n);
    h->callback(&r, ud, RKLLM_RUN_NORMAL);
    free(rows); /* valid only during the callback, as in the real runtime */
    memset(&r, 0, sizeof r);
    r.perf.prefill_tokens = n;
    h->callback(&r, ud, RKLLM_RUN_FINISH);
    return 0;
}

EXPORT int rkllm_run_async(LLMHandle handle, RKLLMInput *input, RKLLMInferParam *infer, void *userdata) {
    (void)handle, (void)input, (void)infer, (void)userdata;
    atomic_fetch_add(&calls[C_OTHER], 1);
    return -1; /* unreliable in the real runtime; the binding must not use it */
}

EXPORT int rkllm_abort(LLMHandle handle) {
    atomic_fetch_add(&calls[C_ABORT], 1);
    Handle *h = handle;
    if (!h) return -1;
    atomic_store(&h->abort_flag, 1);
    record_int("abort.thread", (long)pthread_self());
    log_line("abort %s", h->model_path);
    return 0;
}

EXPORT int rkllm_is_running(LLMHandle handle) {
    atomic_fetch_add(&calls[C_IS_RUNNING], 1);
    Handle *h = handle;
    return h && atomic_load(&h->running) ? 1 : 0;
}

EXPORT int rkllm_clear_kv_cache(LLMHandle handle, int keep_system_prompt, int *start_pos, int *end_pos) {
    atomic_fetch_add(&calls[C_CLEAR], 1);
    Handle *h = handle;
    if (!h || atomic_load(&h->running)) return -1;
    record_int("kv_clear.keep_system_prompt", keep_system_prompt);
    record_int("kv_clear.ranges", start_pos != NULL || end_pos != NULL);
    return 0;
}

EXPORT int rkllm_get_kv_cache_size(LLMHandle handle, int *cache_sizes) {
    atomic_fetch_add(&calls[C_OTHER], 1);
    if (!handle || !cache_sizes) return -1;
    cache_sizes[0] = 0;
    return 0;
}

EXPORT int rkllm_set_chat_template(LLMHandle handle, const char *system, const char *prefix,
                                   const char *postfix) {
    atomic_fetch_add(&calls[C_TEMPLATE], 1);
    if (!handle || !system || !prefix || !postfix) return -1;
    record_str("template.system", system);
    record_str("template.prefix", prefix);
    record_str("template.postfix", postfix);
    return 0;
}

EXPORT int rkllm_set_function_tools(LLMHandle handle, const char *system, const char *tools,
                                    const char *tool_response) {
    atomic_fetch_add(&calls[C_OTHER], 1);
    if (!handle || !system || !tools || !tool_response) return -1;
    record_str("tools", tools);
    record_str("tools.system", system);
    record_str("tools.response", tool_response);
    return 0;
}

EXPORT int rkllm_load_lora(LLMHandle handle, RKLLMLoraAdapter *adapter) {
    atomic_fetch_add(&calls[C_OTHER], 1);
    return handle && adapter && adapter->lora_adapter_path ? 0 : -1;
}

EXPORT int rkllm_load_prompt_cache(LLMHandle handle, const char *path) {
    atomic_fetch_add(&calls[C_OTHER], 1);
    return handle && path ? 0 : -1;
}

EXPORT int rkllm_release_prompt_cache(LLMHandle handle) {
    atomic_fetch_add(&calls[C_OTHER], 1);
    return handle ? 0 : -1;
}

EXPORT int rkllm_set_cross_attn_params(LLMHandle handle, RKLLMCrossAttnParam *params) {
    atomic_fetch_add(&calls[C_OTHER], 1);
    return handle && params ? 0 : -1;
}
