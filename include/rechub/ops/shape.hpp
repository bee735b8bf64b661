#pragma once
// Shape ops: views, transposes, concatenation, slicing, repetition.
//
//   reshape(x, s)           y = x viewed as s (same storage, same numel);   dx += dy viewed as x.
//   unsqueeze(x, d)         reshape inserting a size-1 dim at d.
//   transpose(x, d0, d1)    y[.., j, .., i, ..] = x[.., i, .., j, ..] (materialised);  dx += dy transposed back.
//   concat({x_0..x_n}, d)   y = [x_0 | x_1 | ...] along d (other dims equal);  dx_i += dy's block i.
//   slice(x, d, b, e)       y = x[.., b:e, ..] along d;                      dx[.., b:e, ..] += dy.
//   select(x, d, i)         y = x[.., i, ..] dropping d;                    dx[.., i, ..] += dy.
//   expand(x, d, K)         y = x repeated K times along a NEW dim d: [B, D] -> [B, K, D] (d = 1);
//                           dx += sum over the K copies of dy.
//   repeat_rows(x, K)       [N, ...] -> [N*K, ...], row i at rows i*K .. i*K+K-1 (expand + reshape).
//   stack({x_0..x_n}, d)    unsqueeze each at d, then concat.
// A 0-d result (select of a 1-d tensor) is returned as shape [1], like sum() in reduce.hpp.
// Gradients accumulate (+=) into inputs, like every gradient in rechub.
#include <array>
#include <cstdint>
#include <cstring>
#include <initializer_list>

#include "rechub/ops/dispatch.hpp"

