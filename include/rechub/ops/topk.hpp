#pragma once
// Top-k per row (no gradient: used for retrieval and evaluation, never inside a loss).
//
//   topk(values [N, M], k) -> values [N, k] float32, indices [N, k] int32
//   Row r lists its k largest entries in descending order; equal values are ordered by the lower
//   column index first (so the result is unique and matches a stable descending sort). NaN ranks
//   below every number. A 1-d input [M] gives [k] outputs.
//
// Each row keeps a size-k min-heap (worst candidate on top) stored directly in its output row,
// so the cost is O(M log k) per row with no scratch memory; rows run in parallel.
#include <cmath>
#include <cstdint>
#include <limits>
#include <utility>

#include "rechub/core/parallel.hpp"
#include "rechub/ops/dispatch.hpp"

namespace rechub {

/// Result of topk: owned tensors (they outlive the step).
struct TopK {
  Tensor values;   // [N, k] float32, descending per row
  Tensor indices;  // [N, k] int32, column of each value
};

namespace detail {
inline float topk_key(float v) { return std::isnan(v) ? -std::numeric_limits<float>::infinity() : v; }
/// a ranks before b: larger value, or equal value with the lower index.
inline bool topk_before(float va, std::int32_t ia, float vb, std::int32_t ib) {
  const float ka = topk_key(va), kb = topk_key(vb);
  return ka > kb || (ka == kb && ia < ib);
}
// Min-heap on (v, ix) by topk_before: the root is the candidate that ranks last.
inline void topk_sift_down(float* v, std::int32_t* ix, std::int64_t n, std::int64_t i) {
  for (;;) {
    std::int64_t worst = i;
    const std::int64_t l = 2 * i + 1, r = l + 1;
    if (l < n && topk_before(v[worst], ix[worst], v[l], ix[l])) worst = l;
    if (r < n && topk_before(v[worst], ix[worst], v[r], ix[r])) worst = r;
    if (worst == i) return;
    std::swap(v[i], v[worst]);
    std::swap(ix[i], ix[worst]);
    i = worst;
  }
}
inline void topk_row(const float* x, std::int64_t M, std::int64_t k, float* v, std::int32_t* ix) {
  if (k == 0) return;
  for (std::int64_t j = 0; j < k; ++j) {
    v[j] = x[j];
    ix[j] = static_cast<std::int32_t>(j);
  }
  for (std::int64_t i = k / 2; i-- > 0;) topk_sift_down(v, ix, k, i);
  for (std::int64_t j = k; j < M; ++j) {
    if (!topk_before(x[j], static_cast<std::int32_t>(j), v[0], ix[0])) continue;
    v[0] = x[j];
    ix[0] = static_cast<std::int32_t>(j);
    topk_sift_down(v, ix, k, 0);
  }
  // Heap sort: moving the last-ranked root to the end each time leaves the row best-first.
  for (std::int64_t n = k; n-- > 1;) {
    std::swap(v[0], v[n]);
    std::swap(ix[0], ix[n]);
    topk_sift_down(v, ix, n, 0);
  }
}
}  // namespace detail

/// The k largest entries of every row of `values` [N, M] (or [M]), descending, ties to the lower index.
inline TopK topk(const Tensor& values, std::int64_t k) {
  detail::check_cpu("topk", values);
  detail::check_f32("topk", values, "values");
  RECHUB_CHECK_SHAPE(values.ndim() == 1 || values.ndim() == 2, "topk: values must be [N, M] or [M], got ",
                     values.shape().str());
  const std::int64_t N = values.rows(), M = values.cols();
  RECHUB_CHECK_SHAPE(k >= 0, "topk: k = ", k, " is negative");
  RECHUB_CHECK_SHAPE(k <= M, "topk: k = ", k, " exceeds the ", M, " columns of values ", values.shape().str());
  RECHUB_CHECK_SHAPE(M <= std::numeric_limits<std::int32_t>::max(), "topk: ", M, " columns exceed int32 indices");
  const Shape out = values.ndim() == 1 ? Shape{k} : Shape{N, k};
  TopK r{Tensor::empty(out, DType::f32), Tensor::empty(out, DType::i32)};
  const float* x = values.f32();
  float* v = r.values.f32();
  std::int32_t* ix = r.indices.i32();
  std::int64_t logk = 1;
  while ((std::int64_t(1) << logk) < k) ++logk;
  parallel_for(N, M * logk, [&](std::int64_t s, std::int64_t e) {
    for (std::int64_t i = s; i < e; ++i) detail::topk_row(x + i * M, M, k, v + i * k, ix + i * k);
  });
  return r;
}

}  // namespace rechub
