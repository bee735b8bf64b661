#pragma once
// matmul and linear.
//
//   matmul:  C = op(A) op(B);  A [M,K] (or [K,M] with trans_a), B [K,N] (or [N,K] with trans_b).
//            Batched: A [Bt,M,K], B [Bt,K,N] -> C [Bt,M,N] (one GEMM per batch entry).
//            dA' = dC B'^T,  dB' = A'^T dC   (A' = op(A), B' = op(B); transposed back as stored).
//   linear:  y = x W^T + b;  x [..., in], W [out, in] (torch layout), b [out] (optional).
//            dx += dy W,  dW += dy^T x,  db += sum over rows of dy.
// Weight gradients accumulate (+=) like every gradient in rechub.
#include <cstdint>

#include "rechub/ops/dispatch.hpp"
#include "rechub/ops/gemm.hpp"

namespace rechub {

namespace detail {
// One product C = op(A) op(B) (+ beta C) of a single batch entry, serial or threaded.
inline void matmul_forward(float* C, const float* A, const float* B, std::int64_t M, std::int64_t N,
                           std::int64_t K, bool ta, bool tb, bool threaded) {
  auto g = threaded ? gemm : gemm_serial;
  g(ta, tb, M, N, K, 1.0f, A, ta ? M : K, B, tb ? K : N, 0.0f, C, N);
}
inline void matmul_backward(float* dA, float* dB, const float* dC, const float* A, const float* B, std::int64_t M,
                            std::int64_t N, std::int64_t K, bool ta, bool tb, bool threaded) {
  auto g = threaded ? gemm : gemm_serial;
  const std::int64_t lda = ta ? M : K, ldb = tb ? K : N;
  if (dA) {
    if (!ta) g(false, !tb, M, K, N, 1.0f, dC, N, B, ldb, 1.0f, dA, K);
    else g(tb, true, K, M, N, 1.0f, B, ldb, dC, N, 1.0f, dA, M);
  }
  if (dB) {
    if (!tb) g(!ta, false, K, N, M, 1.0f, A, lda, dC, N, 1.0f, dB, N);
    else g(true, ta, N, K, M, 1.0f, dC, N, A, lda, 1.0f, dB, K);
  }
}
}  // namespace detail

/// C = op(a) op(b) for 2-d operands, or batched over the leading dim for 3-d operands.
inline Var matmul(const Var& a, const Var& b, bool trans_a = false, bool trans_b = false) {
  const Tensor &A = a.value(), &B = b.value();
  detail::check_cpu("matmul", A, B);
  detail::check_f32("matmul", A, "a");
  detail::check_f32("matmul", B, "b");
  RECHUB_CHECK_SHAPE((A.ndim() == 2 && B.ndim() == 2) || (A.ndim() == 3 && B.ndim() == 3 && A.dim(0) == B.dim(0)),
                     "matmul: operands must be both 2-d or both 3-d with equal batch, got ", A.shape().str(), " and ",
                     B.shape().str());
  const bool batched = A.ndim() == 3;
  const std::int64_t Bt = batched ? A.dim(0) : 1;
  const std::int64_t M = trans_a ? A.dim(-1) : A.dim(-2), K = trans_a ? A.dim(-2) : A.dim(-1);
  const std::int64_t Kb = trans_b ? B.dim(-1) : B.dim(-2), N = trans_b ? B.dim(-2) : B.dim(-1);
  RECHUB_CHECK_SHAPE(K == Kb, "matmul: inner dims differ: ", A.shape().str(), (trans_a ? "^T" : ""), " x ",
                     B.shape().str(), (trans_b ? "^T" : ""));
  Shape cs = batched ? Shape{Bt, M, N} : Shape{M, N};
  Var out = detail::make_output("matmul", cs, DType::f32, a, b);
  float* C = out.value().f32();
  const float *pa = A.f32(), *pb = B.f32();
  if (!batched) {
    detail::matmul_forward(C, pa, pb, M, N, K, trans_a, trans_b, true);
  } else {
    parallel_for(Bt, M * N * K, [&](std::int64_t s, std::int64_t e) {
      for (std::int64_t i = s; i < e; ++i)
        detail::matmul_forward(C + i * M * N, pa + i * M * K, pb + i * K * N, M, N, K, trans_a, trans_b, false);
    });
  }
  detail::record(out, [a, b, out, Bt, M, N, K, trans_a, trans_b, batched] {
    float* dA = a.requires_grad() ? a.grad_acc().f32() : nullptr;
    float* dB = b.requires_grad() ? b.grad_acc().f32() : nullptr;
    const float *dC = out.grad().f32(), *pa = a.value().f32(), *pb = b.value().f32();
    if (!batched) {
      detail::matmul_backward(dA, dB, dC, pa, pb, M, N, K, trans_a, trans_b, true);
      return;
    }
    parallel_for(Bt, 2 * M * N * K, [&](std::int64_t s, std::int64_t e) {
      for (std::int64_t i = s; i < e; ++i)
        detail::matmul_backward(dA ? dA + i * M * K : nullptr, dB ? dB + i * K * N : nullptr, dC + i * M * N,
                                pa + i * M * K, pb + i * K * N, M, N, K, trans_a, trans_b, false);
    });
  });
  return out;
}

/// y = x W^T + b over the last dim of x; `bias` may be an undefined Var.
inline Var linear(const Var& x, const Var& weight, const Var& bias = Var()) {
  const Tensor &X = x.value(), &W = weight.value();
  detail::check_cpu("linear", X, W);
  detail::check_f32("linear", X, "input");
  RECHUB_CHECK_SHAPE(W.ndim() == 2 && X.ndim() >= 1 && X.dim(-1) == W.dim(1), "linear: input ", X.shape().str(),
                     " does not match weight ", W.shape().str(), " (expects last dim ", W.ndim() == 2 ? W.dim(1) : -1,
                     ")");
  const std::int64_t rows = X.rows(), in = W.dim(1), outd = W.dim(0);
  if (bias.defined())
    RECHUB_CHECK_SHAPE(bias.value().numel() == outd, "linear: bias ", bias.shape().str(), " for ", outd, " outputs");
  Shape ys = X.shape();
  ys[-1] = outd;
  Var out = bias.defined() ? detail::make_output("linear", ys, DType::f32, x, weight, bias)
                           : detail::make_output("linear", ys, DType::f32, x, weight);
  float* Y = out.value().f32();
  detail::gemm_bias(false, true, rows, outd, in, 1.0f, X.f32(), in, W.f32(), in,
                    bias.defined() ? bias.value().f32() : nullptr, Y, outd);
  detail::record(out, [x, weight, bias, out, rows, in, outd] {
    const float* dY = out.grad().f32();
    if (x.requires_grad()) {
      // A fresh dx is zeroed inside the threaded product (beta 0), not by one thread beforehand.
      bool store = false;
      float* dx = x.grad_for_write(store).f32();
      detail::gemm(false, false, rows, in, outd, 1.0f, dY, outd, weight.value().f32(), in, store ? 0.0f : 1.0f, dx,
                   in);
    }
    if (weight.requires_grad())
      detail::gemm(true, false, outd, in, rows, 1.0f, dY, outd, x.value().f32(), in, 1.0f,
                   weight.grad_acc().f32(), in);
    if (bias.defined() && bias.requires_grad()) {
      // Columns split over threads, each summed over all rows in order: the same for any thread count.
      float* db = bias.grad_acc().f32();
      parallel_for(outd, rows, [&](std::int64_t j0, std::int64_t j1) {
        for (std::int64_t r = 0; r < rows; ++r)
          for (std::int64_t j = j0; j < j1; ++j) db[j] += dY[r * outd + j];
      });
    }
  });
  return out;
}

}  // namespace rechub
