#pragma once
#include <cstdint>

namespace tf {

// Mean round trip, in ns, of one cache line bounced iters times between a thread pinned to cpu_a and one pinned to
// cpu_b (both must be in the calling thread's affinity mask). Spins both CPUs for the duration, at most about half a
// second (then the mean over the round trips done).
double core_roundtrip_ns(int cpu_a, int cpu_b, int64_t iters);

}  // namespace tf
