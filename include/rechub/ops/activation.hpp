#pragma once
// Activations, dropout, and linear + activation fused.
//
//   relu     y = max(x, 0)                          dx += g * [x > 0]
//   prelu    y = x > 0 ? x : a_c * x               dx += g * (x > 0 ? 1 : a_c),  da_c += sum g * x [x <= 0]
//            a is [1] (one slope) or [C] with C = x's last dim. torch's nn.PReLU puts channels on
//            dim 1; for the 2-d inputs MLPs see, that is the last dim.
//   sigmoid  y = 1 / (1 + e^-x)                     dx += g * y (1 - y)
//   tanh     y = tanh x                             dx += g * (1 - y^2)
//   dice     Torch-RecHub's Dice (torch_rechub/basic/activation.py), per row over the last dim C:
//            m = mean(x), s = sqrt(sum_k (x_k - m)^2 + C eps), n = (x - m) / s, p = sigmoid(n),
//            y = p x + (1 - p) a x = x (a + (1 - a) p).  a is [1] (Torch-RecHub: randn(1)) or [C].
//            dy/dp = x (1 - a), dy/da = x (1 - p); through n: with gn = g x (1 - a) p (1 - p),
//            du_k = (gn_k - n_k sum_j gn_j n_j) / s and dx_k += g_k (a + (1 - a) p_k) + du_k - mean(du).
//            (The DIN paper's batch-statistics variant is dice_bn in ops/norm.hpp.)
//   dropout  inverted: y = x * keep / (1 - p), keep ~ Bernoulli(1 - p) drawn per element in order
//            from the given Rng; dx += g * keep / (1 - p). Identity (the same Var) when not training
//            or p == 0.
//   linear_act  y = act(x W^T + b) in one pass: the bias and activation are applied while the GEMM
//            output is hot in cache, and the backward forms g * act' once for the three GEMMs.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "rechub/core/rng.hpp"
#include "rechub/ops/elementwise.hpp"
#include "rechub/ops/matmul.hpp"

