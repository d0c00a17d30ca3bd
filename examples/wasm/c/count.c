/*
 * count-c: Cairn's built-in `count` task, written in C and built into a WebAssembly component
 * of world `batch-task` (package cairn:task@0.1.0, wit/task.wit): `process-batch` takes a whole
 * batch in one call, which is what lets a compiled task approach the native one.
 *
 * For each record: state.add-i64(key, empty sub-key, 1), then output.emit(key, the new count as
 * decimal UTF-8 text). add-i64 returning none (the counter would overflow) makes the record a
 * bad record. The other entry points do nothing; state-version returns 1 unless the config says
 * otherwise.
 *
 * Test switches, read from the job's `task.wasm.config` (JSON text, host.config()), fetched on
 * the first call that needs it (state-version may come before open). They exist so that the
 * worker's tests can drive the failure paths of a real compiled component:
 *   {"stateVersion": N}        state-version returns N (a u32).
 *   {"failOnValue": "<text>"}  a record whose value equals <text>: bad-record, no state change.
 *   {"trapOnValue": "<text>"}  a record whose value equals <text>: the component traps.
 *   {"spinOnValue": "<text>"}  a record whose value equals <text>: loops forever (the host's
 *                              time limit must stop it).
 *   {"growOnValue": "<text>"}  a record whose value equals <text>: grows memory one page at a
 *                              time until growing fails (the host's memory limit), then traps.
 * Unknown keys are ignored; a config that is not a JSON object makes open and process fail with
 * task-error.fatal.
 *
 * The canonical-ABI glue (abi.h) is written by hand: the module has no libc and no WASI imports,
 * so no bindings generator or wasi-libc is needed, and the few functions used are easy to check
 * against the canonical ABI by reading them.
 */
#include "abi.h"

/* ---- configuration (test switches) ------------------------------------------------------- */

typedef struct {
    const uint8_t *ptr;
    uint32_t len;
    int set;
} bytes_opt;

static int config_loaded;
static int config_bad;
static uint32_t config_state_version = 1;
static bytes_opt fail_on, trap_on, spin_on, grow_on;

