#pragma once
// AVX2 + FMA tile kernels of batch_norm1d (ops/norm.hpp): a tile is R rows (at most a chunk of
// kBnChunk) by 8 columns of a row-major [N, C] matrix, pointers offset to the tile's first
// element, rows C floats apart. The 8 columns are one vector: each column's parameters and sums
// stay in registers while the kernel walks down the rows, where a walk along whole rows reloads
// them from memory for every row (11 loads and 3 stores per 8 elements in the backward sums).
// Activations none, relu and prelu; sigmoid and tanh run the generic kernels in norm.hpp.
//
// Same formulas, per column the same order as the generic kernels (four chains per sum, row r
// feeding chain r % 4, totalled as (c0 + c1) + (c2 + c3)); roundings may differ where GCC contracts the generic a * b + c differently
// (a test compares the two paths). min / max take 0 first so that NaN passes through as it does
// through std::max(z, 0.0f).
#include <cstdint>
#include <type_traits>

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

/// Runs step(r, j) for rows r of [0, R) with j = r % 4 (j constant in each call): the row
/// loop unrolled by 4 so that four independent chains per sum hide the add / FMA latency (a tile
/// has one vector per sum, and one chain ran ~4x slower than the loads allow).
template <class Step>
inline void bn_rows_by4(std::int64_t R, Step&& step) {
  std::int64_t r = 0;
  for (; r + 4 <= R; r += 4) {
    step(r, std::integral_constant<int, 0>());
    step(r + 1, std::integral_constant<int, 1>());
    step(r + 2, std::integral_constant<int, 2>());
    step(r + 3, std::integral_constant<int, 3>());
  }
  if (r < R) step(r, std::integral_constant<int, 0>());
  if (r + 1 < R) step(r + 1, std::integral_constant<int, 1>());
  if (r + 2 < R) step(r + 2, std::integral_constant<int, 2>());
}
/// The four chains' total: (c0 + c1) + (c2 + c3), as the generic kernels add them.
inline __m256 bn_total(const __m256 (&c)[4]) {
  return _mm256_add_ps(_mm256_add_ps(c[0], c[1]), _mm256_add_ps(c[2], c[3]));
}

/// Per column of the tile: sum = sum_r w_r x, then m2 = sum_r w_r (x - sum / n)^2 about the
/// tile's own mean (n = sum of its weights, > 0; w_r = 1 without rw). The second pass reads the
/// tile from L1.
inline void bn_tile_moments(const float* __restrict x, std::int64_t R, std::int64_t C, const float* __restrict rw,
                            float n, float* __restrict sum, float* __restrict m2) {
  const __m256 zero = _mm256_setzero_ps();
  __m256 s[4] = {zero, zero, zero, zero}, v[4] = {zero, zero, zero, zero};
  if (rw) {
    bn_rows_by4(R, [&](std::int64_t r, auto j) {
      s[j] = _mm256_fmadd_ps(_mm256_set1_ps(rw[r]), _mm256_loadu_ps(x + r * C), s[j]);
    });
  } else {
    bn_rows_by4(R, [&](std::int64_t r, auto j) { s[j] = _mm256_add_ps(s[j], _mm256_loadu_ps(x + r * C)); });
  }
  const __m256 total = bn_total(s), mean = _mm256_div_ps(total, _mm256_set1_ps(n));
  bn_rows_by4(R, [&](std::int64_t r, auto j) {
    const __m256 d = _mm256_sub_ps(_mm256_loadu_ps(x + r * C), mean);
    v[j] = _mm256_fmadd_ps(rw ? _mm256_mul_ps(_mm256_set1_ps(rw[r]), d) : d, d, v[j]);
  });
  _mm256_storeu_ps(sum, total);
  _mm256_storeu_ps(m2, bn_total(v));
}

/// Per column of the tile: sum gz, sum gz xh and (prelu) sum g min(z, 0), with gz = g act'(z),
/// xh = x I + M, z = x A + B.
template <ActKind K>
inline void bn_tile_grad_sums(const float* __restrict x, const float* __restrict g, std::int64_t R, std::int64_t C,
                              const float* __restrict I, const float* __restrict M, const float* __restrict A,
                              const float* __restrict B, const float* __restrict S, float* __restrict s_g,
                              float* __restrict s_gx, float* __restrict s_a) {
  const __m256 i = _mm256_loadu_ps(I), m = _mm256_loadu_ps(M), a = _mm256_loadu_ps(A), b = _mm256_loadu_ps(B),
               sl = _mm256_loadu_ps(S), zero = _mm256_setzero_ps();
  __m256 sg[4] = {zero, zero, zero, zero}, sx[4] = {zero, zero, zero, zero}, sa[4] = {zero, zero, zero, zero};
  bn_rows_by4(R, [&](std::int64_t r, auto j) {
    const __m256 xv = _mm256_loadu_ps(x + r * C), gv = _mm256_loadu_ps(g + r * C);
    const __m256 z = _mm256_fmadd_ps(xv, a, b), gz = bn_act_grad<K>(gv, z, sl);
    sg[j] = _mm256_add_ps(sg[j], gz);
    sx[j] = _mm256_fmadd_ps(gz, _mm256_fmadd_ps(xv, i, m), sx[j]);
    if constexpr (K == ActKind::prelu) sa[j] = _mm256_fmadd_ps(gv, _mm256_min_ps(zero, z), sa[j]);
  });
  _mm256_storeu_ps(s_g, bn_total(sg));
  _mm256_storeu_ps(s_gx, bn_total(sx));
  _mm256_storeu_ps(s_a, bn_total(sa));
}

}  // namespace rechub::detail::avx2

#endif