namespace rechub {

/// The elementwise activations fused kernels (linear_act, batch_norm1d_act) can apply.
enum class ActKind : std::uint8_t { none, relu, prelu, sigmoid, tanh };

inline const char* act_name(ActKind k) {
  switch (k) {
    case ActKind::none:
      return "none";
    case ActKind::relu:
      return "relu";
    case ActKind::prelu:
      return "prelu";
    case ActKind::sigmoid:
      return "sigmoid";
    case ActKind::tanh:
      return "tanh";
  }
  return "?";
}

namespace detail {

inline float sigmoid_scalar(float x) {
  // One branch-free form: for very negative x, e^-x overflows to inf and the result is exactly 0
  // (never NaN); branching on the sign would mispredict on every other element.
  return 1.0f / (1.0f + std::exp(-x));
}

// The activation kernels avoid branches: on real data the sign of z is random, so a branch
// mispredicts half the time. GCC will not turn `z > 0 ? g : g * a` into a blend by itself (under
// the default -ftrapping-math it must not compute g * a speculatively), which also blocks
// vectorisation of the whole loop; an explicit bitwise select and min/max forms vectorise.

/// c ? a : b without a branch (both operands are already computed).
inline float blend(bool c, float a, float b) {
  std::uint32_t ua, ub;
  std::memcpy(&ua, &a, 4);
  std::memcpy(&ub, &b, 4);
  const std::uint32_t m = 0u - static_cast<std::uint32_t>(c);
  const std::uint32_t r = (ua & m) | (ub & ~m);
  float f;
  std::memcpy(&f, &r, 4);
  return f;
}

/// act(z) with prelu slope a.
template <ActKind K>
inline float act_value(float z, float a) {
  if constexpr (K == ActKind::relu) return std::max(z, 0.0f);
  else if constexpr (K == ActKind::prelu) return std::max(z, 0.0f) + a * std::min(z, 0.0f);
  else if constexpr (K == ActKind::sigmoid) return sigmoid_scalar(z);
  else if constexpr (K == ActKind::tanh) return std::tanh(z);
  else return z;
}
/// g * act'(z) given z and y = act(z) (sigmoid and tanh reuse y, the others read z). As torch,
/// the derivative at z = 0 is taken from the left (relu 0, prelu a).
template <ActKind K>
inline float act_grad(float g, float z, float y, float a) {
  if constexpr (K == ActKind::relu) {
    return blend(z > 0.0f, g, 0.0f);
  } else if constexpr (K == ActKind::prelu) {
    return blend(z > 0.0f, g, g * a);
  } else if constexpr (K == ActKind::sigmoid) {
    return g * y * (1.0f - y);
  } else if constexpr (K == ActKind::tanh) {
    return g * (1.0f - y * y);
  } else {
    return g;
  }
}
template <ActKind K>
constexpr std::int64_t act_cost() {
  return (K == ActKind::sigmoid || K == ActKind::tanh) ? 16 : 1;
}

/// Calls fn(std::integral_constant<ActKind, K>{}) for the runtime kind k.
template <class Fn>
void dispatch_act(ActKind k, Fn&& fn) {
  switch (k) {
    case ActKind::none:
      fn(std::integral_constant<ActKind, ActKind::none>{});
      break;
    case ActKind::relu:
      fn(std::integral_constant<ActKind, ActKind::relu>{});
      break;
    case ActKind::prelu:
      fn(std::integral_constant<ActKind, ActKind::prelu>{});
      break;
    case ActKind::sigmoid:
      fn(std::integral_constant<ActKind, ActKind::sigmoid>{});
      break;
    case ActKind::tanh:
      fn(std::integral_constant<ActKind, ActKind::tanh>{});
      break;
  }
}

/// Validates a prelu / dice slope: [1] or [C] for inputs whose last dim is C.
inline void check_slope(const char* op, const Shape& x, const Var& slope, const char* name) {
  RECHUB_CHECK_SHAPE(slope.defined(), op, ": ", name, " is required");
  const Tensor& a = slope.value();
  check_cpu(op, a);
  check_f32(op, a, name);
  const std::int64_t c = x.ndim() == 0 ? 1 : x[-1];
  RECHUB_CHECK_SHAPE(a.ndim() == 1 && (a.dim(0) == 1 || a.dim(0) == c), op, ": ", name, " ", a.shape().str(),
                     " must be [1] or [", c, "] for input ", x.str());
}

/// y = act(y) in place over `rows` rows of width n, saving z first for prelu (S = slope per column).
template <ActKind K>
inline void act_rows_forward(float* __restrict y, float* __restrict z, std::int64_t rows, std::int64_t n,
                             const float* __restrict S) {
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t j = 0; j < n; ++j) {
      const std::int64_t i = r * n + j;
      const float v = y[i];
      if constexpr (K == ActKind::prelu) {
        z[i] = v;
        y[i] = act_value<K>(v, S[j]);
      } else {
        y[i] = act_value<K>(v, 0.0f);
      }
    }
}

/// G = dy act'(z) over `rows` rows of width n; acc_b += column sums of G, acc_a += column sums of
/// dy z over z <= 0 (prelu). z is y for the kinds whose derivative y determines.
template <ActKind K>
inline void act_rows_backward(const float* __restrict dy, const float* y, const float* z, float* __restrict G,
                              std::int64_t rows, std::int64_t n, const float* __restrict S, float* __restrict acc_b,
                              float* __restrict acc_a) {
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t j = 0; j < n; ++j) {
      const std::int64_t i = r * n + j;
      const float zi = z[i];
      const float gi = act_grad<K>(dy[i], zi, y[i], K == ActKind::prelu ? S[j] : 0.0f);
      G[i] = gi;
      acc_b[j] += gi;
      if constexpr (K == ActKind::prelu) acc_a[j] += dy[i] * std::min(zi, 0.0f);
    }
}

/// prelu backward over `rows` rows of width n: dx += g (x > 0 ? 1 : S), acc += g min(x, 0).
inline void prelu_rows_backward(const float* __restrict g, const float* __restrict x, float* __restrict dx,
                                std::int64_t rows, std::int64_t n, const float* __restrict S, float* __restrict acc) {
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t j = 0; j < n; ++j) {
      const std::int64_t i = r * n + j;
      acc[j] += g[i] * std::min(x[i], 0.0f);
    }
  if (dx)
    for (std::int64_t r = 0; r < rows; ++r)
      for (std::int64_t j = 0; j < n; ++j) {
        const std::int64_t i = r * n + j;
        dx[i] += act_grad<ActKind::prelu>(g[i], x[i], 0.0f, S[j]);
      }
}

}  // namespace detail

