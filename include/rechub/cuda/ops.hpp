#pragma once
// rechub::cuda Var-level ops: the tape-aware device versions of the CPU ops the kernels cover.
// Each computes its output on the device with the launchers of cuda.hpp and records a backward
// closure that calls the matching backward launcher. Plain C++ (no CUDA headers); link
// rechub::cuda. kernels/dispatch.cpp registers these functions as the CPU ops' device hooks
// (rechub/cuda/hooks.hpp).
//
// How a step stays on the device without any change to the tape:
//   * outputs, gradients and saved state are device tensors from the caching allocator; saved
//     state rides on an extra tape node, so end_step() releases everything with the tape;
//   * an op allocates the device gradient of an input on first use (Var::grad_acc() is the
//     host path); parameters carry device gradients after cuda::to_device(Parameter&);
//   * loss_to_host(loss) is the one bridge: a host copy of the scalar loss whose backward copies
//     d(loss) = 1 back to the device, so rechub::backward(loss_to_host(l)) drives every device
//     closure. With the batch ids, that float is the step's only host <-> device traffic.
//   * cuda::adam_step(Adam&) updates device parameters with the fused kernel, keeping Adam's own
//     bookkeeping (step counts, options, state names for checkpoints).
//
// Ids and labels may be host or device tensors: host ids are validated (DataError, like the CPU
// op), mark touched rows for lazy Adam, and are copied to the device; device ids are trusted.
#include <cstdint>
#include <cstring>
#include <string>

#include "rechub/autograd/tape.hpp"
#include "rechub/cuda/cuda.hpp"
#include "rechub/loss/bce.hpp"
#include "rechub/loss/pairwise.hpp"
#include "rechub/nn/module.hpp"
#include "rechub/ops/activation.hpp"
#include "rechub/ops/elementwise.hpp"
#include "rechub/ops/index.hpp"
#include "rechub/ops/softmax.hpp"
#include "rechub/optim/adam.hpp"

