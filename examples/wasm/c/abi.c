/*
 * cabi_realloc: the allocator the host uses to pass lists and strings into the component
 * (process's key and value, on-timer's key, host.config's text, state.get's value).
 *
 * It is a bump allocator over the memory above __heap_base ("the arena"), grown with
 * memory.grow when needed, and nothing is ever freed one by one. Lifetime reasoning:
 *   - The host allocates an export's arguments with cabi_realloc just before calling the
 *     export, and they are dead once it returns (the task keeps no pointer to them: the state
 *     lives in the host, and emit copies key and value out during the call). So process and
 *     on-timer reset the arena as they return, never on entry (that would free the arguments
 *     of the current call). A record then costs no allocation beyond the bump of its key and
 *     value, and the memory in use is bounded by the largest record.
 *   - Lists the host returns from an import during a call (state.get) live until that reset.
 *   - The config text is kept for the life of the instance: after reading it the task moves the
 *     arena's floor above it (arena_keep), which also keeps, once, the key and value of the
 *     record being processed at that moment: a few bytes, once.
 * The results an export returns point into static data only, never into the arena.
 */
#include "abi.h"

extern uint8_t __heap_base;

size_t cairn_arena_top, cairn_arena_floor;
static uint64_t arena_end; /* bytes of memory now; 64-bit: 65536 pages is 4 GiB */
_Alignas(8) task_result cairn_ret_area;

#define PAGE 65536u

EXPORT("cabi_realloc")
void *cabi_realloc(void *old_ptr, size_t old_size, size_t align, size_t new_size) {
    if (cairn_arena_top == 0) {
        cairn_arena_top = cairn_arena_floor = (size_t)&__heap_base;
        arena_end = (uint64_t)__builtin_wasm_memory_size(0) * PAGE;
    }
    if (new_size == 0) return (void *)align; /* any aligned non-null pointer will do */
    uint64_t start = ((uint64_t)cairn_arena_top + align - 1) & ~((uint64_t)align - 1);
    uint64_t end = start + new_size;
    if (end > arena_end) {
        uint64_t pages = (end - arena_end + PAGE - 1) / PAGE;
        if (end > 0x100000000ull || __builtin_wasm_memory_grow(0, (size_t)pages) == (size_t)-1)
            __builtin_trap();
        arena_end = (uint64_t)__builtin_wasm_memory_size(0) * PAGE;
    }
    cairn_arena_top = (size_t)end;
    uint8_t *dst = (uint8_t *)(size_t)start;
    if (old_ptr) {
        size_t n = old_size < new_size ? old_size : new_size;
        __builtin_memcpy(dst, old_ptr, n); /* memory.copy (bulk memory) */
    }
    return dst;
}
