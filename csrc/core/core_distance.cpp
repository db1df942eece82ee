// How far apart two CPUs are, as the round trip of one cache line between them (core_roundtrip_ns).
//
// On a virtual machine the host decides where the guest's vCPUs run: two vCPUs on one CCD hand a line over through
// their shared L3, two on different CCDs (or sockets) through the fabric. On the 2-vCPU Zen 4 development machines
// the round trip measured about 100 ns at some times and about 320 ns at others, and the executor's 2-thread
// passes moved with it (bench/results/zen4_core_distance_ab.md). The benchmarks record it so that a result can be read
// with the placement it ran under.
#include "core/core_distance.h"

#include <atomic>
#include <chrono>
#include <stdexcept>
#include <thread>

#if defined(__linux__)
#include <pthread.h>
#include <sched.h>
#endif

namespace tf {

namespace {

#if defined(__linux__)
bool pin_to(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  return pthread_setaffinity_np(pthread_self(), sizeof set, &set) == 0;
}
#endif

}  // namespace

double core_roundtrip_ns(int cpu_a, int cpu_b, int64_t iters) {
#if defined(__linux__)
  if (iters <= 0) throw std::invalid_argument("iters must be positive");
  if (cpu_a < 0 || cpu_b < 0 || cpu_a >= CPU_SETSIZE || cpu_b >= CPU_SETSIZE || cpu_a == cpu_b)
    throw std::invalid_argument("two different CPU numbers are needed");
  cpu_set_t old;
  if (sched_getaffinity(0, sizeof old, &old) != 0 || !CPU_ISSET(cpu_a, &old) || !CPU_ISSET(cpu_b, &old))
    throw std::invalid_argument("both CPUs must be in this thread's affinity mask");
  // odd: the partner's move, even: ours; -1: stop. One line, bounced. On a CPU another process keeps busy the
  // partner may wait for whole time slices: the measure then stops after about half a second, over the round
  // trips done by then.
  alignas(64) std::atomic<int64_t> turn{0};
  std::atomic<bool> pinned{true};
  std::thread partner([&] {
    if (!pin_to(cpu_b)) pinned = false;
    for (int64_t i = 0;; ++i) {
      int64_t t;
      while ((t = turn.load(std::memory_order_acquire)) != 2 * i + 1) {
        if (t < 0) return;
      }
      turn.store(2 * i + 2, std::memory_order_release);
    }
  });
  if (!pin_to(cpu_a)) pinned = false;
  const auto bounce = [&](int64_t i) {
    turn.store(2 * i + 1, std::memory_order_release);
    while (turn.load(std::memory_order_acquire) != 2 * i + 2) {
    }
  };
  bounce(0);  // untimed: the partner started and pinned
  const auto t0 = std::chrono::steady_clock::now();
  const auto deadline = t0 + std::chrono::milliseconds(500);
  int64_t done = 0;
  while (done < iters) {
    bounce(++done);
    if ((done & 255) == 0 && std::chrono::steady_clock::now() > deadline) break;
  }
  const auto t1 = std::chrono::steady_clock::now();
  turn.store(-1, std::memory_order_release);
  partner.join();
  pthread_setaffinity_np(pthread_self(), sizeof old, &old);
  if (!pinned) throw std::runtime_error("could not pin the threads to the two CPUs");
  return std::chrono::duration<double, std::nano>(t1 - t0).count() / static_cast<double>(done);
#else
  (void)cpu_a;
  (void)cpu_b;
  (void)iters;
  throw std::runtime_error("core_roundtrip_ns needs Linux");
#endif
}

}  // namespace tf
