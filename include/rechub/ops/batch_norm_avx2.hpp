#pragma once
// AVX2 + FMA tile kernels of batch_norm1d (ops/norm.hpp): a tile is R rows (at most a chunk of
// kBnChunk) by 16 columns of a row-major [N, C] matrix, pointers offset to the tile's first
// element, rows C floats apart. The 16 columns (two vectors, one cache line) keep their
// parameters and sums in registers while the kernel walks down the rows, where a walk along
// whole rows reloads them from memory for every row (11 loads and 3 stores per 8 elements in the
// backward sums). A tile of 8 columns read each line twice, 64 rows apart: rows 1 KiB apart
// share 4 of L1's 64 sets, so the second read missed.
// Activations none, relu and prelu; sigmoid and tanh run the generic kernels in norm.hpp.
//
// Same formulas, per column the same order (rows in order) as the generic kernels; roundings may
// differ where GCC contracts the generic a * b + c differently. min / max take 0 first so that
// NaN passes through as it does through std::max(z, 0.0f).
#include <cstdint>

#include "rechub/ops/activation.hpp"

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define RECHUB_AVX2_BATCH_NORM 1

namespace rechub::detail::avx2 {

/// Whether these kernels cover activation K.
template <ActKind K>
constexpr bool bn_tile_fits() {
  return K == ActKind::none || K == ActKind::relu || K == ActKind::prelu;
}

/// g * act'(z); the derivative at z = 0 from the left, as act_grad.
template <ActKind K>
inline __m256 bn_act_grad(__m256 g, __m256 z, __m256 slope) {
  if constexpr (K == ActKind::none) {
    return g;
  } else {
    const __m256 pos = _mm256_cmp_ps(z, _mm256_setzero_ps(), _CMP_GT_OQ);
    if constexpr (K == ActKind::relu) return _mm256_and_ps(pos, g);
    else return _mm256_blendv_ps(_mm256_mul_ps(g, slope), g, pos);
  }
}

/// The two vectors of a tile's 16 columns.
struct BnPair {
  __m256 lo, hi;
};
inline BnPair bn_load(const float* p) { return {_mm256_loadu_ps(p), _mm256_loadu_ps(p + 8)}; }
inline void bn_store(float* p, BnPair v) {
  _mm256_storeu_ps(p, v.lo);
  _mm256_storeu_ps(p + 8, v.hi);
}

/// Per column of the tile: sum = sum_r w_r x, then m2 = sum_r w_r (x - sum / n)^2 about the
/// tile's own mean (n = sum of its weights, > 0; w_r = 1 without rw). The second pass reads the
/// tile from L1.
inline void bn_tile_moments(const float* __restrict x, std::int64_t R, std::int64_t C, const float* __restrict rw,
                            float n, float* __restrict sum, float* __restrict m2) {
  __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
  for (std::int64_t r = 0; r < R; ++r) {
    const float* xr = x + r * C;
    if (rw) {
      const __m256 w = _mm256_set1_ps(rw[r]);
      s0 = _mm256_fmadd_ps(w, _mm256_loadu_ps(xr), s0);
      s1 = _mm256_fmadd_ps(w, _mm256_loadu_ps(xr + 8), s1);
    } else {
      s0 = _mm256_add_ps(s0, _mm256_loadu_ps(xr));
      s1 = _mm256_add_ps(s1, _mm256_loadu_ps(xr + 8));
    }
  }
  const __m256 nn = _mm256_set1_ps(n), m0 = _mm256_div_ps(s0, nn), m1 = _mm256_div_ps(s1, nn);
  __m256 v0 = _mm256_setzero_ps(), v1 = _mm256_setzero_ps();
  for (std::int64_t r = 0; r < R; ++r) {
    const float* xr = x + r * C;
    const __m256 d0 = _mm256_sub_ps(_mm256_loadu_ps(xr), m0), d1 = _mm256_sub_ps(_mm256_loadu_ps(xr + 8), m1);
    if (rw) {
      const __m256 w = _mm256_set1_ps(rw[r]);
      v0 = _mm256_fmadd_ps(_mm256_mul_ps(w, d0), d0, v0);
      v1 = _mm256_fmadd_ps(_mm256_mul_ps(w, d1), d1, v1);
    } else {
      v0 = _mm256_fmadd_ps(d0, d0, v0);
      v1 = _mm256_fmadd_ps(d1, d1, v1);
    }
  }
  bn_store(sum, {s0, s1});
  bn_store(m2, {v0, v1});
}

/// Per column of the tile: sum gz, sum gz xh and (prelu) sum g min(z, 0), with gz = g act'(z),
/// xh = x I + M, z = x A + B.
template <ActKind K>
inline void bn_tile_grad_sums(const float* __restrict x, const float* __restrict g, std::int64_t R, std::int64_t C,
                              const float* __restrict I, const float* __restrict M, const float* __restrict A,
                              const float* __restrict B, const float* __restrict S, float* __restrict s_g,
                              float* __restrict s_gx, float* __restrict s_a) {
  const BnPair i = bn_load(I), m = bn_load(M), a = bn_load(A), b = bn_load(B), sl = bn_load(S);
  const __m256 zero = _mm256_setzero_ps();
  BnPair sg{zero, zero}, sx{zero, zero}, sa{zero, zero};
  auto step = [&](const float* xp, const float* gp, __m256 ii, __m256 mm, __m256 aa, __m256 bb, __m256 ss,
                  __m256& acc_g, __m256& acc_x, __m256& acc_a) {
    const __m256 xv = _mm256_loadu_ps(xp), gv = _mm256_loadu_ps(gp);
    const __m256 z = _mm256_fmadd_ps(xv, aa, bb), gz = bn_act_grad<K>(gv, z, ss);
    acc_g = _mm256_add_ps(acc_g, gz);
    acc_x = _mm256_fmadd_ps(gz, _mm256_fmadd_ps(xv, ii, mm), acc_x);
    if constexpr (K == ActKind::prelu) acc_a = _mm256_fmadd_ps(gv, _mm256_min_ps(zero, z), acc_a);
  };
  for (std::int64_t r = 0; r < R; ++r) {
    const float *xr = x + r * C, *gr = g + r * C;
    step(xr, gr, i.lo, m.lo, a.lo, b.lo, sl.lo, sg.lo, sx.lo, sa.lo);
    step(xr + 8, gr + 8, i.hi, m.hi, a.hi, b.hi, sl.hi, sg.hi, sx.hi, sa.hi);
  }
  bn_store(s_g, sg);
  bn_store(s_gx, sx);
  bn_store(s_a, sa);
}

}  // namespace rechub::detail::avx2

#endif