namespace rechub::cuda {

namespace detail {
namespace rd = ::rechub::detail;

inline void check_dev(const char* op, const Tensor& t, const char* name) {
  RECHUB_CHECK_AS(CudaError, t.device() == Device::cuda, "cuda::", op, ": ", name, " ", t.shape().str(),
                  " is on the host (move it with cuda::to_device)");
}
/// A device output on the tape; it requires grad when grad mode is on and any defined input does.
template <class... Vars>
Var make_output(const char* op, const Shape& s, DType t, const Vars&... inputs) {
  Node* n = tape().new_node();
  n->value = cuda::empty(s, t);
  n->op = op;
  n->requires_grad = grad_enabled() && (false || ... || (inputs.defined() && inputs.requires_grad()));
  return Var(n);
}
/// Keeps a device tensor alive until end_step() (on a tape node of its own); returns its data.
inline void* keep(const Tensor& t) {
  Node* n = tape().new_node();
  n->value = t;
  n->op = "cuda_saved";
  return t.raw();
}
inline float* scratch(const Shape& s) { return static_cast<float*>(keep(cuda::empty(s))); }
/// The device gradient of v, zero-allocated on first use.
inline float* grad_of(const Var& v) {
  Node* n = v.node();
  if (!n->grad.defined()) n->grad = cuda::zeros(n->value.shape());
  RECHUB_CHECK_AS(CudaError, n->grad.device() == Device::cuda, "cuda: the gradient of a ", n->op, " ",
                  n->value.shape().str(), " is on the host; move parameters with cuda::to_device(Parameter&)");
  return n->grad.f32();
}
/// Gradient pointer of an input that needs one, else null (the launchers skip null outputs).
inline float* gptr(const Var& v) { return v.defined() && v.requires_grad() ? grad_of(v) : nullptr; }
inline const float* vptr(const Var& v) { return v.defined() ? v.value().f32() : nullptr; }
/// A tensor the op reads (labels, masks, log-Q) on the device for this step: host tensors are copied.
inline const void* device_input(const Tensor& t) { return t.device() == Device::cuda ? t.raw() : keep(cuda::to_device(t)); }
/// Ids on the device; host ids are validated against the table and, when `mark` is set, mark
/// the rows they touch (skip excluded) for lazy Adam.
inline const std::int32_t* device_ids(const char* op, const Tensor& ids, const Var& table, bool mark, std::int32_t skip) {
  rd::check_i32(op, ids, "ids");
  if (ids.device() == Device::cuda) return ids.i32();
  rd::check_ids(op, ids.i32(), ids.numel(), table.value());
  if (mark) rd::mark_rows(table, ids.i32(), ids.numel(), skip);
  return static_cast<const std::int32_t*>(keep(cuda::to_device(ids)));
}
inline BroadcastPlan to_plan(const rd::Broadcast& b) {
  BroadcastPlan p;
  p.nd = b.nd;
  for (int k = 0; k < 4; ++k) {
    p.d[k] = b.d[k];
    p.sa[k] = b.sa[k];
    p.sb[k] = b.sb[k];
  }
  return p;
}
inline Act to_act(ActKind k) { return static_cast<Act>(static_cast<int>(k)); }

inline Var binary(BinaryOp op, const char* name, const Var& a, const Var& b) {
  const Tensor &A = a.value(), &B = b.value();
  check_dev(name, A, "a");
  check_dev(name, B, "b");
  rd::check_f32(name, A, "a");
  rd::check_f32(name, B, "b");
  Shape os;
  RECHUB_CHECK_SHAPE(rd::broadcast_shape(A.shape(), B.shape(), os), name, ": shapes ", A.shape().str(), " and ",
                     B.shape().str(), " do not broadcast");
  Var out = make_output(name, os, DType::f32, a, b);
  const BroadcastPlan p = to_plan(rd::plan_broadcast(A.shape(), B.shape(), os));
  binary_forward(op, out.value().f32(), A.f32(), B.f32(), p);
  rd::record(out, [a, b, out, p, op] {
    binary_backward(op, gptr(a), gptr(b), out.grad().f32(), a.value().f32(), b.value().f32(), out.value().f32(), p);
  });
  return out;
}

inline Var activation(const char* name, ActKind k, const Var& x, const Var& slope) {
  const Tensor& X = x.value();
  check_dev(name, X, "input");
  rd::check_f32(name, X, "input");
  const std::int64_t C = X.ndim() == 0 ? 1 : X.dim(-1), rows = C ? X.numel() / C : 0;
  const bool pr = k == ActKind::prelu;
  std::int64_t na = 0;
  if (pr) {
    RECHUB_CHECK_SHAPE(slope.defined() && slope.value().ndim() == 1 &&
                           (slope.value().dim(0) == 1 || slope.value().dim(0) == C),
                       name, ": slope must be [1] or [", C, "] for input ", X.shape().str());
    check_dev(name, slope.value(), "slope");
    na = slope.value().numel();
  }
  const Var sl = pr ? slope : Var();
  Var out = make_output(name, X.shape(), DType::f32, x, sl);
  bias_act_forward(to_act(k), out.value().f32(), nullptr, X.f32(), nullptr, vptr(sl), na, rows, C);
  rd::record(out, [x, sl, out, k, na, rows, C] {
    bias_act_backward(to_act(k), gptr(x), nullptr, nullptr, gptr(sl), out.grad().f32(),
                      k == ActKind::prelu ? x.value().f32() : nullptr, out.value().f32(), vptr(sl), na, rows, C);
  });
  return out;
}

inline Var sum_impl(const char* name, const Var& x, float scale) {
  const Tensor& X = x.value();
  check_dev(name, X, "input");
  rd::check_f32(name, X, "input");
  Var out = make_output(name, Shape{1}, DType::f32, x);
  const std::int64_t n = X.numel();
  sum_all_forward(out.value().f32(), X.f32(), n, scale);
  rd::record(out, [x, out, n, scale] { sum_all_backward(grad_of(x), out.grad().f32(), n, scale); });
  return out;
}
inline Var sum_dim_impl(const char* name, const Var& x, int dim, bool keepdim, bool average) {
  const Tensor& X = x.value();
  check_dev(name, X, "input");
  rd::check_f32(name, X, "input");
  const int nd = X.ndim();
  const int d = dim < 0 ? dim + nd : dim;
  RECHUB_CHECK_SHAPE(d >= 0 && d < nd, name, ": dim ", dim, " out of range for ", X.shape().str());
  std::int64_t outer = 1, inner = 1;
  for (int i = 0; i < d; ++i) outer *= X.dim(i);
  for (int i = d + 1; i < nd; ++i) inner *= X.dim(i);
  const std::int64_t len = X.dim(d);
  RECHUB_CHECK_SHAPE(!average || len > 0, name, ": cannot average over empty dim ", d, " of ", X.shape().str());
  Shape ys;
  for (int i = 0; i < nd; ++i) {
    if (i != d) ys.push(X.dim(i));
    else if (keepdim) ys.push(1);
  }
  if (ys.ndim() == 0) ys.push(1);
  const float scale = average ? 1.0f / static_cast<float>(len) : 1.0f;
  Var out = make_output(name, ys, DType::f32, x);
  sum_dim_forward(out.value().f32(), X.f32(), outer, len, inner, scale);
  rd::record(out, [x, out, outer, len, inner, scale] {
    sum_dim_backward(grad_of(x), out.grad().f32(), outer, len, inner, scale);
  });
  return out;
}

template <bool Log>
Var softmax_impl(const char* name, const Var& x, const Tensor& mask) {
  const Tensor& X = x.value();
  check_dev(name, X, "input");
  rd::check_f32(name, X, "input");
  RECHUB_CHECK_SHAPE(X.ndim() >= 1, name, ": input must have at least 1 dim, got ", X.shape().str());
  const std::int64_t L = X.dim(-1), rows = L ? X.numel() / L : 0;
  MaskRows mr;
  const std::int32_t* pm = nullptr;
  if (mask.defined()) {
    // The CPU planner reads only shapes: plan on a data-less host view of the mask.
    const rd::MaskRows m = rd::plan_mask(name, Tensor::view_of(nullptr, X.shape(), DType::f32),
                                         Tensor::view_of(nullptr, mask.shape(), mask.dtype()));
    for (int k = 0; k < 3; ++k) {
      mr.e[k] = m.e[k];
      mr.s[k] = m.s[k];
    }
    pm = static_cast<const std::int32_t*>(device_input(mask));
  }
  Var out = make_output(name, X.shape(), DType::f32, x);
  softmax_forward(Log, out.value().f32(), X.f32(), pm, mr, rows, L);
  rd::record(out, [x, out, pm, mr, rows, L] {
    softmax_backward(Log, grad_of(x), out.grad().f32(), out.value().f32(), pm, mr, rows, L);
  });
  return out;
}
}  // namespace detail

// ---- parameters and optimiser ------------------------------------------------------------------

/// Moves a parameter's value to the device and gives it a zeroed device gradient.
inline void to_device(Parameter& p) {
  if (p.value().device() == Device::cuda) return;
  p.value() = cuda::to_device(p.value());
  p.grad() = cuda::zeros(p.shape());
}
/// Moves a parameter back to the host (value; the gradient is zeroed on the host).
inline void to_host(Parameter& p) {
  if (p.value().device() == Device::cpu) return;
  p.value() = cuda::to_host(p.value());
  p.grad() = Tensor::zeros(p.shape());
}
/// Every parameter and buffer (batchnorm running statistics) of a module.
inline void to_device(Module& m) {
  for (auto& kv : m.named_parameters()) cuda::to_device(*kv.second);
  for (auto& kv : m.named_buffers())
    if (kv.second->defined()) *kv.second = cuda::to_device(*kv.second);
}
inline void to_host(Module& m) {
  for (auto& kv : m.named_parameters()) cuda::to_host(*kv.second);
  for (auto& kv : m.named_buffers())
    if (kv.second->defined()) *kv.second = cuda::to_host(*kv.second);
}

/// Adam::step() for device parameters: the fused kernel, dense, or over the touched rows of a
/// lazy parameter (rows marked by the ops from host ids). Moves Adam's moments to the device on
/// first use; step counts stay on the host. After this, use cuda::adam_step / cuda::zero_grad
/// with this optimiser (its CPU step() would read device memory).
inline void adam_step(Adam& opt) {
  const AdamOptions& o = opt.options();
  for (std::size_t i = 0; i < opt.size(); ++i) {
    Parameter& p = opt.param(i);
    if (!p.requires_grad()) continue;
    detail::check_dev("adam_step", p.value(), "parameter");
    detail::check_dev("adam_step", p.grad(), "gradient");
    AdamState& st = opt.state(i);
    if (st.exp_avg.device() == Device::cpu) {
      st.exp_avg = cuda::to_device(st.exp_avg);
      st.exp_avg_sq = cuda::to_device(st.exp_avg_sq);
    }
    const std::int32_t t = ++st.step.i32()[0];
    const AdamScalars c = adam_scalars(o.lr, o.beta1, o.beta2, o.eps, o.weight_decay, t);
    float *w = p.value().f32(), *g = p.grad().f32(), *m = st.exp_avg.f32(), *v = st.exp_avg_sq.f32();
    if (const ::rechub::detail::RowSet* rs = p.touched_rows()) {
      const std::int64_t n = static_cast<std::int64_t>(rs->rows.size());
      if (n == 0) continue;
      const std::int64_t cols = p.numel() / p.value().dim(0);
      const Tensor rows = cuda::to_device(Tensor::from_vector({n}, rs->rows.data()));
      adam_step_rows(w, g, m, v, rows.i32(), n, cols, c);  // `rows` may be freed now: stream order
    } else {
      cuda::adam_step(w, g, m, v, p.numel(), c);
    }
  }
}
/// Adam::zero_grad() for device parameters (lazy parameters: whole gradient zeroed, rows cleared).
inline void zero_grad(Adam& opt) {
  for (std::size_t i = 0; i < opt.size(); ++i) {
    Parameter& p = opt.param(i);
    detail::check_dev("zero_grad", p.grad(), "gradient");
    cuda::zero(p.grad());
    if (::rechub::detail::RowSet* rs = p.touched_rows()) rs->clear();
  }
}

// ---- ops ---------------------------------------------------------------------------------------

/// a + b (numpy broadcasting) on the device.
inline Var add(const Var& a, const Var& b) { return detail::binary(BinaryOp::add, "add", a, b); }
inline Var sub(const Var& a, const Var& b) { return detail::binary(BinaryOp::sub, "sub", a, b); }
inline Var mul(const Var& a, const Var& b) { return detail::binary(BinaryOp::mul, "mul", a, b); }
inline Var div(const Var& a, const Var& b) { return detail::binary(BinaryOp::div, "div", a, b); }

/// c * x on the device.
inline Var scale(const Var& x, float c) {
  const Tensor& X = x.value();
  detail::check_dev("scale", X, "input");
  Var out = detail::make_output("scale", X.shape(), DType::f32, x);
  const std::int64_t n = X.numel();
  scale_forward(out.value().f32(), X.f32(), c, n);
  ::rechub::detail::record(out, [x, out, c, n] { axpy(detail::grad_of(x), c, out.grad().f32(), n); });
  return out;
}
/// A zero-copy view with a new shape (same numel); the gradient flows back unchanged.
inline Var reshape(const Var& x, const Shape& s) {
  detail::check_dev("reshape", x.value(), "input");
  Node* n = tape().new_node();
  n->value = x.value().reshape(s);
  n->op = "view";
  n->requires_grad = grad_enabled() && x.requires_grad();
  Var out(n);
  const std::int64_t numel = s.numel();
  ::rechub::detail::record(out, [x, out, numel] { axpy(detail::grad_of(x), 1.0f, out.grad().f32(), numel); });
  return out;
}

inline Var relu(const Var& x) { return detail::activation("relu", ActKind::relu, x, Var()); }
inline Var sigmoid(const Var& x) { return detail::activation("sigmoid", ActKind::sigmoid, x, Var()); }
inline Var tanh(const Var& x) { return detail::activation("tanh", ActKind::tanh, x, Var()); }
inline Var prelu(const Var& x, const Var& slope) { return detail::activation("prelu", ActKind::prelu, x, slope); }

/// act(x W^T + b) (bias and slope may be undefined; slope is prelu's [1] or [out]).
inline Var linear_act(const Var& x, const Var& weight, const Var& bias, ActKind act, const Var& slope = Var()) {
  const Tensor &X = x.value(), &W = weight.value();
  detail::check_dev("linear_act", X, "input");
  detail::check_dev("linear_act", W, "weight");
  RECHUB_CHECK_SHAPE(W.ndim() == 2 && X.ndim() >= 1 && X.dim(-1) == W.dim(1), "linear_act: input ", X.shape().str(),
                     " does not match weight ", W.shape().str());
  const std::int64_t rows = X.rows(), in = W.dim(1), outd = W.dim(0);
  if (bias.defined()) {
    detail::check_dev("linear_act", bias.value(), "bias");
    RECHUB_CHECK_SHAPE(bias.value().numel() == outd, "linear_act: bias ", bias.shape().str(), " for ", outd,
                       " outputs");
  }
  const bool pr = act == ActKind::prelu;
  std::int64_t na = 0;
  if (pr) {
    RECHUB_CHECK_SHAPE(slope.defined() && (slope.value().numel() == 1 || slope.value().numel() == outd),
                       "linear_act: prelu slope must be [1] or [", outd, "]");
    detail::check_dev("linear_act", slope.value(), "slope");
    na = slope.value().numel();
  }
  const Var sl = pr ? slope : Var();
  Shape ys = X.shape();
  ys[-1] = outd;
  Var out = detail::make_output("linear_act", ys, DType::f32, x, weight, bias, sl);
  float* Z = pr ? detail::scratch({rows, outd}) : nullptr;
  linear_act_forward(detail::to_act(act), out.value().f32(), Z, X.f32(), W.f32(), detail::vptr(bias), detail::vptr(sl),
                     na, rows, in, outd);
  ::rechub::detail::record(out, [x, weight, bias, sl, out, Z, act, na, rows, in, outd] {
    linear_act_backward(detail::to_act(act), detail::gptr(x), detail::gptr(weight), detail::gptr(bias),
                        detail::gptr(sl), out.grad().f32(), x.value().f32(), weight.value().f32(), Z,
                        out.value().f32(), detail::vptr(sl), na, rows, in, outd);
  });
  return out;
}
/// x W^T + b.
inline Var linear(const Var& x, const Var& weight, const Var& bias = Var()) {
  return cuda::linear_act(x, weight, bias, ActKind::none);
}

/// Sum / mean of every element, shape [1].
inline Var sum(const Var& x) { return detail::sum_impl("sum", x, 1.0f); }
inline Var mean(const Var& x) {
  RECHUB_CHECK_SHAPE(x.value().numel() > 0, "mean: empty input ", x.shape().str());
  return detail::sum_impl("mean", x, 1.0f / static_cast<float>(x.value().numel()));
}
/// Sum / mean over one dim.
inline Var sum(const Var& x, int dim, bool keepdim = false) { return detail::sum_dim_impl("sum", x, dim, keepdim, false); }
inline Var mean(const Var& x, int dim, bool keepdim = false) { return detail::sum_dim_impl("mean", x, dim, keepdim, true); }

/// masked_mean of x [B, L, D] over mask [B, L] (host or device int32).
inline Var masked_mean(const Var& x, const Tensor& mask) {
  const Tensor& X = x.value();
  detail::check_dev("masked_mean", X, "x");
  ::rechub::detail::check_i32("masked_mean", mask, "mask");
  RECHUB_CHECK_SHAPE(X.ndim() == 3 && mask.ndim() == 2 && mask.dim(0) == X.dim(0) && mask.dim(1) == X.dim(1),
                     "masked_mean: x ", X.shape().str(), " and mask ", mask.shape().str(),
                     " do not match (expects x [B, L, D] and mask [B, L])");
  const std::int64_t B = X.dim(0), L = X.dim(1), D = X.dim(2);
  Var out = detail::make_output("masked_mean", Shape{B, D}, DType::f32, x);
  float* w = detail::scratch({B, L});
  masked_mean_forward(out.value().f32(), w, X.f32(), static_cast<const std::int32_t*>(detail::device_input(mask)), B,
                      L, D);
  ::rechub::detail::record(out, [x, out, w, B, L, D] {
    masked_mean_backward(detail::grad_of(x), out.grad().f32(), w, B, L, D);
  });
  return out;
}

/// softmax / log_softmax over the last dim (mask host or device, as the CPU op).
inline Var softmax(const Var& x, const Tensor& mask = Tensor()) { return detail::softmax_impl<false>("softmax", x, mask); }
inline Var log_softmax(const Var& x, const Tensor& mask = Tensor()) {
  return detail::softmax_impl<true>("log_softmax", x, mask);
}

/// layer_norm over the last dim; gamma / beta may be undefined.
inline Var layer_norm(const Var& x, const Var& gamma, const Var& beta, float eps = 1e-5f) {
  const Tensor& X = x.value();
  detail::check_dev("layer_norm", X, "input");
  RECHUB_CHECK_SHAPE(X.ndim() >= 1 && X.dim(-1) > 0, "layer_norm: input ", X.shape().str(), " has no features");
  const std::int64_t D = X.dim(-1), rows = X.numel() / D;
  for (const Var* p : {&gamma, &beta})
    if (p->defined()) {
      detail::check_dev("layer_norm", p->value(), p == &gamma ? "gamma" : "beta");
      RECHUB_CHECK_SHAPE(p->value().numel() == D, "layer_norm: ", p == &gamma ? "gamma " : "beta ", p->shape().str(),
                         " does not match input ", X.shape().str());
    }
  Var out = detail::make_output("layer_norm", X.shape(), DType::f32, x, gamma, beta);
  float* stats = detail::scratch({rows, 2});
  layer_norm_forward(out.value().f32(), stats, X.f32(), detail::vptr(gamma), detail::vptr(beta), rows, D, eps);
  ::rechub::detail::record(out, [x, gamma, beta, out, stats, rows, D] {
    layer_norm_backward(detail::gptr(x), detail::gptr(gamma), detail::gptr(beta), out.grad().f32(), x.value().f32(),
                        stats, detail::vptr(gamma), rows, D);
  });
  return out;
}

/// act(batch_norm1d(x)) over x [N, C] (torch BatchNorm1d semantics; running stats on the device).
inline Var batch_norm1d_act(const Var& x, const Var& gamma, const Var& beta, Tensor& running_mean,
                            Tensor& running_var, bool training, float momentum, float eps, ActKind act,
                            const Var& slope = Var()) {
  const Tensor& X = x.value();
  detail::check_dev("batch_norm1d", X, "input");
  RECHUB_CHECK_SHAPE(X.ndim() == 2, "batch_norm1d: input must be [N, C], got ", X.shape().str());
  const std::int64_t N = X.dim(0), C = X.dim(1);
  for (const Var* p : {&gamma, &beta})
    if (p->defined()) {
      detail::check_dev("batch_norm1d", p->value(), p == &gamma ? "gamma" : "beta");
      RECHUB_CHECK_SHAPE(p->value().numel() == C, "batch_norm1d: ", p == &gamma ? "gamma " : "beta ", p->shape().str(),
                         " does not match input ", X.shape().str());
    }
  const bool have_running = running_mean.defined() && running_var.defined();
  if (have_running) {
    detail::check_dev("batch_norm1d", running_mean, "running_mean");
    detail::check_dev("batch_norm1d", running_var, "running_var");
    RECHUB_CHECK_SHAPE(running_mean.numel() == C && running_var.numel() == C, "batch_norm1d: running stats ",
                       running_mean.shape().str(), " / ", running_var.shape().str(), " do not match input ",
                       X.shape().str());
  }
  const bool pr = act == ActKind::prelu;
  std::int64_t na = 0;
  if (pr) {
    RECHUB_CHECK_SHAPE(slope.defined() && (slope.value().numel() == 1 || slope.value().numel() == C),
                       "batch_norm1d: prelu slope must be [1] or [", C, "]");
    detail::check_dev("batch_norm1d", slope.value(), "slope");
    na = slope.value().numel();
  }
  const Var sl = pr ? slope : Var();
  Var out = detail::make_output("batch_norm1d", X.shape(), DType::f32, x, gamma, beta, sl);
  float* cols = detail::scratch({6, C});
  batch_norm1d_forward(detail::to_act(act), out.value().f32(), cols, have_running ? running_mean.f32() : nullptr,
                       have_running ? running_var.f32() : nullptr, X.f32(), detail::vptr(gamma), detail::vptr(beta),
                       detail::vptr(sl), na, N, C, training, momentum, eps);
  ::rechub::detail::record(out, [x, gamma, beta, sl, out, cols, na, N, C, training, act] {
    batch_norm1d_backward(detail::to_act(act), detail::gptr(x), detail::gptr(gamma), detail::gptr(beta),
                          detail::gptr(sl), out.grad().f32(), x.value().f32(), out.value().f32(), cols, na, N, C,
                          training);
  });
  return out;
}

/// x / max(||x||, eps) over the last dim.
inline Var l2_normalize(const Var& x, float eps = 1e-12f) {
  const Tensor& X = x.value();
  detail::check_dev("l2_normalize", X, "input");
  RECHUB_CHECK_SHAPE(X.ndim() >= 1, "l2_normalize: input must have at least 1 dim, got ", X.shape().str());
  const std::int64_t D = X.dim(-1), rows = D ? X.numel() / D : 0;
  Var out = detail::make_output("l2_normalize", X.shape(), DType::f32, x);
  float* denom = detail::scratch({rows});
  l2_normalize_forward(out.value().f32(), denom, X.f32(), rows, D, eps);
  ::rechub::detail::record(out, [x, out, denom, rows, D, eps] {
    l2_normalize_backward(detail::grad_of(x), out.grad().f32(), out.value().f32(), denom, rows, D, eps);
  });
  return out;
}

/// Rows of table [V, D] at ids (any shape, host or device) -> [ids..., D]. Table gradients use
/// the deterministic sorted scatter unless `how` says otherwise.
inline Var gather_rows(const Var& table, const Tensor& ids, Scatter how = Scatter::sorted) {
  const Tensor& T = table.value();
  detail::check_dev("gather_rows", T, "table");
  ::rechub::detail::check_table("gather_rows", T);
  RECHUB_CHECK_SHAPE(ids.ndim() >= 1 && ids.ndim() < Shape::kMaxDims, "gather_rows: ids ", ids.shape().str(),
                     " must have 1 to 3 dims");
  const std::int64_t n = ids.numel(), D = T.dim(1), V = T.dim(0);
  Shape ys = ids.shape();
  ys.push(D);
  Var out = detail::make_output("gather_rows", ys, DType::f32, table);
  const std::int32_t* pid = detail::device_ids("gather_rows", ids, table, out.requires_grad(), -1);
  gather_rows_forward(out.value().f32(), T.f32(), pid, n, D);
  ::rechub::detail::record(out, [table, out, pid, n, D, V, how] {
    embedding_backward(how, detail::grad_of(table), nullptr, out.grad().f32(), pid, nullptr, n, 1, V, D, -1);
  });
  return out;
}

/// embedding_bag over ids [B, L] (host or device): sum / mean -> [B, D], concat -> [B, L, D].
inline Var embedding_bag(const Var& table, const Tensor& ids, BagMode mode, std::int32_t padding_idx = 0,
                         Scatter how = Scatter::sorted) {
  const Tensor& T = table.value();
  detail::check_dev("embedding_bag", T, "table");
  ::rechub::detail::check_table("embedding_bag", T);
  RECHUB_CHECK_SHAPE(ids.ndim() == 2, "embedding_bag: ids must be [B, L], got ", ids.shape().str());
  const std::int64_t B = ids.dim(0), L = ids.dim(1), D = T.dim(1), V = T.dim(0);
  const bool cat = mode == BagMode::concat;
  Var out = detail::make_output("embedding_bag", cat ? Shape{B, L, D} : Shape{B, D}, DType::f32, table);
  const std::int32_t* pid = detail::device_ids("embedding_bag", ids, table, out.requires_grad(), padding_idx);
  float* sc = cat ? nullptr : detail::scratch({B});
  embedding_bag_forward(static_cast<Bag>(mode), out.value().f32(), sc, T.f32(), pid, B, L, D, padding_idx);
  ::rechub::detail::record(out, [table, out, pid, sc, B, L, D, V, cat, padding_idx, how] {
    embedding_backward(how, detail::grad_of(table), nullptr, out.grad().f32(), pid, sc, B * L, cat ? 1 : L, V, D,
                       padding_idx);
  });
  return out;
}

// ---- losses (scalar [1] on the device) ---------------------------------------------------------

namespace detail {
inline std::int64_t column_len(const char* op, const Tensor& x, const Tensor& label) {
  const std::int64_t n = rd::loss_column_len(x);
  RECHUB_CHECK_SHAPE(n >= 1 && label.numel() == n && rd::loss_column_len(label) == n, op, ": input ",
                     x.shape().str(), " and label ", label.shape().str(),
                     " must both hold N >= 1 values ([N] or [N, 1])");
  return n;
}
}  // namespace detail

/// torch.nn.BCEWithLogitsLoss (mean); labels host or device.
inline Var bce_with_logits(const Var& logits, const Tensor& label) {
  const Tensor& X = logits.value();
  detail::check_dev("bce_with_logits", X, "logits");
  const std::int64_t N = detail::column_len("bce_with_logits", X, label);
  Var out = detail::make_output("bce_with_logits", Shape{1}, DType::f32, logits);
  const float* y = static_cast<const float*>(detail::device_input(label));
  bce_with_logits_forward(out.value().f32(), X.f32(), y, N);
  ::rechub::detail::record(out, [logits, out, y, N] {
    bce_with_logits_backward(detail::grad_of(logits), out.grad().f32(), logits.value().f32(), y, N);
  });
  return out;
}
/// torch.nn.BCELoss on probabilities (mean; logs clamped at -100). Ranges are not checked on the device.
inline Var bce(const Var& prob, const Tensor& label) {
  const Tensor& P = prob.value();
  detail::check_dev("bce", P, "prob");
  const std::int64_t N = detail::column_len("bce", P, label);
  Var out = detail::make_output("bce", Shape{1}, DType::f32, prob);
  const float* y = static_cast<const float*>(detail::device_input(label));
  bce_forward(out.value().f32(), P.f32(), y, N);
  ::rechub::detail::record(out, [prob, out, y, N] {
    bce_backward(detail::grad_of(prob), out.grad().f32(), prob.value().f32(), y, N);
  });
  return out;
}
/// Torch-RecHub BPRLoss on pos [N] / [N, 1] and neg [N] / [N, k].
inline Var bpr(const Var& pos_score, const Var& neg_score) {
  const Tensor &P = pos_score.value(), &Ng = neg_score.value();
  detail::check_dev("bpr", P, "pos_score");
  detail::check_dev("bpr", Ng, "neg_score");
  std::int64_t N = 0, k = 0;
  // pairwise_check also calls check_cpu: validate shapes on data-less host views.
  ::rechub::detail::pairwise_check("bpr", Tensor::view_of(nullptr, P.shape()), Tensor::view_of(nullptr, Ng.shape()), N,
                                   k);
  Var out = detail::make_output("bpr", Shape{1}, DType::f32, pos_score, neg_score);
  bpr_forward(out.value().f32(), P.f32(), Ng.f32(), N, k);
  ::rechub::detail::record(out, [pos_score, neg_score, out, N, k] {
    bpr_backward(detail::gptr(pos_score), detail::gptr(neg_score), out.grad().f32(), pos_score.value().f32(),
                 neg_score.value().f32(), N, k);
  });
  return out;
}
namespace detail {
inline Var softmax_ce(const char* op, const Var& logits, const Tensor& target, float T) {
  const Tensor& X = logits.value();
  check_dev(op, X, "logits");
  RECHUB_CHECK_SHAPE(X.ndim() == 2 && X.dim(0) >= 1 && X.dim(1) >= 1, op,
                     ": logits must be [N, C] with N, C >= 1, got ", X.shape().str());
  RECHUB_CHECK_AS(ConfigError, T > 0.0f, op, ": temperature must be > 0, got ", T);
  const std::int64_t N = X.dim(0), C = X.dim(1);
  const std::int32_t* tg = nullptr;
  if (target.defined()) {
    rd::check_i32(op, target, "target");
    RECHUB_CHECK_SHAPE(rd::loss_column_len(target) == N, op, ": target ", target.shape().str(),
                       " does not match logits ", X.shape().str());
    if (target.device() == Device::cpu)
      for (std::int64_t i = 0; i < N; ++i)
        RECHUB_CHECK_AS(DataError, target.i32()[i] >= 0 && target.i32()[i] < C, op, ": target[", i,
                        "] = ", target.i32()[i], " is outside [0, ", C, ")");
    tg = static_cast<const std::int32_t*>(device_input(target));
  }
  Var out = make_output(op, Shape{1}, DType::f32, logits);
  float* lse = scratch({N});
  softmax_ce_forward(out.value().f32(), lse, X.f32(), tg, N, C, T);
  rd::record(out, [logits, out, lse, tg, N, C, T] {
    softmax_ce_backward(grad_of(logits), out.grad().f32(), logits.value().f32(), lse, tg, N, C, T);
  });
  return out;
}
}  // namespace detail
/// torch.nn.CrossEntropyLoss (mean) on logits [N, C] / T with int32 targets [N].
inline Var softmax_cross_entropy(const Var& logits, const Tensor& target, float temperature = 1.0f) {
  RECHUB_CHECK_SHAPE(target.defined(), "softmax_cross_entropy: target is required");
  return detail::softmax_ce("softmax_cross_entropy", logits, target, temperature);
}
/// List-wise softmax loss: scores [N, 1+k] with the positive in column 0.
inline Var listwise_softmax_ce(const Var& scores, float temperature = 1.0f) {
  return detail::softmax_ce("listwise_softmax_ce", scores, Tensor(), temperature);
}
/// In-batch softmax over u [B, D] x v [B, D]^T; log_q [B] (float) and item_ids [B] (int32) are
/// optional host or device tensors.
inline Var inbatch_softmax(const Var& user, const Var& item, float temperature = 1.0f, const Tensor& log_q = Tensor(),
                           const Tensor& item_ids = Tensor()) {
  const Tensor &U = user.value(), &V = item.value();
  detail::check_dev("inbatch_softmax", U, "user");
  detail::check_dev("inbatch_softmax", V, "item");
  RECHUB_CHECK_SHAPE(U.ndim() == 2 && U.shape() == V.shape() && U.dim(0) >= 1, "inbatch_softmax: user ",
                     U.shape().str(), " and item ", V.shape().str(), " must both be [B, D] with B >= 1");
  RECHUB_CHECK_AS(ConfigError, temperature > 0.0f, "inbatch_softmax: temperature must be > 0, got ", temperature);
  const std::int64_t B = U.dim(0), D = U.dim(1);
  for (const Tensor* t : {&log_q, &item_ids})
    if (t->defined())
      RECHUB_CHECK_SHAPE(t->numel() == B, "inbatch_softmax: ", t == &log_q ? "log_q " : "item_ids ", t->shape().str(),
                         " does not match B = ", B);
  if (log_q.defined()) ::rechub::detail::check_f32("inbatch_softmax", log_q, "log_q");
  if (item_ids.defined()) ::rechub::detail::check_i32("inbatch_softmax", item_ids, "item_ids");
  Var out = detail::make_output("inbatch_softmax", Shape{1}, DType::f32, user, item);
  float* P = detail::scratch({B, B});
  inbatch_softmax_forward(out.value().f32(), P, U.f32(), V.f32(),
                          log_q.defined() ? static_cast<const float*>(detail::device_input(log_q)) : nullptr,
                          item_ids.defined() ? static_cast<const std::int32_t*>(detail::device_input(item_ids)) : nullptr,
                          B, D, temperature);
  ::rechub::detail::record(out, [user, item, out, P, B, D, temperature] {
    inbatch_softmax_backward(detail::gptr(user), detail::gptr(item), out.grad().f32(), P, user.value().f32(),
                             item.value().f32(), B, D, temperature);
  });
  return out;
}

/// The bridge: a host copy of a device tensor (the scalar loss) on the tape. Its backward copies
/// the host gradient to the device, so rechub::backward(loss_to_host(loss)) runs the device step.
inline Var loss_to_host(const Var& x) {
  const Tensor& X = x.value();
  detail::check_dev("loss_to_host", X, "input");
  Node* n = tape().new_node();
  n->value = step_arena().tensor(X.shape(), X.dtype());
  n->op = "loss_to_host";
  n->requires_grad = grad_enabled() && x.requires_grad();
  cuda::copy(n->value, X);
  Var out(n);
  const std::int64_t numel = X.numel();
  ::rechub::detail::record(out, [x, out, numel] {
    const Tensor g = cuda::to_device(out.grad().reshape({numel}));
    axpy(detail::grad_of(x), 1.0f, g.f32(), numel);  // g may be freed now: stream order
  });
  return out;
}

}  // namespace rechub::cuda