/// max(x, 0).
inline Var relu(const Var& x) {
  return detail::map_unary(
      "relu", x, 1, [](float v) { return std::max(v, 0.0f); },
      [](float g, float v, float) { return detail::blend(v > 0.0f, g, 0.0f); });
}
/// 1 / (1 + e^-x), overflow-free for large |x|.
inline Var sigmoid(const Var& x) {
  return detail::map_unary(
      "sigmoid", x, 16, [](float v) { return detail::sigmoid_scalar(v); },
      [](float g, float, float y) { return g * y * (1.0f - y); });
}
/// tanh(x).
inline Var tanh(const Var& x) {
  return detail::map_unary(
      "tanh", x, 16, [](float v) { return std::tanh(v); }, [](float g, float, float y) { return g * (1.0f - y * y); });
}

/// x > 0 ? x : slope * x, slope [1] or [C] over the last dim (learnable, like torch's PReLU).
inline Var prelu(const Var& x, const Var& slope) {
  const Tensor& X = x.value();
  detail::check_cpu("prelu", X);
  detail::check_f32("prelu", X, "input");
  detail::check_slope("prelu", X.shape(), slope, "slope");
  const std::int64_t C = X.ndim() == 0 ? 1 : X.dim(-1), rows = X.numel() / (C ? C : 1);
  const std::int64_t na = slope.value().numel();
  Var out = detail::make_output("prelu", X.shape(), DType::f32, x, slope);
  // The slope per column, so the inner loops are the branch-free kernels of the fused ops.
  float* S = step_arena().tensor({C}).f32();
  for (std::int64_t c = 0; c < C; ++c) S[c] = slope.value().f32()[na == 1 ? 0 : c];
  {
    const float* px = X.f32();
    float* py = out.value().f32();
    parallel_for(rows, C, [&](std::int64_t b, std::int64_t e) {
      for (std::int64_t r = b; r < e; ++r)
        for (std::int64_t c = 0; c < C; ++c) py[r * C + c] = detail::act_value<ActKind::prelu>(px[r * C + c], S[c]);
    });
  }
  detail::record(out, [x, slope, out, rows, C, na, S] {
    const float *g = out.grad().f32(), *px = x.value().f32();
    float* dx = x.requires_grad() ? x.grad_acc().f32() : nullptr;
    Tensor red = step_arena().zeros({C});  // per column sum of g x over x <= 0
    detail::reduce_rows(rows, C, 3 * C, red.f32(), [&](std::int64_t r0, std::int64_t r1, float* acc) {
      detail::prelu_rows_backward(g + r0 * C, px + r0 * C, dx ? dx + r0 * C : nullptr, r1 - r0, C, S, acc);
    });
    if (slope.requires_grad()) {
      float* da = slope.grad_acc().f32();
      if (na == 1) {
        float s = 0.0f;
        for (std::int64_t c = 0; c < C; ++c) s += red.f32()[c];
        da[0] += s;
      } else {
        for (std::int64_t c = 0; c < C; ++c) da[c] += red.f32()[c];
      }
    }
  });
  return out;
}

