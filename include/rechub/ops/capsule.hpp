#pragma once
// Capsule routing (MIND's behaviour-to-interest routing, ComiRec-DR) as Torch-RecHub's
// CapsuleNetwork computes it once its bilinear map has produced the prediction vectors `hat`.
//
//   hat   [B, L, D]     shared: every interest routes the same vectors (MIND, bilinear_type 0,
//                       which maps once and repeats the result K times)
//         [B, L, K, D]  per interest (ComiRec-DR, bilinear_type 2; bilinear_type 1)
//   mask  int32 [B, L], nonzero = a real item (the history ids themselves serve)
//   init  logits b [B, K, L] (MIND: randn) or undefined (zeros: ComiRec-DR)
//   for it = 1..R:
//     w_kl = softmax_l(b_k)_l * mask_l         softmax over ALL L positions, then padding zeroed;
//                                              Torch-RecHub does not renormalise, so the weights
//                                              of a short history sum to less than 1
//     z_k  = sum_l w_kl hat_lk,   v_k = squash(z_k) = s(n) z_k,  s(n) = n / (1 + n) / sqrt(n + 1e-9),
//                                              n = |z_k|^2
//     b_kl += <hat_lk, v_k>                    every iteration but the last
//   out [B, K, D] = the last iteration's v.
//
// Gradient. Torch-RecHub routes on hat.detach() in every iteration but the last, so the logits b
// and hence the final weights w are constants of the backward: only the last z_k = sum_l w_kl hat_lk
// carries gradient:
//   dz_k = s dv_k + 2 s'(n) <z_k, dv_k> z_k,
//   s'(n) = (1+n)^-1 (n+eps)^-1/2 - n (1+n)^-2 (n+eps)^-1/2 - n/2 (1+n)^-1 (n+eps)^-3/2  (finite at 0),
//   dhat_lk += w_kl dz_k                       (shared hat: summed over k).
// routing_weights() computes those constant weights, capsule_squash(hat, w) is the differentiable
// last step, and capsule_routing() is both fused in one pass per row (what the models call).
//
//   capsule_routing_mapped(x [B, L, D], W [D, D], ...): the shared case with hat_l = W x_l (MIND's
//   bilinear_type 0, W torch Linear layout) without materialising hat: since the map is linear,
//     z_k = W zx_k with zx_k = sum_l w_kl x_l,   <hat_l, v_k> = <x_l, W^T v_k>,
//   which saves the [B*L, D] x [D, D] product and its two backward GEMMs (what dominated a MIND
//   step). Backward with the same constant w:  dW += sum_{b,k} dz_k zx_k^T (one GEMM over B*K rows),
//   dx_l += sum_k w_kl W^T dz_k. Equal to routing on linear(x, W) up to float summation order.
//
//   position_bilinear(x [B, L, D], W [L, N, D] or [1, L', N, D] with L' >= L) -> [B, L, N]
//       y_bl = W_l x_bl (ComiRec-DR's per-position maps, N = K*D; the first L of L' maps are used,
//       as Torch-RecHub's w[:, :seq_len]).  dx_bl += W_l^T dy_bl,  dW_l += sum_b dy_bl x_bl^T.
//
// Rows are independent: forward and backward run in parallel over B (over L for the bilinear
// map) with no shared accumulators, so results are bit-identical for a given thread count.
#include <Eigen/Core>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>

#include "rechub/ops/dispatch.hpp"
#include "rechub/ops/gemm.hpp"

