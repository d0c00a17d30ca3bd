// Compiled like librocksdb-sys compiles RocksDB: C++20 (-std=c++20, -include cstdint), the
// standard library's threads and atomics, linked with libstdc++.
#include <atomic>
#include <span>
#include <thread>
#include <vector>

extern "C" uint64_t cairn_probe_cxx_sum(void) {
  std::vector<uint64_t> counts{1, 2, 3, 4};
  std::atomic<uint64_t> sum{0};
  std::thread adder([&] {
    for (uint64_t c : std::span<const uint64_t>(counts)) sum += c;
  });
  adder.join();
  return sum.load();
}
