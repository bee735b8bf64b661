#pragma once
// Elementwise ops.
//
//   Binary, numpy broadcasting over up to 4 dims: shapes are right-aligned and a dim of size 1
//   (or a missing leading dim) stretches to the other operand's size; out = broadcast(a, b).
//     add: out = a + b   da += g          db += g
//     sub: out = a - b   da += g          db -= g
//     mul: out = a * b   da += g * b      db += g * a
//     div: out = a / b   da += g / b      db -= g * out / b      (b != 0)
//   where g = d(out) and each operand's gradient is summed over the dims it was broadcast along
//   (b [D] added to a [B, D] receives the column sums of g).
//   Unary, y = f(x), dx += g * f'(x):
//     scale c*x, add_scalar x + c, neg -x, exp, square x^2,
//     log (x > 0: f' = 1/x), sqrt (x > 0: f' = 1 / (2 sqrt x), unbounded as x -> 0).
//
// Broadcasting is planned once per call: dims of size 1 are dropped and adjacent dims that are
// contiguous in both operands are merged, so the common cases collapse to one tight inner loop:
// equal shapes become one flat loop, [B, D] + [D] rows against one vector, [B, 1] * [B, D] rows
// against one scalar each. The inner loop is specialised on whether each operand advances.
#include <algorithm>
#include <cmath>
#include <cstdint>

#include "rechub/core/parallel.hpp"
#include "rechub/ops/dispatch.hpp"