namespace rechub {

namespace detail {

constexpr float kSquashEps = 1e-9f;

/// s(n) = n / (1 + n) / sqrt(n + eps): v = s(|z|^2) z.
inline float squash_scale(float n) { return n / (1.0f + n) / std::sqrt(n + kSquashEps); }
/// ds/dn, written so that it stays finite at n = 0.
inline float squash_scale_grad(float n) {
  const float r = 1.0f / std::sqrt(n + kSquashEps), q = 1.0f / (1.0f + n);
  return q * r - n * q * q * r - 0.5f * n * q * r * r * r;
}

struct CapsuleDims {
  std::int64_t B, L, K, D;
  bool shared;
  std::int64_t pos_stride() const { return shared ? D : K * D; }  // between positions of hat
  std::int64_t cap_stride() const { return shared ? 0 : D; }      // between interests of hat
};

/// w_k = softmax(b_k) over all L positions, zeroed where the mask is 0.
inline void routing_softmax(const float* b, const std::int32_t* mask, float* w, std::int64_t L) {
  using Arr = Eigen::Array<float, Eigen::Dynamic, 1>;
  Eigen::Map<const Arr> bl(b, L);
  Eigen::Map<Arr> wl(w, L);
  const float m = bl.maxCoeff();
  wl = (bl - m).exp();  // Eigen's vectorised exp: the softmax is the routing loop's only transcendental
  const float inv = 1.0f / wl.sum();
  for (std::int64_t l = 0; l < L; ++l) w[l] = mask[l] ? w[l] * inv : 0.0f;
}

/// Routes one row: hat its [L, D] or [L, K, D] block, logits b [K, L] (in: initial, clobbered),
/// w [K, L] and z [K, D] out (the last iteration's weights and pre-squash capsules), v [K, D] out.
/// DC is the embedding width when known at compile time (0: d.D), so the D-loops unroll into a
/// few SIMD registers; positions run in the outer loop so each hat row is read once per pass.
template <int DC>
void capsule_route_row_impl(const CapsuleDims& d, int iterations, const float* hat, const std::int32_t* mask,
                            float* b, float* w, float* z, float* v) {
  const std::int64_t L = d.L, K = d.K, D = DC > 0 ? DC : d.D, ps = d.pos_stride(), cs = d.cap_stride();
  // Fixed-size Eigen vectors when D is known: a D-vector is a few SIMD registers, no aliasing doubts.
  using Vec = Eigen::Matrix<float, (DC > 0 ? DC : Eigen::Dynamic), 1>;
  using Map = Eigen::Map<Vec>;
  using CMap = Eigen::Map<const Vec>;
  for (int it = 0; it < iterations; ++it) {
    for (std::int64_t k = 0; k < K; ++k) routing_softmax(b + k * L, mask, w + k * L, L);
    for (std::int64_t j = 0; j < K * D; ++j) z[j] = 0.0f;
    for (std::int64_t l = 0; l < L; ++l) {
      if (!mask[l]) continue;  // w = 0 there
      const float* h = hat + l * ps;
      for (std::int64_t k = 0; k < K; ++k) Map(z + k * D, D).noalias() += w[k * L + l] * CMap(h + k * cs, D);
    }
    for (std::int64_t k = 0; k < K; ++k) {
      Map zk(z + k * D, D);
      Map(v + k * D, D) = squash_scale(zk.squaredNorm()) * zk;
    }
    if (it + 1 == iterations) break;
    // Every position's logit moves, padding included: Torch-RecHub's softmax runs over all L.
    for (std::int64_t l = 0; l < L; ++l) {
      const float* h = hat + l * ps;
      for (std::int64_t k = 0; k < K; ++k) b[k * L + l] += CMap(h + k * cs, D).dot(CMap(v + k * D, D));
    }
  }
}

/// capsule_route_row_impl for the shared map hat_l = W x_l (W [D, D] row-major), routing in x's
/// space: zx [K, D] out (sum_l w_kl x_l of the last iteration), z = W zx, v = squash(z).
template <int DC>
void capsule_route_mapped_row_impl(std::int64_t L, std::int64_t K, std::int64_t Dr, int iterations, const float* x,
                                   const float* W, const std::int32_t* mask, float* b, float* w, float* zx, float* z,
                                   float* v) {
  const std::int64_t D = DC > 0 ? DC : Dr;
  using Vec = Eigen::Matrix<float, (DC > 0 ? DC : Eigen::Dynamic), 1>;
  using Map = Eigen::Map<Vec>;
  using CMap = Eigen::Map<const Vec>;
  float u[4096];  // W^T v_k for every k (K*D <= 4096, checked by the caller)
  for (int it = 0; it < iterations; ++it) {
    for (std::int64_t k = 0; k < K; ++k) routing_softmax(b + k * L, mask, w + k * L, L);
    for (std::int64_t j = 0; j < K * D; ++j) zx[j] = 0.0f;
    for (std::int64_t l = 0; l < L; ++l) {
      if (!mask[l]) continue;
      CMap xl(x + l * D, D);
      for (std::int64_t k = 0; k < K; ++k) Map(zx + k * D, D).noalias() += w[k * L + l] * xl;
    }
    const bool last = it + 1 == iterations;
    for (std::int64_t k = 0; k < K; ++k) {
      float *zk = z + k * D, *vk = v + k * D, *uk = u + k * D;
      const float* zxk = zx + k * D;
      if constexpr (DC > 0) {  // fixed-size products: unrolled SIMD
        using Mat = Eigen::Matrix<float, DC, DC, Eigen::RowMajor>;
        const Eigen::Map<const Mat> Wm(W);
        Map zm(zk), vm(vk);
        zm.noalias() = Wm * CMap(zxk);
        vm = squash_scale(zm.squaredNorm()) * zm;
        if (!last) Map(uk, D).noalias() = Wm.transpose() * vm;
      } else {  // plain loops (Eigen's dynamic GEMV trips a GCC -Waggressive-loop-optimizations false positive)
        float n = 0.0f;
        for (std::int64_t i = 0; i < D; ++i) {
          float acc = 0.0f;
          for (std::int64_t j = 0; j < D; ++j) acc += W[i * D + j] * zxk[j];
          zk[i] = acc;
          n += acc * acc;
        }
        const float sc = squash_scale(n);
        for (std::int64_t i = 0; i < D; ++i) vk[i] = sc * zk[i];
        if (last) continue;
        for (std::int64_t j = 0; j < D; ++j) uk[j] = 0.0f;
        for (std::int64_t i = 0; i < D; ++i)
          for (std::int64_t j = 0; j < D; ++j) uk[j] += W[i * D + j] * vk[i];
      }
    }
    if (last) break;
    for (std::int64_t l = 0; l < L; ++l) {
      CMap xl(x + l * D, D);
      for (std::int64_t k = 0; k < K; ++k) b[k * L + l] += xl.dot(CMap(u + k * D, D));
    }
  }
}

/// dhat += w dz with dz = squash'(z) dv, one row; dz_scratch holds K*D floats.
template <int DC>
void capsule_backward_row_impl(const CapsuleDims& d, const float* w, const float* z, const float* dv, float* dhat,
                               float* dz) {
  const std::int64_t L = d.L, K = d.K, D = DC > 0 ? DC : d.D, ps = d.pos_stride(), cs = d.cap_stride();
  using Vec = Eigen::Matrix<float, (DC > 0 ? DC : Eigen::Dynamic), 1>;
  using Map = Eigen::Map<Vec>;
  using CMap = Eigen::Map<const Vec>;
  for (std::int64_t k = 0; k < K; ++k) {
    CMap zk(z + k * D, D), gk(dv + k * D, D);
    const float n = zk.squaredNorm();
    Map(dz + k * D, D) = squash_scale(n) * gk + (2.0f * squash_scale_grad(n) * zk.dot(gk)) * zk;
  }
  for (std::int64_t l = 0; l < L; ++l) {
    float* dh = dhat + l * ps;
    for (std::int64_t k = 0; k < K; ++k) {
      const float wl = w[k * L + l];
      if (wl != 0.0f) Map(dh + k * cs, D).noalias() += wl * CMap(dz + k * D, D);  // 0: padding
    }
  }
}

/// Calls fn(std::integral_constant<int, DC>) with DC = D for the common widths, else 0.
template <class Fn>
void dispatch_width(std::int64_t D, Fn&& fn) {
  switch (D) {
    case 8: return fn(std::integral_constant<int, 8>{});
    case 16: return fn(std::integral_constant<int, 16>{});
    case 32: return fn(std::integral_constant<int, 32>{});
    case 64: return fn(std::integral_constant<int, 64>{});
    default: return fn(std::integral_constant<int, 0>{});
  }
}

inline CapsuleDims capsule_dims(const char* op, const Tensor& H, const Tensor& mask, std::int64_t K) {
  check_f32(op, H, "hat");
  check_i32(op, mask, "mask");
  RECHUB_CHECK_SHAPE(H.ndim() == 3 || (H.ndim() == 4 && H.dim(2) == K), op, ": hat ", H.shape().str(),
                     " must be [B, L, D] (shared) or [B, L, K, D] with K = ", K);
  RECHUB_CHECK_SHAPE(mask.ndim() == 2 && mask.dim(0) == H.dim(0) && mask.dim(1) == H.dim(1), op, ": mask ",
                     mask.shape().str(), " does not match hat ", H.shape().str(), " (expects [B, L])");
  RECHUB_CHECK_SHAPE(K >= 1, op, ": interest_num must be >= 1, got ", K);
  return CapsuleDims{H.dim(0), H.dim(1), K, H.dim(-1), H.ndim() == 3};
}

inline void check_logits(const char* op, const Tensor& t, const CapsuleDims& d, const char* what) {
  if (!t.defined()) return;
  check_cpu(op, t);
  check_f32(op, t, what);
  RECHUB_CHECK_SHAPE(t.ndim() == 3 && t.dim(0) == d.B && t.dim(1) == d.K && t.dim(2) == d.L, op, ": ", what, " ",
                     t.shape().str(), " must be [B, K, L] = [", d.B, ", ", d.K, ", ", d.L, "]");
}

/// Forward of the fused op and of routing_weights: logits scratch b, and per row w, z and v.
inline void capsule_forward(const CapsuleDims& d, int iterations, const float* hat, const std::int32_t* mask,
                            const float* init, float* b, float* w, float* z, float* v) {
  const std::int64_t L = d.L, K = d.K, D = d.D;
  const std::int64_t row_hat = d.shared ? L * D : L * K * D;
  dispatch_width(D, [&](auto dc) {
    parallel_for(d.B, 4 * iterations * K * L * (D + 8), [&](std::int64_t s, std::int64_t e) {
      for (std::int64_t r = s; r < e; ++r) {
        float* br = b + r * K * L;
        if (init) std::memcpy(br, init + r * K * L, static_cast<std::size_t>(K * L) * sizeof(float));
        else std::memset(br, 0, static_cast<std::size_t>(K * L) * sizeof(float));
        capsule_route_row_impl<decltype(dc)::value>(d, iterations, hat + r * row_hat, mask + r * L, br,
                                                    w + r * K * L, z + r * K * D, v + r * K * D);
      }
    });
  });
}

/// dhat += the gradient of the last routing step for every row (weights w and capsules z as saved).
inline void capsule_backward(const CapsuleDims& d, const float* w, const float* z, const float* dv, float* dhat) {
  const std::int64_t row_hat = d.shared ? d.L * d.D : d.L * d.K * d.D;
  // Scratch from the calling thread's arena (a worker's arena is never reset by end_step()).
  float* dz = step_arena().tensor({d.B, d.K, d.D}).f32();
  dispatch_width(d.D, [&](auto dc) {
    parallel_for(d.B, 2 * d.K * d.L * d.D, [&](std::int64_t s, std::int64_t e) {
      for (std::int64_t r = s; r < e; ++r)
        capsule_backward_row_impl<decltype(dc)::value>(d, w + r * d.K * d.L, z + r * d.K * d.D, dv + r * d.K * d.D,
                                                       dhat + r * row_hat, dz + r * d.K * d.D);
    });
  });
}

}  // namespace detail

/// Torch-RecHub's dynamic routing on prediction vectors `hat` (see the header comment): [B, K, D].
/// `init_logits` [B, K, L] are the initial routing logits (undefined: zeros). Gradient flows to
/// `hat` through the last iteration only (Torch-RecHub's stop_grad).
inline Var capsule_routing(const Var& hat, const Tensor& mask, int interest_num, const Tensor& init_logits = Tensor(),
                           int iterations = 3) {
  const char* op = "capsule_routing";
  const Tensor& H = hat.value();
  detail::check_cpu(op, H, mask);
  const detail::CapsuleDims d = detail::capsule_dims(op, H, mask, interest_num);
  detail::check_logits(op, init_logits, d, "init_logits");
  RECHUB_CHECK_SHAPE(iterations >= 1, op, ": iterations must be >= 1, got ", iterations);
  Var out = detail::make_output(op, Shape{d.B, d.K, d.D}, DType::f32, hat);
  Arena& a = step_arena();
  float* b = a.tensor({d.B, d.K, d.L}).f32();
  float* w = a.tensor({d.B, d.K, d.L}).f32();
  float* z = a.tensor({d.B, d.K, d.D}).f32();
  detail::capsule_forward(d, iterations, H.f32(), mask.i32(), init_logits.defined() ? init_logits.f32() : nullptr, b,
                          w, z, out.value().f32());
  detail::record(out, [hat, out, d, w, z] { detail::capsule_backward(d, w, z, out.grad().f32(), hat.grad_acc().f32()); });
  return out;
}

/// capsule_routing on hat = linear(x, map) with one shared map [D, D] (MIND), without forming hat.
inline Var capsule_routing_mapped(const Var& x, const Var& map, const Tensor& mask, int interest_num,
                                  const Tensor& init_logits = Tensor(), int iterations = 3) {
  const char* op = "capsule_routing";
  const Tensor &X = x.value(), &W = map.value();
  detail::check_cpu(op, X, W, mask);
  detail::check_f32(op, W, "map");
  const detail::CapsuleDims d = detail::capsule_dims(op, X, mask, interest_num);
  RECHUB_CHECK_SHAPE(d.shared && W.ndim() == 2 && W.dim(0) == d.D && W.dim(1) == d.D, op, ": map ", W.shape().str(),
                     " must be [D, D] for input ", X.shape().str());
  RECHUB_CHECK_SHAPE(d.K * d.D <= 4096, op, ": interest_num * D = ", d.K * d.D, " exceeds 4096");
  detail::check_logits(op, init_logits, d, "init_logits");
  RECHUB_CHECK_SHAPE(iterations >= 1, op, ": iterations must be >= 1, got ", iterations);
  Var out = detail::make_output(op, Shape{d.B, d.K, d.D}, DType::f32, x, map);
  Arena& a = step_arena();
  const std::int64_t B = d.B, L = d.L, K = d.K, D = d.D;
  float* b = a.tensor({B, K, L}).f32();
  float* w = a.tensor({B, K, L}).f32();
  float* zx = a.tensor({B, K, D}).f32();
  float* z = a.tensor({B, K, D}).f32();
  const float *px = X.f32(), *pw = W.f32(), *init = init_logits.defined() ? init_logits.f32() : nullptr;
  const std::int32_t* pm = mask.i32();
  float* pv = out.value().f32();
  detail::dispatch_width(D, [&](auto dc) {
    parallel_for(B, 4 * iterations * K * (L + D) * (D + 8), [&](std::int64_t s, std::int64_t e) {
      for (std::int64_t r = s; r < e; ++r) {
        float* br = b + r * K * L;
        if (init) std::memcpy(br, init + r * K * L, static_cast<std::size_t>(K * L) * sizeof(float));
        else std::memset(br, 0, static_cast<std::size_t>(K * L) * sizeof(float));
        detail::capsule_route_mapped_row_impl<decltype(dc)::value>(L, K, D, iterations, px + r * L * D, pw,
                                                                   pm + r * L, br, w + r * K * L, zx + r * K * D,
                                                                   z + r * K * D, pv + r * K * D);
      }
    });
  });
  detail::record(out, [x, map, out, d, w, zx, z] {
    const std::int64_t B = d.B, L = d.L, K = d.K, D = d.D;
    Arena& a = step_arena();
    const float* dv = out.grad().f32();
    float* dz = a.tensor({B, K, D}).f32();
    parallel_for(B * K, 8 * D, [&](std::int64_t s, std::int64_t e) {
      for (std::int64_t i = s; i < e; ++i) {
        const float *zi = z + i * D, *gi = dv + i * D;
        float n = 0.0f, zg = 0.0f;
        for (std::int64_t j = 0; j < D; ++j) n += zi[j] * zi[j], zg += zi[j] * gi[j];
        const float sc = detail::squash_scale(n), c = 2.0f * detail::squash_scale_grad(n) * zg;
        for (std::int64_t j = 0; j < D; ++j) dz[i * D + j] = sc * gi[j] + c * zi[j];
      }
    });
    const float* pw = map.value().f32();
    if (map.requires_grad()) detail::gemm(true, false, D, D, B * K, 1.0f, dz, D, zx, D, 1.0f, map.grad_acc().f32(), D);
    if (!x.requires_grad()) return;
    float* dzx = a.tensor({B, K, D}).f32();
    detail::gemm(false, false, B * K, D, D, 1.0f, dz, D, pw, D, 0.0f, dzx, D);
    float* dx = x.grad_acc().f32();
    detail::dispatch_width(D, [&](auto dc) {
      using Vec = Eigen::Matrix<float, (decltype(dc)::value > 0 ? decltype(dc)::value : Eigen::Dynamic), 1>;
      parallel_for(B, 2 * K * L * D, [&](std::int64_t s, std::int64_t e) {
        for (std::int64_t r = s; r < e; ++r)
          for (std::int64_t l = 0; l < L; ++l) {
            Eigen::Map<Vec> dxl(dx + (r * L + l) * D, D);
            for (std::int64_t k = 0; k < K; ++k) {
              const float wl = w[(r * K + k) * L + l];
              if (wl != 0.0f) dxl.noalias() += wl * Eigen::Map<const Vec>(dzx + (r * K + k) * D, D);  // 0: padding
            }
          }
      });
    });
  });
  return out;
}

/// The routing weights w [B, K, L] of the last iteration (constants: no gradient, owned tensor).
inline Tensor routing_weights(const Tensor& hat, const Tensor& mask, int interest_num,
                              const Tensor& init_logits = Tensor(), int iterations = 3) {
  const char* op = "routing_weights";
  detail::check_cpu(op, hat, mask);
  const detail::CapsuleDims d = detail::capsule_dims(op, hat, mask, interest_num);
  detail::check_logits(op, init_logits, d, "init_logits");
  RECHUB_CHECK_SHAPE(iterations >= 1, op, ": iterations must be >= 1, got ", iterations);
  Tensor w = Tensor::empty({d.B, d.K, d.L});
  Tensor b = Tensor::empty({d.B, d.K, d.L}), z = Tensor::empty({d.B, d.K, d.D}), v = Tensor::empty({d.B, d.K, d.D});
  detail::capsule_forward(d, iterations, hat.f32(), mask.i32(), init_logits.defined() ? init_logits.f32() : nullptr,
                          b.f32(), w.f32(), z.f32(), v.f32());
  return w;
}

/// squash(sum_l w_kl hat_lk) for given weights w [B, K, L]: routing's last step with w held fixed.
inline Var capsule_squash(const Var& hat, const Tensor& weights) {
  const char* op = "capsule_squash";
  const Tensor& H = hat.value();
  detail::check_cpu(op, H, weights);
  detail::check_f32(op, weights, "weights");
  RECHUB_CHECK_SHAPE(weights.ndim() == 3, op, ": weights ", weights.shape().str(), " must be [B, K, L]");
  const std::int64_t K = weights.dim(1);
  RECHUB_CHECK_SHAPE(H.ndim() == 3 || (H.ndim() == 4 && H.dim(2) == K), op, ": hat ", H.shape().str(),
                     " must be [B, L, D] or [B, L, K, D] with K = ", K);
  const detail::CapsuleDims d{H.dim(0), H.dim(1), K, H.dim(-1), H.ndim() == 3};
  RECHUB_CHECK_SHAPE(weights.dim(0) == d.B && weights.dim(2) == d.L, op, ": weights ", weights.shape().str(),
                     " do not match hat ", H.shape().str());
  Var out = detail::make_output(op, Shape{d.B, d.K, d.D}, DType::f32, hat);
  float* w = step_arena().tensor(weights.shape()).f32();
  std::memcpy(w, weights.f32(), weights.nbytes());
  float* z = step_arena().tensor({d.B, d.K, d.D}).f32();
  const float* ph = H.f32();
  float* pv = out.value().f32();
  const std::int64_t row_hat = d.shared ? d.L * d.D : d.L * d.K * d.D;
  for (std::int64_t r = 0; r < d.B; ++r)
    for (std::int64_t k = 0; k < d.K; ++k) {
      float* zk = z + (r * d.K + k) * d.D;
      for (std::int64_t j = 0; j < d.D; ++j) zk[j] = 0.0f;
      for (std::int64_t l = 0; l < d.L; ++l) {
        const float* h = ph + r * row_hat + l * d.pos_stride() + k * d.cap_stride();
        for (std::int64_t j = 0; j < d.D; ++j) zk[j] += w[(r * d.K + k) * d.L + l] * h[j];
      }
      float n = 0.0f;
      for (std::int64_t j = 0; j < d.D; ++j) n += zk[j] * zk[j];
      const float s = detail::squash_scale(n);
      for (std::int64_t j = 0; j < d.D; ++j) pv[(r * d.K + k) * d.D + j] = s * zk[j];
    }
  detail::record(out, [hat, out, d, w, z] { detail::capsule_backward(d, w, z, out.grad().f32(), hat.grad_acc().f32()); });
  return out;
}

/// ComiRec-DR's per-position bilinear map: y[b, l] = W[l] x[b, l] -> [B, L, N].
inline Var position_bilinear(const Var& x, const Var& weight) {
  const char* op = "position_bilinear";
  const Tensor &X = x.value(), &W = weight.value();
  detail::check_cpu(op, X, W);
  detail::check_f32(op, X, "x");
  detail::check_f32(op, W, "weight");
  const bool w4 = W.ndim() == 4;
  RECHUB_CHECK_SHAPE(X.ndim() == 3 && (W.ndim() == 3 || (w4 && W.dim(0) == 1)), op, ": x ", X.shape().str(),
                     " and weight ", W.shape().str(), " must be [B, L, D] and [L, N, D] (or [1, L, N, D])");
  const std::int64_t B = X.dim(0), L = X.dim(1), D = X.dim(2);
  const std::int64_t WL = W.dim(w4 ? 1 : 0), N = W.dim(-2);
  RECHUB_CHECK_SHAPE(W.dim(-1) == D && L <= WL, op, ": x ", X.shape().str(), " does not match weight ",
                     W.shape().str(), " (expects last dim ", D, " and at most ", WL, " positions)");
  Var out = detail::make_output(op, Shape{B, L, N}, DType::f32, x, weight);
  const float *px = X.f32(), *pw = W.f32();
  float* py = out.value().f32();
  parallel_for(L, B * N * D, [&](std::int64_t s, std::int64_t e) {
    for (std::int64_t l = s; l < e; ++l)
      detail::gemm_serial(false, true, B, N, D, 1.0f, px + l * D, L * D, pw + l * N * D, D, 0.0f, py + l * N, L * N);
  });
  detail::record(out, [x, weight, out, B, L, D, N] {
    const float *dy = out.grad().f32(), *px = x.value().f32(), *pw = weight.value().f32();
    float* dx = x.requires_grad() ? x.grad_acc().f32() : nullptr;
    float* dw = weight.requires_grad() ? weight.grad_acc().f32() : nullptr;
    parallel_for(L, 2 * B * N * D, [&](std::int64_t s, std::int64_t e) {
      for (std::int64_t l = s; l < e; ++l) {
        if (dx) detail::gemm_serial(false, false, B, D, N, 1.0f, dy + l * N, L * N, pw + l * N * D, D, 1.0f, dx + l * D, L * D);
        if (dw) detail::gemm_serial(true, false, N, D, B, 1.0f, dy + l * N, L * N, px + l * D, L * D, 1.0f, dw + l * N * D, D);
      }
    });
  });
  return out;
}

}  // namespace rechub