static int is_ws(uint8_t c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

static uint32_t skip_ws(const uint8_t *s, uint32_t n, uint32_t i) {
    while (i < n && is_ws(s[i])) i++;
    return i;
}

static int hex_digit(uint8_t c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static int read_hex4(const uint8_t *s, uint32_t n, uint32_t i, uint32_t *out) {
    if (i + 4 > n) return 0;
    uint32_t v = 0;
    for (uint32_t k = 0; k < 4; k++) {
        int d = hex_digit(s[i + k]);
        if (d < 0) return 0;
        v = (v << 4) | (uint32_t)d;
    }
    *out = v;
    return 1;
}

/* Parses the JSON string starting at s[*i] (the opening quote) and unescapes it in place: the
 * unescaped text is never longer than the escaped one, so it is written over the same bytes.
 * On success *i is past the closing quote and the text is s[*start .. *start + *len]. */
static int parse_string(uint8_t *s, uint32_t n, uint32_t *i, uint32_t *start, uint32_t *len) {
    uint32_t r = *i;
    if (r >= n || s[r] != '"') return 0;
    r++;
    uint32_t w = r;
    *start = r;
    while (r < n) {
        uint8_t c = s[r++];
        if (c == '"') {
            *len = w - *start;
            *i = r;
            return 1;
        }
        if (c != '\\') {
            s[w++] = c;
            continue;
        }
        if (r >= n) return 0;
        uint8_t e = s[r++];
        switch (e) {
        case '"': s[w++] = '"'; break;
        case '\\': s[w++] = '\\'; break;
        case '/': s[w++] = '/'; break;
        case 'b': s[w++] = '\b'; break;
        case 'f': s[w++] = '\f'; break;
        case 'n': s[w++] = '\n'; break;
        case 'r': s[w++] = '\r'; break;
        case 't': s[w++] = '\t'; break;
        case 'u': {
            uint32_t cp;
            if (!read_hex4(s, n, r, &cp)) return 0;
            r += 4;
            if (cp >= 0xD800 && cp < 0xDC00) {
                uint32_t lo;
                if (r + 6 > n || s[r] != '\\' || s[r + 1] != 'u' || !read_hex4(s, n, r + 2, &lo) ||
                    lo < 0xDC00 || lo >= 0xE000)
                    return 0;
                r += 6;
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            } else if (cp >= 0xDC00 && cp < 0xE000) {
                return 0;
            }
            /* \uXXXX is 6 bytes (12 for a pair) and its UTF-8 at most 3 (4): fits in place. */
            if (cp < 0x80) {
                s[w++] = (uint8_t)cp;
            } else if (cp < 0x800) {
                s[w++] = (uint8_t)(0xC0 | (cp >> 6));
                s[w++] = (uint8_t)(0x80 | (cp & 0x3F));
            } else if (cp < 0x10000) {
                s[w++] = (uint8_t)(0xE0 | (cp >> 12));
                s[w++] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
                s[w++] = (uint8_t)(0x80 | (cp & 0x3F));
            } else {
                s[w++] = (uint8_t)(0xF0 | (cp >> 18));
                s[w++] = (uint8_t)(0x80 | ((cp >> 12) & 0x3F));
                s[w++] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
                s[w++] = (uint8_t)(0x80 | (cp & 0x3F));
            }
            break;
        }
        default: return 0;
        }
    }
    return 0;
}

/* Skips any JSON value (string, number, literal, object, array) starting at s[*i]. */
static int skip_value(uint8_t *s, uint32_t n, uint32_t *i) {
    uint32_t depth = 0;
    uint32_t r = skip_ws(s, n, *i);
    do {
        if (r >= n) return 0;
        uint8_t c = s[r];
        if (c == '"') {
            uint32_t a, b;
            if (!parse_string(s, n, &r, &a, &b)) return 0;
        } else if (c == '{' || c == '[') {
            depth++;
            r++;
        } else if (c == '}' || c == ']') {
            if (depth == 0) return 0;
            depth--;
            r++;
        } else if (c == ',' || c == ':' || is_ws(c)) {
            if (depth == 0) return 0;
            r++;
        } else { /* number or literal */
            while (r < n && s[r] != ',' && s[r] != '}' && s[r] != ']' && !is_ws(s[r])) r++;
        }
    } while (depth > 0);
    *i = r;
    return 1;
}

static int key_is(const uint8_t *s, uint32_t start, uint32_t len, const char *lit) {
    uint32_t k = 0;
    for (; lit[k]; k++)
        if (k >= len || s[start + k] != (uint8_t)lit[k]) return 0;
    return k == len;
}

/* {"k": v, ...} with the keys above; returns 0 if the text is not a JSON object. */
static int parse_config(uint8_t *s, uint32_t n) {
    uint32_t i = skip_ws(s, n, 0);
    if (i >= n || s[i] != '{') return 0;
    i = skip_ws(s, n, i + 1);
    if (i < n && s[i] == '}') return skip_ws(s, n, i + 1) == n;
    for (;;) {
        uint32_t ks, kl;
        if (!parse_string(s, n, &i, &ks, &kl)) return 0;
        i = skip_ws(s, n, i);
        if (i >= n || s[i] != ':') return 0;
        i = skip_ws(s, n, i + 1);
        bytes_opt *target = 0;
        if (key_is(s, ks, kl, "failOnValue")) target = &fail_on;
        else if (key_is(s, ks, kl, "trapOnValue")) target = &trap_on;
        else if (key_is(s, ks, kl, "spinOnValue")) target = &spin_on;
        else if (key_is(s, ks, kl, "growOnValue")) target = &grow_on;
        if (target && i < n && s[i] == '"') {
            uint32_t vs, vl;
            if (!parse_string(s, n, &i, &vs, &vl)) return 0;
            target->ptr = s + vs;
            target->len = vl;
            target->set = 1;
        } else if (key_is(s, ks, kl, "stateVersion") && i < n && s[i] >= '0' && s[i] <= '9') {
            uint64_t v = 0;
            while (i < n && s[i] >= '0' && s[i] <= '9') {
                v = v * 10 + (uint64_t)(s[i++] - '0');
                if (v > 0xFFFFFFFFu) return 0;
            }
            config_state_version = (uint32_t)v;
        } else if (!skip_value(s, n, &i)) {
            return 0;
        }
        i = skip_ws(s, n, i);
        if (i >= n) return 0;
        if (s[i] == '}') return skip_ws(s, n, i + 1) == n;
        if (s[i] != ',') return 0;
        i = skip_ws(s, n, i + 1);
    }
}

static void load_config(void) {
    if (config_loaded) return;
    config_loaded = 1;
    cabi_string text;
    host_config(&text); /* the host allocates the text with cabi_realloc (in the arena) */
    if (!parse_config((uint8_t *)text.ptr, text.len)) {
        config_bad = 1;
        config_state_version = 1;
        fail_on.set = trap_on.set = spin_on.set = grow_on.set = 0;
    }
    /* The switches point into the text: keep it (and whatever else the arena holds now, at most
     * one record's key and value) for the life of the instance. */
    arena_keep();
}

static int value_is(const bytes_opt *o, const uint8_t *v, uint32_t len) {
    if (!o->set || o->len != len) return 0;
    for (uint32_t k = 0; k < len; k++)
        if (o->ptr[k] != v[k]) return 0;
    return 1;
}

/* ---- exports ------------------------------------------------------------------------------ */

static const char MSG_OVERFLOW[] = "count overflows a signed 64-bit integer";
static const char MSG_FAIL[] = "value matches failOnValue";
static const char MSG_CONFIG[] = "config (task.wasm.config) is not a JSON object";

#define ERR(kind, msg) task_result_err((kind), (msg), sizeof(msg) - 1)

OPTIONAL_EXPORT("open") task_result *cairn_open(void) {
    load_config();
    if (config_bad) return ERR(TASK_ERROR_FATAL, MSG_CONFIG);
    return task_result_ok();
}

/* Decimal text of v into the end of buf[20]; returns the first digit. */
static uint8_t *itoa_i64(int64_t v, uint8_t *end) {
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    uint8_t *p = end;
    do {
        *--p = (uint8_t)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0) *--p = '-';
    return p;
}

static const uint8_t EMPTY[1];

/* Counts one record; NULL when done, else the error to return for it. */
static task_result *count_one(const uint8_t *key, uint32_t key_len, const uint8_t *value,
                              uint32_t value_len) {
    if (!config_loaded) load_config();
    if (config_bad) return ERR(TASK_ERROR_FATAL, MSG_CONFIG);
    if (value_is(&fail_on, value, value_len)) return ERR(TASK_ERROR_BAD_RECORD, MSG_FAIL);
    if (value_is(&trap_on, value, value_len)) __builtin_trap();
    if (value_is(&spin_on, value, value_len)) {
        volatile uint32_t spin = 1;
        while (spin) {
        }
    }
    if (value_is(&grow_on, value, value_len)) {
        while (__builtin_wasm_memory_grow(0, 1) != (__SIZE_TYPE__)-1) {
        }
        __builtin_trap();
    }

    cabi_option_s64 count;
    state_add_i64(key, key_len, EMPTY, 0, 1, &count);
    if (!count.is_some) return ERR(TASK_ERROR_BAD_RECORD, MSG_OVERFLOW);
    uint8_t buf[20];
    uint8_t *end = buf + sizeof buf;
    uint8_t *text = itoa_i64(count.value, end);
    output_emit(key, key_len, text, (uint32_t)(end - text));
    return 0;
}

EXPORT("process")
task_result *cairn_process(uint32_t partition, uint64_t offset, uint32_t has_timestamp,
                           uint64_t timestamp, uint8_t *key, uint32_t key_len, uint8_t *value,
                           uint32_t value_len) {
    (void)partition; (void)offset; (void)has_timestamp; (void)timestamp;
    task_result *err = count_one(key, key_len, value, value_len);
    /* The key and value were allocated by the host in the arena for this call only. */
    arena_reset();
    return err ? err : task_result_ok();
}

#ifndef PROCESSOR_ONLY
/* process-batch: func(batch: record-batch) -> result<list<rejected>, string>; the record's 13
 * flat values are the parameters (partition, then pointer and length of each list), and the
 * result goes through a return area: the discriminant at 0, the list or string at 4 and 8. */
typedef struct {
    uint32_t index;
    const char *reason;
    uint32_t reason_len;
} rejected;

typedef struct {
    uint8_t is_err;
    uint8_t _pad[3];
    const void *ptr;
    uint32_t len;
} batch_result;

_Static_assert(sizeof(rejected) == 12, "rejected: u32 and string");
_Static_assert(__builtin_offsetof(batch_result, ptr) == 4, "list or string at 4");
_Static_assert(sizeof(batch_result) == 12, "result<list<rejected>, string> is 12 bytes");

static batch_result batch_ret_area;

EXPORT("process-batch")
batch_result *cairn_process_batch(uint32_t partition, const uint64_t *offsets,
                                  uint32_t offsets_len, const void *timestamps,
                                  uint32_t timestamps_len, const uint8_t *keys, uint32_t keys_len,
                                  const uint32_t *key_ends, uint32_t key_ends_len,
                                  const uint8_t *values, uint32_t values_len,
                                  const uint32_t *value_ends, uint32_t value_ends_len) {
    (void)partition; (void)offsets; (void)offsets_len; (void)timestamps; (void)timestamps_len;
    (void)keys_len; (void)values_len; (void)value_ends_len;
    /* The refused records, allocated after the batch's lists in the arena: they live until the
     * host has read the result, which it does before its next call. */
    rejected *refused = 0;
    uint32_t n_refused = 0;
    uint32_t key_start = 0, value_start = 0;
    batch_ret_area.is_err = 0;
    for (uint32_t i = 0; i < key_ends_len; i++) {
        uint32_t key_end = key_ends[i], value_end = value_ends[i];
        task_result *err = count_one(keys + key_start, key_end - key_start, values + value_start,
                                     value_end - value_start);
        key_start = key_end;
        value_start = value_end;
        if (!err) continue;
        if (err->err_kind == TASK_ERROR_FATAL) {
            batch_ret_area.is_err = 1;
            batch_ret_area.ptr = err->msg;
            batch_ret_area.len = err->msg_len;
            break;
        }
        refused = cabi_realloc(refused, n_refused * sizeof *refused, 4,
                               (n_refused + 1) * sizeof *refused);
        refused[n_refused].index = i;
        refused[n_refused].reason = err->msg;
        refused[n_refused].reason_len = err->msg_len;
        n_refused++;
    }
    if (!batch_ret_area.is_err) {
        batch_ret_area.ptr = refused ? (const void *)refused : (const void *)4;
        batch_ret_area.len = n_refused;
    }
    /* Everything in the arena is free again once this call's result has been read. */
    arena_reset();
    return &batch_ret_area;
}
#endif

OPTIONAL_EXPORT("on-timer")
task_result *cairn_on_timer(uint8_t *key, uint32_t key_len, uint32_t domain, uint64_t at) {
    (void)key; (void)key_len; (void)domain; (void)at;
    arena_reset();
    return task_result_ok();
}

OPTIONAL_EXPORT("before-checkpoint") task_result *cairn_before_checkpoint(void) {
    return task_result_ok();
}

OPTIONAL_EXPORT("after-checkpoint") void cairn_after_checkpoint(uint64_t checkpoint_id) {
    (void)checkpoint_id;
}

OPTIONAL_EXPORT("state-version") uint32_t cairn_state_version(void) {
    load_config();
    return config_state_version;
}