namespace rechub {

namespace detail {

/// True when v is defined and needs a gradient (optional inputs such as an absent bias).
inline bool needs_grad(const Var& v) { return v.defined() && v.requires_grad(); }

/// make_output for ops whose extra inputs (gamma, beta, bias) may be undefined Vars.
template <class... Vars>
Var make_output_opt(const char* op, const Shape& shape, const Var& x, const Vars&... optional) {
  Var out = make_output(op, shape, DType::f32, x);
  out.node()->requires_grad = grad_enabled() && (x.requires_grad() || ... || needs_grad(optional));
  return out;
}

/// A zero-copy view of x with a new shape (same numel); the gradient flows back unchanged.
inline Var view(const Var& x, const Shape& s) {
  Node* n = tape().new_node();
  n->value = x.value().reshape(s);
  n->op = "view";
  n->requires_grad = grad_enabled() && x.requires_grad();
  Var out(n);
  const std::int64_t numel = s.numel();
  record(out, [x, out, numel] {
    float* dx = x.grad_acc().f32();
    const float* g = out.grad().f32();
    parallel_for(numel, 1, [&](std::int64_t b, std::int64_t e) {
      for (std::int64_t i = b; i < e; ++i) dx[i] += g[i];
    });
  });
  return out;
}

/// Reductions over rows use this many fixed row chunks (not one per thread), so the partial
/// sums, and therefore the results, are bit-identical for any thread count.
constexpr std::int64_t kReduceChunks = 16;

/// Runs fn(r0, r1, acc) over fixed chunks of [0, rows), each accumulating into its own zeroed
/// `width`-float partial; the partials are then added to dst in chunk order. fn may write other
/// per-row outputs (dx) in the same pass.
template <class Fn>
void reduce_rows(std::int64_t rows, std::int64_t width, std::int64_t cost_per_row, float* dst, Fn&& fn) {
  if (rows <= 0) return;
  const std::int64_t nc = std::min(rows, kReduceChunks);
  float* part = step_arena().zeros({nc, width}).f32();
  parallel_for(nc, cost_per_row * (rows / nc + 1), [&](std::int64_t b, std::int64_t e) {
    for (std::int64_t c = b; c < e; ++c) fn(rows * c / nc, rows * (c + 1) / nc, part + c * width);
  });
  for (std::int64_t c = 0; c < nc; ++c)
    for (std::int64_t j = 0; j < width; ++j) dst[j] += part[c * width + j];
}

/// The broadcast shape of a and b, or false when they do not broadcast.
inline bool broadcast_shape(const Shape& a, const Shape& b, Shape& out) {
  const int nd = std::max(a.ndim(), b.ndim());
  out = Shape();
  for (int i = 0; i < nd; ++i) {
    const int ia = i - (nd - a.ndim()), ib = i - (nd - b.ndim());
    const std::int64_t da = ia >= 0 ? a[ia] : 1, db = ib >= 0 ? b[ib] : 1;
    if (da != db && da != 1 && db != 1) return false;
    out.push(da == 1 ? db : da);
  }
  return true;
}

/// The loop nest of a broadcast: collapsed dims with each operand's element strides (0 where
/// it is broadcast). The innermost stride of an operand is always 0 or 1.
struct Broadcast {
  int nd = 0;
  std::int64_t d[4] = {1, 1, 1, 1};
  std::int64_t sa[4] = {0, 0, 0, 0}, sb[4] = {0, 0, 0, 0};
  std::int64_t n = 0;
  std::int64_t inner() const { return d[nd - 1]; }
  bool a_inner() const { return sa[nd - 1] != 0; }
  bool b_inner() const { return sb[nd - 1] != 0; }
  /// Threads of for_each_run never write the same element of a (b): every dim split across
  /// threads advances it. That is the flat range when everything collapsed into one dim, the
  /// outer rows otherwise.
  bool a_parallel_safe() const { return parallel_safe(sa); }
  bool b_parallel_safe() const { return parallel_safe(sb); }
  bool parallel_safe(const std::int64_t* s) const {
    if (nd == 1) return s[0] != 0;
    for (int k = 0; k + 1 < nd; ++k)
      if (s[k] == 0) return false;
    return true;
  }
};

inline Broadcast plan_broadcast(const Shape& a, const Shape& b, const Shape& out) {
  const int nd = out.ndim();
  std::int64_t d[4], sa[4], sb[4];
  std::int64_t ra = 1, rb = 1;  // running contiguous strides of a and b
  for (int i = nd - 1; i >= 0; --i) {
    const int ia = i - (nd - a.ndim()), ib = i - (nd - b.ndim());
    const std::int64_t da = ia >= 0 ? a[ia] : 1, db = ib >= 0 ? b[ib] : 1;
    d[i] = out[i];
    sa[i] = (da == 1) ? 0 : ra;
    sb[i] = (db == 1) ? 0 : rb;
    ra *= da;
    rb *= db;
  }
  Broadcast p;
  p.n = out.numel();
  for (int i = 0; i < nd; ++i) {
    if (d[i] == 1) continue;  // a size-1 dim does not move any index
    if (p.nd > 0) {
      const int k = p.nd - 1;  // merge into the previous kept dim when both operands stay contiguous
      if (p.sa[k] == sa[i] * d[i] && p.sb[k] == sb[i] * d[i]) {
        p.d[k] *= d[i];
        p.sa[k] = sa[i];
        p.sb[k] = sb[i];
        continue;
      }
    }
    p.d[p.nd] = d[i];
    p.sa[p.nd] = sa[i];
    p.sb[p.nd] = sb[i];
    ++p.nd;
  }
  if (p.nd == 0) {  // every dim is 1: a single element
    p.nd = 1;
    p.d[0] = 1;
    p.sa[0] = p.sb[0] = 1;
  }
  return p;
}

/// Calls f(o, ia, ib, len) for every contiguous run of the innermost dim: out[o + j] pairs with
/// a[ia + j * a_inner] and b[ib + j * b_inner]. Parallel over rows (or over the flat range when
/// everything collapsed into one dim).
template <class F>
void for_each_run(const Broadcast& p, bool parallel, std::int64_t cost, F&& f) {
  if (p.n == 0) return;
  const int last = p.nd - 1;
  const std::int64_t inner = p.d[last];
  if (p.nd == 1) {
    auto body = [&](std::int64_t b, std::int64_t e) { f(b, b * p.sa[0], b * p.sb[0], e - b); };
    if (parallel) parallel_for(inner, cost, body);
    else body(0, inner);
    return;
  }
  const std::int64_t outer = p.n / inner;
  auto body = [&](std::int64_t b, std::int64_t e) {
    for (std::int64_t q = b; q < e; ++q) {
      std::int64_t rem = q, ia = 0, ib = 0;
      for (int k = last - 1; k >= 0; --k) {
        const std::int64_t i = rem % p.d[k];
        rem /= p.d[k];
        ia += i * p.sa[k];
        ib += i * p.sb[k];
      }
      f(q * inner, ia, ib, inner);
    }
  };
  if (parallel) parallel_for(outer, inner * cost, body);
  else body(0, outer);
}

/// g(j, ja, jb) for j in [0, n), with ja (jb) = j or 0 fixed at compile time so loops vectorise.
template <class G>
inline void run_inner(std::int64_t n, bool a_moves, bool b_moves, G&& g) {
  if (a_moves && b_moves)
    for (std::int64_t j = 0; j < n; ++j) g(j, j, j);
  else if (a_moves)
    for (std::int64_t j = 0; j < n; ++j) g(j, j, std::int64_t(0));
  else if (b_moves)
    for (std::int64_t j = 0; j < n; ++j) g(j, std::int64_t(0), j);
  else
    for (std::int64_t j = 0; j < n; ++j) g(j, std::int64_t(0), std::int64_t(0));
}

// The four binary ops: value and the local gradients (g = d out, y = out).
struct AddOp {
  static constexpr const char* name = "add";
  static float f(float a, float b) { return a + b; }
  static float ga(float g, float, float, float) { return g; }
  static float gb(float g, float, float, float) { return g; }
};
struct SubOp {
  static constexpr const char* name = "sub";
  static float f(float a, float b) { return a - b; }
  static float ga(float g, float, float, float) { return g; }
  static float gb(float g, float, float, float) { return -g; }
};
struct MulOp {
  static constexpr const char* name = "mul";
  static float f(float a, float b) { return a * b; }
  static float ga(float g, float, float b, float) { return g * b; }
  static float gb(float g, float a, float, float) { return g * a; }
};
struct DivOp {
  static constexpr const char* name = "div";
  static float f(float a, float b) { return a / b; }
  static float ga(float g, float, float b, float) { return g / b; }
  static float gb(float g, float, float b, float y) { return -g * y / b; }
};

template <class Op>
Var binary(const Var& a, const Var& b) {
  const Tensor &A = a.value(), &B = b.value();
  check_cpu(Op::name, A, B);
  check_f32(Op::name, A, "a");
  check_f32(Op::name, B, "b");
  Shape os;
  RECHUB_CHECK_SHAPE(broadcast_shape(A.shape(), B.shape(), os), Op::name, ": shapes ", A.shape().str(), " and ",
                     B.shape().str(), " do not broadcast");
  Var out = make_output(Op::name, os, DType::f32, a, b);
  const Broadcast p = plan_broadcast(A.shape(), B.shape(), os);
  {
    float* y = out.value().f32();
    const float *pa = A.f32(), *pb = B.f32();
    for_each_run(p, true, 1, [&](std::int64_t o, std::int64_t ia, std::int64_t ib, std::int64_t len) {
      float* yo = y + o;
      const float *ao = pa + ia, *bo = pb + ib;
      run_inner(len, p.a_inner(), p.b_inner(),
                [&](std::int64_t j, std::int64_t ja, std::int64_t jb) { yo[j] = Op::f(ao[ja], bo[jb]); });
    });
  }
  record(out, [a, b, out, p] {
    const float *g = out.grad().f32(), *y = out.value().f32(), *pa = a.value().f32(), *pb = b.value().f32();
    if (a.requires_grad()) {
      float* da = a.grad_acc().f32();
      for_each_run(p, p.a_parallel_safe(), 2, [&](std::int64_t o, std::int64_t ia, std::int64_t ib, std::int64_t len) {
        run_inner(len, p.a_inner(), p.b_inner(), [&](std::int64_t j, std::int64_t ja, std::int64_t jb) {
          da[ia + ja] += Op::ga(g[o + j], pa[ia + ja], pb[ib + jb], y[o + j]);
        });
      });
    }
    if (b.requires_grad()) {
      float* db = b.grad_acc().f32();
      for_each_run(p, p.b_parallel_safe(), 2, [&](std::int64_t o, std::int64_t ia, std::int64_t ib, std::int64_t len) {
        run_inner(len, p.a_inner(), p.b_inner(), [&](std::int64_t j, std::int64_t ja, std::int64_t jb) {
          db[ib + jb] += Op::gb(g[o + j], pa[ia + ja], pb[ib + jb], y[o + j]);
        });
      });
    }
  });
  return out;
}

/// y = f(x) elementwise with dx += dg(g, x, y) = g f'(x) (taking g lets a kink be a select, not a
/// multiply by a 0/1 factor, which GCC turns into a branch); `cost` is the rough scalar work per element.
template <class F, class DG>
Var map_unary(const char* op, const Var& x, std::int64_t cost, F f, DG dg) {
  const Tensor& X = x.value();
  check_cpu(op, X);
  check_f32(op, X, "input");
  Var out = make_output(op, X.shape(), DType::f32, x);
  const std::int64_t n = X.numel();
  {
    const float* px = X.f32();
    float* py = out.value().f32();
    parallel_for(n, cost, [&](std::int64_t b, std::int64_t e) {
      for (std::int64_t i = b; i < e; ++i) py[i] = f(px[i]);
    });
  }
  record(out, [x, out, n, cost, dg] {
    float* dx = x.grad_acc().f32();
    const float *g = out.grad().f32(), *px = x.value().f32(), *py = out.value().f32();
    parallel_for(n, cost, [&](std::int64_t b, std::int64_t e) {
      for (std::int64_t i = b; i < e; ++i) dx[i] += dg(g[i], px[i], py[i]);
    });
  });
  return out;
}

}  // namespace detail

/// a + b with numpy broadcasting.
inline Var add(const Var& a, const Var& b) { return detail::binary<detail::AddOp>(a, b); }
/// a - b with numpy broadcasting.
inline Var sub(const Var& a, const Var& b) { return detail::binary<detail::SubOp>(a, b); }
/// a * b with numpy broadcasting.
inline Var mul(const Var& a, const Var& b) { return detail::binary<detail::MulOp>(a, b); }
/// a / b with numpy broadcasting (b must not be 0).
inline Var div(const Var& a, const Var& b) { return detail::binary<detail::DivOp>(a, b); }

/// c * x.
inline Var scale(const Var& x, float c) {
  return detail::map_unary(
      "scale", x, 1, [c](float v) { return c * v; }, [c](float g, float, float) { return g * c; });
}
/// x + c.
inline Var add_scalar(const Var& x, float c) {
  return detail::map_unary(
      "add_scalar", x, 1, [c](float v) { return v + c; }, [](float g, float, float) { return g; });
}
/// -x.
inline Var neg(const Var& x) {
  return detail::map_unary(
      "neg", x, 1, [](float v) { return -v; }, [](float g, float, float) { return -g; });
}
/// e^x.
inline Var exp(const Var& x) {
  return detail::map_unary(
      "exp", x, 16, [](float v) { return std::exp(v); }, [](float g, float, float y) { return g * y; });
}
/// Natural log; defined for x > 0 (x = 0 gives -inf and an infinite gradient).
inline Var log(const Var& x) {
  return detail::map_unary(
      "log", x, 16, [](float v) { return std::log(v); }, [](float g, float v, float) { return g / v; });
}
/// x^2.
inline Var square(const Var& x) {
  return detail::map_unary(
      "square", x, 1, [](float v) { return v * v; }, [](float g, float v, float) { return 2.0f * v * g; });
}
/// Square root; smooth for x > 0 only (the gradient 1/(2 sqrt x) is infinite at 0).
inline Var sqrt(const Var& x) {
  return detail::map_unary(
      "sqrt", x, 8, [](float v) { return std::sqrt(v); }, [](float g, float, float y) { return 0.5f * g / y; });
}

inline Var operator+(const Var& a, const Var& b) { return add(a, b); }
inline Var operator-(const Var& a, const Var& b) { return sub(a, b); }
inline Var operator*(const Var& a, const Var& b) { return mul(a, b); }
inline Var operator/(const Var& a, const Var& b) { return div(a, b); }
inline Var operator-(const Var& x) { return neg(x); }
inline Var operator*(const Var& x, float c) { return scale(x, c); }
inline Var operator*(float c, const Var& x) { return scale(x, c); }
inline Var operator/(const Var& x, float c) { return scale(x, 1.0f / c); }
inline Var operator+(const Var& x, float c) { return add_scalar(x, c); }
inline Var operator+(float c, const Var& x) { return add_scalar(x, c); }
inline Var operator-(const Var& x, float c) { return add_scalar(x, -c); }
inline Var operator-(float c, const Var& x) { return add_scalar(neg(x), c); }

}  // namespace rechub