/// Torch-RecHub's Dice: y = x (alpha + (1 - alpha) sigmoid((x - mean) / sqrt(sum (x - mean)^2 + C eps)))
/// with the statistics taken per row over the last dim; alpha [1] or [C].
inline Var dice(const Var& x, const Var& alpha, float eps = 1e-3f) {
  const Tensor& X = x.value();
  detail::check_cpu("dice", X);
  detail::check_f32("dice", X, "input");
  RECHUB_CHECK_SHAPE(X.ndim() >= 1 && X.dim(-1) > 0, "dice: input ", X.shape().str(), " has no features");
  detail::check_slope("dice", X.shape(), alpha, "alpha");
  const std::int64_t C = X.dim(-1), rows = X.numel() / C, na = alpha.value().numel();
  Var out = detail::make_output("dice", X.shape(), DType::f32, x, alpha);
  float* stats = step_arena().tensor({rows, 2}).f32();  // per row: mean, s
  {
    const float *px = X.f32(), *pa = alpha.value().f32();
    float* py = out.value().f32();
    parallel_for(rows, 24 * C, [&](std::int64_t b, std::int64_t e) {
      for (std::int64_t r = b; r < e; ++r) {
        const float* xr = px + r * C;
        float m = 0.0f;
        for (std::int64_t c = 0; c < C; ++c) m += xr[c];
        m /= float(C);
        float v = 0.0f;
        for (std::int64_t c = 0; c < C; ++c) v += (xr[c] - m) * (xr[c] - m);
        const float s = std::sqrt(v + float(C) * eps), inv = 1.0f / s;
        stats[2 * r] = m;
        stats[2 * r + 1] = s;
        for (std::int64_t c = 0; c < C; ++c) {
          const float a = pa[na == 1 ? 0 : c], p = detail::sigmoid_scalar((xr[c] - m) * inv);
          py[r * C + c] = xr[c] * (a + (1.0f - a) * p);
        }
      }
    });
  }
  detail::record(out, [x, alpha, out, rows, C, na, stats] {
    const float *g = out.grad().f32(), *px = x.value().f32(), *pa = alpha.value().f32();
    float* dx = x.requires_grad() ? x.grad_acc().f32() : nullptr;
    const bool want_a = alpha.requires_grad();
    Tensor da_buf = step_arena().zeros({na});
    detail::reduce_rows(rows, na, 48 * C, da_buf.f32(), [&](std::int64_t r0, std::int64_t r1, float* acc) {
      for (std::int64_t r = r0; r < r1; ++r) {
        const float *xr = px + r * C, *gr = g + r * C;
        const float m = stats[2 * r], s = stats[2 * r + 1], inv = 1.0f / s;
        if (want_a)
          for (std::int64_t c = 0; c < C; ++c) {
            const float p = detail::sigmoid_scalar((xr[c] - m) * inv);
            acc[na == 1 ? 0 : c] += gr[c] * xr[c] * (1.0f - p);
          }
        if (!dx) continue;
        float sum_gn = 0.0f, dot = 0.0f, sum_n = 0.0f;
        for (std::int64_t c = 0; c < C; ++c) {
          const float a = pa[na == 1 ? 0 : c], n = (xr[c] - m) * inv, p = detail::sigmoid_scalar(n);
          const float gn = gr[c] * xr[c] * (1.0f - a) * p * (1.0f - p);
          sum_gn += gn;
          dot += gn * n;
          sum_n += n;
        }
        const float mean_du = (sum_gn - dot * sum_n) * inv / float(C);
        float* dxr = dx + r * C;
        for (std::int64_t c = 0; c < C; ++c) {
          const float a = pa[na == 1 ? 0 : c], n = (xr[c] - m) * inv, p = detail::sigmoid_scalar(n);
          const float gn = gr[c] * xr[c] * (1.0f - a) * p * (1.0f - p);
          dxr[c] += gr[c] * (a + (1.0f - a) * p) + (gn - n * dot) * inv - mean_du;
        }
      }
    });
    if (want_a) {
      float* da = alpha.grad_acc().f32();
      for (std::int64_t k = 0; k < na; ++k) da[k] += da_buf.f32()[k];
    }
  });
  return out;
}

/// Inverted dropout: zeroes each element with probability p and scales the rest by 1/(1-p).
/// Returns x itself (no tape node) when !training or p == 0. Draws one uniform per element, in
/// order, from `rng`, so a given Rng state always yields the same mask.
inline Var dropout(const Var& x, float p, bool training, Rng& rng) {
  RECHUB_CHECK_AS(ConfigError, p >= 0.0f && p <= 1.0f, "dropout: p must be in [0, 1], got ", p);
  if (!training || p == 0.0f) return x;
  const Tensor& X = x.value();
  detail::check_cpu("dropout", X);
  detail::check_f32("dropout", X, "input");
  const std::int64_t n = X.numel();
  Var out = detail::make_output("dropout", X.shape(), DType::f32, x);
  const float scale = p >= 1.0f ? 0.0f : 1.0f / (1.0f - p);  // p = 1 drops everything, like torch
  auto* keep = static_cast<std::uint8_t*>(step_arena().allocate(static_cast<std::size_t>(n)));
  const double pd = p;
  for (std::int64_t i = 0; i < n; ++i) keep[i] = rng.uniform() >= pd ? 1 : 0;
  {
    const float* px = X.f32();
    float* py = out.value().f32();
    parallel_for(n, 1, [&](std::int64_t b, std::int64_t e) {
      for (std::int64_t i = b; i < e; ++i) py[i] = keep[i] ? px[i] * scale : 0.0f;
    });
  }
  detail::record(out, [x, out, n, scale, keep] {
    float* dx = x.grad_acc().f32();
    const float* g = out.grad().f32();
    parallel_for(n, 1, [&](std::int64_t b, std::int64_t e) {
      for (std::int64_t i = b; i < e; ++i) dx[i] += keep[i] ? g[i] * scale : 0.0f;
    });
  });
  return out;
}

