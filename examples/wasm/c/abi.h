/*
 * Hand-written canonical-ABI glue for cairn:task@0.1.0 (wit/task.wit), world `task`, on wasm32.
 *
 * Flattening (component model canonical ABI, MAX_FLAT_PARAMS 16, MAX_FLAT_RESULTS 1):
 *   list<u8> / string  -> (i32 ptr, i32 len)
 *   option<u64>        -> (i32 is_some, i64 value)
 *   record             -> its fields flattened in order
 *   enum               -> i32
 * A result that flattens to more than one core value is returned through memory:
 *   - by an export: the export returns an i32 pointer to it (a static return area here);
 *   - by an import: the caller passes a pointer to a return area as the last parameter.
 *
 * Memory layouts used (size/align; offsets in brackets):
 *   result<_, task-error>  16/4: [0] u8 0 ok / 1 err, [4] task-error
 *   task-error             12/4: [0] u8 0 bad-record / 1 fatal, [4] string ptr, [8] string len
 *   option<s64>            16/8: [0] u8 0 none / 1 some, [8] s64
 *   string                  8/4: [0] ptr, [4] len
 */
#ifndef CAIRN_ABI_H
#define CAIRN_ABI_H

typedef unsigned char uint8_t;
typedef unsigned int uint32_t;
typedef long long int64_t;
typedef unsigned long long uint64_t;
typedef __SIZE_TYPE__ size_t;

#define EXPORT(name) __attribute__((export_name(name)))
/* The entry points a task may leave out: built with -DPROCESSOR_ONLY (world `processor`) they
   are not exported, and the worker does without them (no-ops, state version 1). */
#ifdef PROCESSOR_ONLY
#define OPTIONAL_EXPORT(name) __attribute__((unused)) static
#else
#define OPTIONAL_EXPORT(name) EXPORT(name)
#endif
void *cabi_realloc(void *old_ptr, size_t old_size, size_t align, size_t new_size);

#define IMPORT(module, name) __attribute__((import_module(module), import_name(name)))

/* ---- memory layouts ---- */

typedef struct {
    uint8_t is_err;
    uint8_t _pad0[3];
    uint8_t err_kind; /* TASK_ERROR_* */
    uint8_t _pad1[3];
    const char *msg;
    uint32_t msg_len;
} task_result;

enum { TASK_ERROR_BAD_RECORD = 0, TASK_ERROR_FATAL = 1 };

typedef struct {
    uint8_t is_some;
    int64_t value;
} cabi_option_s64;

typedef struct {
    const char *ptr;
    uint32_t len;
} cabi_string;

_Static_assert(sizeof(void *) == 4, "wasm32 only");
_Static_assert(__builtin_offsetof(task_result, err_kind) == 4, "task-error at 4");
_Static_assert(__builtin_offsetof(task_result, msg) == 8, "string ptr at 8");
_Static_assert(__builtin_offsetof(task_result, msg_len) == 12, "string len at 12");
_Static_assert(sizeof(task_result) == 16, "result<_, task-error> is 16 bytes");
_Static_assert(__builtin_offsetof(cabi_option_s64, value) == 8, "s64 payload at 8");
_Static_assert(sizeof(cabi_option_s64) == 16 && _Alignof(cabi_option_s64) == 8, "option<s64>");
_Static_assert(__builtin_offsetof(cabi_string, len) == 4, "string len at 4");

/* ---- imports (only those the task calls end up in the core module) ---- */

/* state.add-i64: func(key: list<u8>, sub-key: list<u8>, delta: s64) -> option<s64>
 * core: (i32 i32 i32 i32 i64 i32) -> (), the last i32 = return area (16 bytes, align 8). */
void state_add_i64(const uint8_t *key, uint32_t key_len, const uint8_t *sub_key,
                   uint32_t sub_key_len, int64_t delta, cabi_option_s64 *ret)
    IMPORT("cairn:task/state@0.1.0", "add-i64");

/* output.emit: func(key: list<u8>, value: list<u8>); core: (i32 i32 i32 i32) -> () */
void output_emit(const uint8_t *key, uint32_t key_len, const uint8_t *value, uint32_t value_len)
    IMPORT("cairn:task/output@0.1.0", "emit");

/* host.config: func() -> string; core: (i32) -> (), the i32 = return area (8 bytes, align 4).
 * The host allocates the text with our cabi_realloc. */
void host_config(cabi_string *ret) IMPORT("cairn:task/host@0.1.0", "config");

/* ---- the arena behind cabi_realloc (abi.c) ---- */

extern size_t cairn_arena_top, cairn_arena_floor;

/* Frees everything allocated since the last arena_keep. */
static inline void arena_reset(void) { cairn_arena_top = cairn_arena_floor; }
/* Makes everything allocated so far permanent. */
static inline void arena_keep(void) { cairn_arena_floor = cairn_arena_top; }

/* ---- export results: one static return area ---- */

/* An export's result is read by the host right after the export returns and before the next
 * call, so one static area serves every export. The messages are static strings, so nothing
 * needs freeing afterwards: no cabi_post_* exports. */
extern task_result cairn_ret_area;

static inline task_result *task_result_ok(void) {
    cairn_ret_area.is_err = 0;
    return &cairn_ret_area;
}

static inline task_result *task_result_err(uint8_t kind, const char *msg, uint32_t len) {
    cairn_ret_area.is_err = 1;
    cairn_ret_area.err_kind = kind;
    cairn_ret_area.msg = msg;
    cairn_ret_area.msg_len = len;
    return &cairn_ret_area;
}

#endif