namespace rechub {

namespace detail {
/// Normalises a possibly negative dim against `ndim` dims (valid range [0, ndim)).
inline int norm_dim(const char* op, int dim, int ndim, const Shape& s) {
  const int d = dim < 0 ? dim + ndim : dim;
  RECHUB_CHECK_SHAPE(d >= 0 && d < ndim, op, ": dim ", dim, " out of range for ", s.str());
  return d;
}
/// outer = prod(s[:d]), inner = prod(s[d+1:]).
inline void outer_inner(const Shape& s, int d, std::int64_t& outer, std::int64_t& inner) {
  outer = 1;
  inner = 1;
  for (int i = 0; i < d; ++i) outer *= s[i];
  for (int i = d + 1; i < s.ndim(); ++i) inner *= s[i];
}
/// A node whose value is a view of x's storage; its backward adds its gradient to x's
/// elementwise (views never reorder elements).
inline Var make_view(const char* op, const Var& x, const Tensor& view) {
  Node* n = tape().new_node();
  n->value = view;
  n->op = op;
  n->requires_grad = grad_enabled() && x.requires_grad();
  Var out(n);
  record(out, [x, out] {
    float* dx = x.grad_acc().f32();
    const float* dy = out.grad().f32();
    const std::int64_t N = out.value().numel();
    for (std::int64_t i = 0; i < N; ++i) dx[i] += dy[i];
  });
  return out;
}
}  // namespace detail

/// x viewed with a new shape (no copy: the output shares x's storage).
inline Var reshape(const Var& x, const Shape& s) {
  detail::check_cpu("reshape", x.value());
  detail::check_f32("reshape", x.value(), "input");
  RECHUB_CHECK_SHAPE(s.numel() == x.value().numel(), "reshape: cannot view ", x.shape().str(), " as ", s.str());
  return detail::make_view("reshape", x, x.value().reshape(s));
}

/// x with a size-1 dim inserted at `dim` (a view; dim in [-ndim-1, ndim]).
inline Var unsqueeze(const Var& x, int dim) {
  const Shape& xs = x.shape();
  const int nd = xs.ndim();
  const int d = dim < 0 ? dim + nd + 1 : dim;
  RECHUB_CHECK_SHAPE(d >= 0 && d <= nd && nd < Shape::kMaxDims, "unsqueeze: dim ", dim, " out of range for ", xs.str());
  Shape s;
  for (int i = 0; i < nd; ++i) {
    if (i == d) s.push(1);
    s.push(xs[i]);
  }
  if (d == nd) s.push(1);
  return reshape(x, s);
}

namespace detail {
// Walks y (x with dims a, b swapped, both padded to 4-d) and calls f(y_offset, x_offset).
template <class F>
void transpose_walk(const Shape& xs, int a, int b, F&& f) {
  std::int64_t xd[4] = {1, 1, 1, 1}, xstr[4];
  const int pad = 4 - xs.ndim();
  for (int i = 0; i < xs.ndim(); ++i) xd[pad + i] = xs[i];
  xstr[3] = 1;
  for (int i = 2; i >= 0; --i) xstr[i] = xstr[i + 1] * xd[i + 1];
  std::int64_t yd[4] = {xd[0], xd[1], xd[2], xd[3]}, ystr[4] = {xstr[0], xstr[1], xstr[2], xstr[3]};
  a += pad;
  b += pad;
  std::swap(yd[a], yd[b]);
  std::swap(ystr[a], ystr[b]);  // ystr[k] = x stride of y's dim k
  const std::int64_t per0 = yd[1] * yd[2] * yd[3];
  parallel_for(yd[0], per0, [&](std::int64_t s, std::int64_t e) {
    for (std::int64_t i0 = s; i0 < e; ++i0) {
      std::int64_t yo = i0 * per0;
      for (std::int64_t i1 = 0; i1 < yd[1]; ++i1)
        for (std::int64_t i2 = 0; i2 < yd[2]; ++i2) {
          const std::int64_t xo = i0 * ystr[0] + i1 * ystr[1] + i2 * ystr[2];
          for (std::int64_t i3 = 0; i3 < yd[3]; ++i3, ++yo) f(yo, xo + i3 * ystr[3]);
        }
    }
  });
}
}  // namespace detail

/// Swaps dims d0 and d1 (materialised copy).
inline Var transpose(const Var& x, int d0, int d1) {
  const Tensor& X = x.value();
  detail::check_cpu("transpose", X);
  detail::check_f32("transpose", X, "input");
  const int a = detail::norm_dim("transpose", d0, X.ndim(), X.shape());
  const int b = detail::norm_dim("transpose", d1, X.ndim(), X.shape());
  Shape ys = X.shape();
  std::swap(ys[a], ys[b]);
  Var out = detail::make_output("transpose", ys, DType::f32, x);
  float* Y = out.value().f32();
  const float* px = X.f32();
  detail::transpose_walk(X.shape(), a, b, [&](std::int64_t yo, std::int64_t xo) { Y[yo] = px[xo]; });
  detail::record(out, [x, out, a, b] {
    float* dx = x.grad_acc().f32();
    const float* dy = out.grad().f32();
    // Each x element has exactly one y element, so the parallel walk writes disjoint dx entries.
    detail::transpose_walk(x.shape(), a, b, [&](std::int64_t yo, std::int64_t xo) { dx[xo] += dy[yo]; });
  });
  return out;
}

/// Inputs per concat node; more inputs are concatenated in a tree of concat nodes.
constexpr int kConcatMaxInputs = 8;

/// Concatenates n inputs along `dim`; all other dims must agree.
inline Var concat(const Var* xs, int n, int dim) {
  RECHUB_CHECK_SHAPE(n >= 1, "concat: no inputs");
  if (n == 1) return xs[0];
  if (n > kConcatMaxInputs) {
    // Split into kConcatMaxInputs contiguous groups, concat each, then concat the groups.
    std::array<Var, kConcatMaxInputs> parts;
    for (int g = 0; g < kConcatMaxInputs; ++g) {
      const int b = n * g / kConcatMaxInputs, e = n * (g + 1) / kConcatMaxInputs;
      parts[static_cast<std::size_t>(g)] = concat(xs + b, e - b, dim);
    }
    return concat(parts.data(), kConcatMaxInputs, dim);
  }
  const Shape& s0 = xs[0].shape();
  const int d = detail::norm_dim("concat", dim, s0.ndim(), s0);
  std::array<Var, kConcatMaxInputs> in;
  std::int64_t total = 0;
  bool any_grad = false;
  for (int i = 0; i < n; ++i) {
    const Tensor& X = xs[i].value();
    detail::check_cpu("concat", X);
    detail::check_f32("concat", X, "input");
    bool ok = X.ndim() == s0.ndim();
    for (int k = 0; ok && k < s0.ndim(); ++k) ok = k == d || X.dim(k) == s0[k];
    RECHUB_CHECK_SHAPE(ok, "concat: input ", i, " has shape ", X.shape().str(), ", input 0 has ", s0.str(),
                       " (only dim ", d, " may differ)");
    total += X.dim(d);
    in[static_cast<std::size_t>(i)] = xs[i];
    any_grad = any_grad || xs[i].requires_grad();
  }
  Shape ys = s0;
  ys[d] = total;
  // make_output takes a fixed parameter pack; with a runtime count we build the node here.
  Node* node = tape().new_node();
  node->value = step_arena().tensor(ys, DType::f32);
  node->op = "concat";
  node->requires_grad = grad_enabled() && any_grad;
  Var out(node);
  std::int64_t outer, inner;
  detail::outer_inner(ys, d, outer, inner);
  const std::int64_t yrow = total * inner;
  float* Y = out.value().f32();
  parallel_for(outer, yrow, [&](std::int64_t s, std::int64_t e) {
    for (std::int64_t o = s; o < e; ++o) {
      std::int64_t off = 0;
      for (int i = 0; i < n; ++i) {
        const std::int64_t w = in[static_cast<std::size_t>(i)].value().dim(d) * inner;
        std::memcpy(Y + o * yrow + off, in[static_cast<std::size_t>(i)].value().f32() + o * w,
                    static_cast<std::size_t>(w) * sizeof(float));
        off += w;
      }
    }
  });
  detail::record(out, [in, out, n, d, outer, inner] {
    const std::int64_t yrow = out.value().dim(d) * inner;
    const float* dy = out.grad().f32();
    std::int64_t off = 0;
    for (int i = 0; i < n; ++i) {
      const Var& x = in[static_cast<std::size_t>(i)];
      const std::int64_t w = x.value().dim(d) * inner;
      if (x.requires_grad()) {
        float* dx = x.grad_acc().f32();
        parallel_for(outer, w, [&](std::int64_t s, std::int64_t e) {
          for (std::int64_t o = s; o < e; ++o)
            for (std::int64_t j = 0; j < w; ++j) dx[o * w + j] += dy[o * yrow + off + j];
        });
      }
      off += w;
    }
  });
  return out;
}

/// Concatenates the listed inputs along `dim`.
inline Var concat(std::initializer_list<Var> xs, int dim) {
  return concat(xs.begin(), static_cast<int>(xs.size()), dim);
}

/// Stacks n equally shaped inputs along a new dim `dim`.
inline Var stack(const Var* xs, int n, int dim) {
  constexpr int kMax = 64;
  RECHUB_CHECK_SHAPE(n >= 1 && n <= kMax, "stack: ", n, " inputs, supported 1 to ", kMax);
  std::array<Var, kMax> u;
  for (int i = 0; i < n; ++i) u[static_cast<std::size_t>(i)] = unsqueeze(xs[i], dim);
  const int nd = u[0].ndim();
  return concat(u.data(), n, dim < 0 ? dim + nd : dim);
}
inline Var stack(std::initializer_list<Var> xs, int dim) { return stack(xs.begin(), static_cast<int>(xs.size()), dim); }

namespace detail {
// y = x[.., begin:end, ..] along d; drop_dim removes d from the output shape (select).
inline Var slice_impl(const char* op, const Var& x, int dim, std::int64_t begin, std::int64_t end, bool drop_dim) {
  const Tensor& X = x.value();
  check_cpu(op, X);
  check_f32(op, X, "input");
  const int d = norm_dim(op, dim, X.ndim(), X.shape());
  const std::int64_t len = X.dim(d);
  if (drop_dim)
    RECHUB_CHECK_SHAPE(0 <= begin && begin < len, op, ": index ", begin, " out of range for dim ", d, " of ",
                       X.shape().str());
  else
    RECHUB_CHECK_SHAPE(0 <= begin && begin <= end && end <= len, op, ": [", begin, ", ", end, ") out of range for dim ",
                       d, " of ", X.shape().str());
  Shape ys;
  for (int k = 0; k < X.ndim(); ++k) {
    if (k != d) ys.push(X.dim(k));
    else if (!drop_dim) ys.push(end - begin);
  }
  if (ys.ndim() == 0) ys.push(1);
  Var out = make_output(op, ys, DType::f32, x);
  std::int64_t outer, inner;
  outer_inner(X.shape(), d, outer, inner);
  const std::int64_t w = (end - begin) * inner, xrow = len * inner, off = begin * inner;
  float* Y = out.value().f32();
  const float* px = X.f32();
  parallel_for(outer, w, [&](std::int64_t s, std::int64_t e) {
    for (std::int64_t o = s; o < e; ++o)
      std::memcpy(Y + o * w, px + o * xrow + off, static_cast<std::size_t>(w) * sizeof(float));
  });
  record(out, [x, out, outer, w, xrow, off] {
    float* dx = x.grad_acc().f32();
    const float* dy = out.grad().f32();
    parallel_for(outer, w, [&](std::int64_t s, std::int64_t e) {
      for (std::int64_t o = s; o < e; ++o)
        for (std::int64_t j = 0; j < w; ++j) dx[o * xrow + off + j] += dy[o * w + j];
    });
  });
  return out;
}
}  // namespace detail

/// Elements [begin, end) of dim `dim` (materialised).
inline Var slice(const Var& x, int dim, std::int64_t begin, std::int64_t end) {
  return detail::slice_impl("slice", x, dim, begin, end, false);
}

/// Element `index` of dim `dim`, dropping that dim.
inline Var select(const Var& x, int dim, std::int64_t index) {
  return detail::slice_impl("select", x, dim, index, index + 1, true);
}

/// x repeated k times along a new dim inserted at `dim`: [B, D] -> [B, K, D] for dim = 1.
inline Var expand(const Var& x, int dim, std::int64_t k) {
  const Tensor& X = x.value();
  detail::check_cpu("expand", X);
  detail::check_f32("expand", X, "input");
  const int nd = X.ndim();
  const int d = dim < 0 ? dim + nd + 1 : dim;
  RECHUB_CHECK_SHAPE(d >= 0 && d <= nd && nd < Shape::kMaxDims, "expand: dim ", dim, " out of range for ",
                     X.shape().str());
  RECHUB_CHECK_SHAPE(k >= 1, "expand: repeat count ", k, " must be positive");
  Shape ys;
  std::int64_t outer = 1, inner = 1;
  for (int i = 0; i < nd; ++i) {
    if (i == d) ys.push(k);
    ys.push(X.dim(i));
    (i < d ? outer : inner) *= X.dim(i);
  }
  if (d == nd) ys.push(k);
  Var out = detail::make_output("expand", ys, DType::f32, x);
  float* Y = out.value().f32();
  const float* px = X.f32();
  parallel_for(outer, k * inner, [&](std::int64_t s, std::int64_t e) {
    for (std::int64_t o = s; o < e; ++o)
      for (std::int64_t r = 0; r < k; ++r)
        std::memcpy(Y + (o * k + r) * inner, px + o * inner, static_cast<std::size_t>(inner) * sizeof(float));
  });
  detail::record(out, [x, out, outer, inner, k] {
    float* dx = x.grad_acc().f32();
    const float* dy = out.grad().f32();
    parallel_for(outer, k * inner, [&](std::int64_t s, std::int64_t e) {
      for (std::int64_t o = s; o < e; ++o)
        for (std::int64_t r = 0; r < k; ++r)
          for (std::int64_t j = 0; j < inner; ++j) dx[o * inner + j] += dy[(o * k + r) * inner + j];
    });
  });
  return out;
}

/// [N, ...] -> [N*k, ...]: every row repeated k times in place (row i fills rows i*k .. i*k+k-1).
inline Var repeat_rows(const Var& x, std::int64_t k) {
  RECHUB_CHECK_SHAPE(x.ndim() >= 1, "repeat_rows: input ", x.shape().str(), " has no rows");
  Shape s = x.shape();
  s[0] *= k;
  return reshape(expand(x, 1, k), s);
}

}  // namespace rechub
