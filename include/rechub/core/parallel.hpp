#pragma once
// OpenMP helpers. Work is split over rows only when it is large enough to pay for the fork:
// on a 2-core machine a 64x64 GEMM on two threads ran ~70x slower than on one.
#include <cstdint>
#ifdef _OPENMP
#include <omp.h>
#endif

namespace rechub {

/// Below this many scalar operations a loop stays on the calling thread.
constexpr std::int64_t kParallelMinWork = 1 << 15;

inline int num_threads() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}
/// Whether the caller runs inside a parallel region (where parallel_for runs inline).
inline bool in_parallel() {
#ifdef _OPENMP
  return omp_in_parallel() != 0;
#else
  return false;
#endif
}
inline void set_num_threads(int n) {
#ifdef _OPENMP
  if (n > 0) omp_set_num_threads(n);
#else
  (void)n;
#endif
}

/// Runs fn(begin, end) over [0, n) in contiguous static chunks, one per thread, when
/// n * cost_per_item is large; otherwise runs fn(0, n) inline. Static chunks keep results
/// bit-identical for a given thread count.
template <class Fn>
void parallel_for(std::int64_t n, std::int64_t cost_per_item, Fn&& fn) {
  if (n <= 0) return;
#ifdef _OPENMP
  if (n * cost_per_item >= kParallelMinWork && n > 1 && omp_get_max_threads() > 1 && !omp_in_parallel()) {
#pragma omp parallel
    {
      const std::int64_t t = omp_get_thread_num(), nt = omp_get_num_threads();
      const std::int64_t begin = n * t / nt, end = n * (t + 1) / nt;
      if (begin < end) fn(begin, end);
    }
    return;
  }
#endif
  (void)cost_per_item;
  fn(std::int64_t(0), n);
}

/// Runs fn(i) for every i in [0, n), items handed out one at a time to whichever thread is free
/// (OpenMP's dynamic schedule), when n * cost_per_item is large; otherwise in order on the calling
/// thread. Only for items whose result does not depend on the thread that runs them (disjoint
/// outputs). The two vCPUs of this shared host often run at unequal speeds (one ~2x slower for a
/// while), and with static halves the faster one then waits: in a FaceBookDSSM epoch on 2 threads
/// the worker spent ~30% of its time in libgomp while the main thread ran ~30% more GEMM samples.
template <class Fn>
void parallel_for_dynamic(std::int64_t n, std::int64_t cost_per_item, Fn&& fn) {
  if (n <= 0) return;
#ifdef _OPENMP
  if (n * cost_per_item >= kParallelMinWork && n > 1 && omp_get_max_threads() > 1 && !omp_in_parallel()) {
#pragma omp parallel for schedule(dynamic, 1)
    for (std::int64_t i = 0; i < n; ++i) fn(i);
    return;
  }
#endif
  (void)cost_per_item;
  for (std::int64_t i = 0; i < n; ++i) fn(i);
}

}  // namespace rechub
