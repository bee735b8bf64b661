#pragma once
// Matching scores between user and item vectors, fused (PyTorch does mul + sum, two kernels).
//
//   row_dot(u [B,D], v [B,D])        -> s [B],    s_b = <u_b, v_b>
//       du_b += ds_b v_b,  dv_b += ds_b u_b
//   group_dot(u [B,D], v [B,K,D])    -> s [B,K],  s_bk = <u_b, v_bk>   (one positive + k negatives)
//       du_b += sum_k ds_bk v_bk,  dv_bk += ds_bk u_b
// The optional `scale` multiplies every score (1 / temperature) and its gradient alike.
#include <cstdint>

#include "rechub/ops/dispatch.hpp"

namespace rechub {

/// s[b] = scale * <u[b], v[b]>.
inline Var row_dot(const Var& u, const Var& v, float scale = 1.0f) {
  const Tensor &U = u.value(), &V = v.value();
  detail::check_cpu("row_dot", U, V);
  RECHUB_CHECK_SHAPE(U.ndim() == 2 && U.shape() == V.shape(), "row_dot: operands must both be [B, D], got ",
                     U.shape().str(), " and ", V.shape().str());
  const std::int64_t B = U.dim(0), D = U.dim(1);
  Var out = detail::make_output("row_dot", {B}, DType::f32, u, v);
  const float *pu = U.f32(), *pv = V.f32();
  float* s = out.value().f32();
  parallel_for(B, D, [&](std::int64_t b0, std::int64_t b1) {
    for (std::int64_t b = b0; b < b1; ++b) {
      float acc = 0;
      for (std::int64_t d = 0; d < D; ++d) acc += pu[b * D + d] * pv[b * D + d];
      s[b] = scale * acc;
    }
  });
  detail::record(out, [u, v, out, B, D, scale] {
    const float* ds = out.grad().f32();
    const float *pu = u.value().f32(), *pv = v.value().f32();
    // A first gradient is stored, not added to zeros filled on one thread (Var::grad_for_write).
    // u and v may be one Var: then dv's pass sees du's stored values and adds.
    bool store_u = false, store_v = false;
    float* du = u.requires_grad() ? u.grad_for_write(store_u).f32() : nullptr;
    float* dv = v.requires_grad() ? v.grad_for_write(store_v).f32() : nullptr;
    parallel_for(B, 2 * D, [&](std::int64_t b0, std::int64_t b1) {
      for (std::int64_t b = b0; b < b1; ++b) {
        const float g = scale * ds[b];
        // d = g o (store) or d += g o, for one operand's row.
        auto send = [&](float* d, const float* o, bool store) {
          if (store)
            for (std::int64_t k = 0; k < D; ++k) d[k] = g * o[k];
          else
            for (std::int64_t k = 0; k < D; ++k) d[k] += g * o[k];
        };
        if (du) send(du + b * D, pv + b * D, store_u);
        if (dv) send(dv + b * D, pu + b * D, store_v);
      }
    });
  });
  return out;
}

/// s[b, k] = scale * <u[b], v[b, k]>: a user against its own K candidate items.
inline Var group_dot(const Var& u, const Var& v, float scale = 1.0f) {
  const Tensor &U = u.value(), &V = v.value();
  detail::check_cpu("group_dot", U, V);
  RECHUB_CHECK_SHAPE(U.ndim() == 2 && V.ndim() == 3 && V.dim(0) == U.dim(0) && V.dim(2) == U.dim(1),
                     "group_dot: expects u [B, D] and v [B, K, D], got ", U.shape().str(), " and ", V.shape().str());
  const std::int64_t B = U.dim(0), D = U.dim(1), K = V.dim(1);
  Var out = detail::make_output("group_dot", {B, K}, DType::f32, u, v);
  const float *pu = U.f32(), *pv = V.f32();
  float* s = out.value().f32();
  parallel_for(B, K * D, [&](std::int64_t b0, std::int64_t b1) {
    for (std::int64_t b = b0; b < b1; ++b)
      for (std::int64_t k = 0; k < K; ++k) {
        const float* vk = pv + (b * K + k) * D;
        float acc = 0;
        for (std::int64_t d = 0; d < D; ++d) acc += pu[b * D + d] * vk[d];
        s[b * K + k] = scale * acc;
      }
  });
  detail::record(out, [u, v, out, B, D, K, scale] {
    const float* ds = out.grad().f32();
    const float *pu = u.value().f32(), *pv = v.value().f32();
    float* du = u.requires_grad() ? u.grad_acc().f32() : nullptr;
    float* dv = v.requires_grad() ? v.grad_acc().f32() : nullptr;
    parallel_for(B, 2 * K * D, [&](std::int64_t b0, std::int64_t b1) {
      for (std::int64_t b = b0; b < b1; ++b)
        for (std::int64_t k = 0; k < K; ++k) {
          const float g = scale * ds[b * K + k];
          const float* vk = pv + (b * K + k) * D;
          for (std::int64_t d = 0; d < D; ++d) {
            if (du) du[b * D + d] += g * vk[d];
            if (dv) dv[(b * K + k) * D + d] += g * pu[b * D + d];
          }
        }
    });
  });
  return out;
}

}  // namespace rechub