/// act(x W^T + b) in one pass (bias and slope may be undefined; slope is needed for prelu).
inline Var linear_act(const Var& x, const Var& weight, const Var& bias, ActKind act, const Var& slope = Var()) {
  const Tensor &X = x.value(), &W = weight.value();
  detail::check_cpu("linear_act", X, W);
  detail::check_f32("linear_act", X, "input");
  detail::check_f32("linear_act", W, "weight");
  RECHUB_CHECK_SHAPE(W.ndim() == 2 && X.ndim() >= 1 && X.dim(-1) == W.dim(1), "linear_act: input ", X.shape().str(),
                     " does not match weight ", W.shape().str(), " (expects last dim ", W.ndim() == 2 ? W.dim(1) : -1,
                     ")");
  const std::int64_t rows = X.rows(), in = W.dim(1), outd = W.dim(0);
  if (bias.defined())
    RECHUB_CHECK_SHAPE(bias.value().numel() == outd, "linear_act: bias ", bias.shape().str(), " for ", outd,
                       " outputs");
  Shape ys = X.shape();
  ys[-1] = outd;
  const bool use_slope = act == ActKind::prelu;
  if (use_slope) detail::check_slope("linear_act", ys, slope, "slope");
  const Var sl = use_slope ? slope : Var();
  Var out = detail::make_output_opt("linear_act", ys, x, weight, bias, sl);
  const std::int64_t na = use_slope ? sl.value().numel() : 0;
  float* Y = out.value().f32();
  // prelu keeps the pre-activation (its slope gradient needs z; y cannot give z back when the
  // slope is 0) and the slope per column; the other kinds recover act' from y alone.
  float* Z = use_slope ? step_arena().tensor({rows, outd}).f32() : nullptr;
  float* S = use_slope ? step_arena().tensor({outd}).f32() : nullptr;
  if (use_slope)
    for (std::int64_t j = 0; j < outd; ++j) S[j] = sl.value().f32()[na == 1 ? 0 : j];
  detail::gemm_bias(false, true, rows, outd, in, 1.0f, X.f32(), in, W.f32(), in,
                    bias.defined() ? bias.value().f32() : nullptr, Y, outd);
  detail::dispatch_act(act, [&](auto kind) {
    constexpr ActKind K = decltype(kind)::value;
    if constexpr (K != ActKind::none)
      parallel_for(rows, outd * detail::act_cost<K>(), [&](std::int64_t b, std::int64_t e) {
        detail::act_rows_forward<K>(Y + b * outd, Z ? Z + b * outd : nullptr, e - b, outd, S);
      });
  });
  detail::record(out, [x, weight, bias, sl, out, rows, in, outd, na, act, Z, S] {
    const float *dY = out.grad().f32(), *Y = out.value().f32();
    // G = dY act'(z), formed once for the three products; the column sums of G (bias) and of
    // dY z over z <= 0 (slope, per column) come from the same pass.
    float* G = step_arena().tensor({rows, outd}).f32();
    Tensor red = step_arena().zeros({2 * outd});
    detail::dispatch_act(act, [&](auto kind) {
      constexpr ActKind K = decltype(kind)::value;
      detail::reduce_rows(rows, 2 * outd, 3 * outd * detail::act_cost<K>(), red.f32(),
                          [&](std::int64_t r0, std::int64_t r1, float* acc) {
                            const std::int64_t o = r0 * outd;
                            detail::act_rows_backward<K>(dY + o, Y + o, Z ? Z + o : Y + o, G + o, r1 - r0, outd, S, acc,
                                                         acc + outd);
                          });
    });
    if (x.requires_grad())
      detail::gemm(false, false, rows, in, outd, 1.0f, G, outd, weight.value().f32(), in, 1.0f, x.grad_acc().f32(), in);
    if (weight.requires_grad())
      detail::gemm(true, false, outd, in, rows, 1.0f, G, outd, x.value().f32(), in, 1.0f, weight.grad_acc().f32(), in);
    if (detail::needs_grad(bias)) {
      float* db = bias.grad_acc().f32();
      for (std::int64_t j = 0; j < outd; ++j) db[j] += red.f32()[j];
    }
    if (detail::needs_grad(sl)) {
      float* da = sl.grad_acc().f32();
      const float* ra = red.f32() + outd;
      if (na == 1) {
        float s = 0.0f;
        for (std::int64_t j = 0; j < outd; ++j) s += ra[j];
        da[0] += s;
      } else {
        for (std::int64_t j = 0; j < outd; ++j) da[j] += ra[j];
      }
    }
  });
  return out;
}

}  // namespace rechub
