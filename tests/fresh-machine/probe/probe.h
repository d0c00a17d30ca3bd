/* Parsed by bindgen like rocksdb/c.h: it needs libclang and clang's own stddef.h/stdbool.h. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct cairn_probe_t {
  uint64_t records;
  size_t partitions;
  bool committed;
} cairn_probe_t;

const char* cairn_probe_versions(void);
