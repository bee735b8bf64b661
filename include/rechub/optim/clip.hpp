#pragma once
// Gradient clipping by global L2 norm: torch.nn.utils.clip_grad_norm_ (norm_type 2,
// error_if_nonfinite = false).
//   n = sqrt(sum over every trainable parameter of sum(grad^2))
//   c = max_norm / (n + 1e-6);  when c < 1 every gradient is multiplied by c
//   returns n, the norm BEFORE clipping
// The squares are summed in double over at most 256 fixed blocks per tensor, combined in order,
// so the norm does not depend on the thread count (torch sums in float32; the difference is
// rounding only). A lazy (row-tracking) parameter holds gradient only on its touched rows, so
// only those rows are read and scaled. Frozen parameters (requires_grad false) are ignored,
// and a parameter listed twice counts once.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <utility>
#include <vector>

#include "rechub/autograd/tape.hpp"
#include "rechub/core/parallel.hpp"

namespace rechub {

namespace detail {
/// Sum of f(begin, end) over [0, n) split into at most 256 fixed blocks, added in block order.
template <class F>
double clip_blocked_sum(std::int64_t n, std::int64_t cost_per_item, F&& f) {
  constexpr std::int64_t kMaxBlocks = 256;
  if (n <= 0) return 0.0;
  const std::int64_t block = (n + kMaxBlocks - 1) / kMaxBlocks, nb = (n + block - 1) / block;
  std::array<double, kMaxBlocks> partial{};
  parallel_for(nb, block * cost_per_item, [&](std::int64_t b0, std::int64_t b1) {
    for (std::int64_t b = b0; b < b1; ++b) partial[b] = f(b * block, std::min(n, (b + 1) * block));
  });
  double s = 0;
  for (std::int64_t b = 0; b < nb; ++b) s += partial[b];
  return s;
}
inline std::int64_t clip_row_width(const Parameter& p) {
  return p.value().dim(0) == 0 ? 0 : p.numel() / p.value().dim(0);
}
}  // namespace detail

/// Scales all gradients so their global L2 norm is at most max_norm; returns the norm before.
inline float clip_grad_norm(const std::vector<Parameter*>& params, float max_norm) {
  RECHUB_CHECK_AS(ConfigError, max_norm >= 0.0f, "clip_grad_norm: max_norm must be >= 0, got ", max_norm);
  // A table shared by two modules may be listed twice; count and scale it once.
  auto skip = [&](std::size_t i) {
    if (!params[i]->requires_grad()) return true;
    for (std::size_t j = 0; j < i; ++j)
      if (params[j] == params[i]) return true;
    return false;
  };
  double sq = 0;
  for (std::size_t i = 0; i < params.size(); ++i) {
    if (skip(i)) continue;
    const Parameter* p = params[i];
    const float* g = p->grad().f32();
    if (const detail::RowSet* rs = p->touched_rows()) {
      const std::int64_t cols = detail::clip_row_width(*p);
      const std::int32_t* rows = rs->rows.data();
      sq += detail::clip_blocked_sum(static_cast<std::int64_t>(rs->rows.size()), cols, [&](std::int64_t a, std::int64_t b) {
        double s = 0;
        for (std::int64_t r = a; r < b; ++r)
          for (std::int64_t c = 0; c < cols; ++c) {
            const double x = g[rows[r] * cols + c];
            s += x * x;
          }
        return s;
      });
    } else {
      sq += detail::clip_blocked_sum(p->numel(), 1, [&](std::int64_t a, std::int64_t b) {
        double s = 0;
        for (std::int64_t e = a; e < b; ++e) s += double(g[e]) * g[e];
        return s;
      });
    }
  }
  const double norm = std::sqrt(sq);
  const double coef = max_norm / (norm + 1e-6);
  if (coef < 1.0) {
    const float c = static_cast<float>(coef);
    for (std::size_t i = 0; i < params.size(); ++i) {
      if (skip(i)) continue;
      Parameter* p = params[i];
      float* g = p->grad().f32();
      if (const detail::RowSet* rs = p->touched_rows()) {
        const std::int64_t cols = detail::clip_row_width(*p);
        for (std::int32_t r : rs->rows)
          for (std::int64_t e = r * cols; e < (r + 1) * cols; ++e) g[e] *= c;
      } else {
        parallel_for(p->numel(), 1, [&](std::int64_t a, std::int64_t b) {
          for (std::int64_t e = a; e < b; ++e) g[e] *= c;
        });
      }
    }
  }
  return static_cast<float>(norm);
}

/// Same from a braced list (`clip_grad_norm({&a, &b}, 1)` would otherwise be ambiguous).
inline float clip_grad_norm(std::initializer_list<Parameter*> params, float max_norm) {
  return clip_grad_norm(std::vector<Parameter*>(params), max_norm);
}

/// Same over Module::named_parameters().
inline float clip_grad_norm(const std::vector<std::pair<std::string, Parameter*>>& named, float max_norm) {
  std::vector<Parameter*> params;
  params.reserve(named.size());
  for (const auto& kv : named) params.push_back(kv.second);
  return clip_grad_norm(params, max_norm);
}

}  // namespace rechub
