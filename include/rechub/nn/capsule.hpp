#pragma once
// CapsuleNetwork: Torch-RecHub's multi-interest capsule layer (torch_rechub/basic/layers.py),
// the interest extractor of MIND (bilinear_type 0) and ComiRec-DR (bilinear_type 2).
//
//   seq [B, L, D] (history item embeddings), mask int32 [B, L] (the ids; nonzero = an item)
//   bilinear_type 0  hat_l = W x_l, one map shared by all interests   W "linear.weight" [D, D]
//                    (torch Linear init U(+-1/sqrt(D))); initial routing logits ~ N(0, 1)
//   bilinear_type 1  hat_lk = W_k x_l  (one Linear to K*D)             "linear.weight" [K*D, D]
//   bilinear_type 2  hat_lk = W_lk x_l (a map per position and interest) "w" [1, seq_len, K*D, D]
//                    Torch-RecHub allocates it uninitialised (torch.Tensor(...)); we draw
//                    N(0, init_std), ComiRec's original initialiser (tf random_normal, std 1).
//                    In practice torch hands out ~99% zeros there (a fresh process: 99.2%),
//                    and at W = 0 the squash's gradient vanishes, so Torch-RecHub's ComiRec-DR
//                    trains on its user features alone: init_std 0 reproduces it (the
//                    torch-rechub recipe; ML-100K Hit@100 0.292 vs its 0.286, vs 0.143 at std 1).
//   types 1 and 2 start routing from zero logits; routing is ops/capsule.hpp's capsule_routing.
// Torch-RecHub's optional ReLU layer after routing (relu_layer, default off, unused by its
// models) is not provided.
//
// MIND's random initial logits: Torch-RecHub draws torch.randn on every forward, in training and
// at inference alike. We draw N(0, 1) too: in training from the layer's own stream (seeded by
// Options::seed, one draw per call); in eval mode per row from a seed hashed from the row's ids,
// so the same history always embeds to the same interests, whatever the batch it comes in.
#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>

#include "rechub/core/rng.hpp"
#include "rechub/nn/module.hpp"
#include "rechub/ops/capsule.hpp"
#include "rechub/ops/matmul.hpp"
#include "rechub/ops/shape.hpp"

namespace rechub {

namespace detail {
/// n standard normals into out (Box-Muller on Eigen's vectorised log/sqrt/sin/cos).
inline void fill_normal(float* out, std::int64_t n, Rng& rng) {
  constexpr std::int64_t kChunk = 256;
  alignas(64) float u1[kChunk / 2], u2[kChunk / 2];
  using Arr = Eigen::Array<float, Eigen::Dynamic, 1>;
  for (std::int64_t off = 0; off < n; off += kChunk) {
    const std::int64_t m = std::min(kChunk, n - off), h = (m + 1) / 2;
    for (std::int64_t i = 0; i < h; ++i) {
      u1[i] = 1.0f - static_cast<float>(rng.next_u64() >> 40) * (1.0f / 16777216.0f);  // (0, 1]
      u2[i] = static_cast<float>(rng.next_u64() >> 40) * (6.2831853f / 16777216.0f);    // [0, 2 pi)
    }
    Eigen::Map<Arr> r(u1, h), t(u2, h);
    r = (-2.0f * r.log()).sqrt();
    Eigen::Map<Arr>(out + off, h) = r * t.cos();
    const std::int64_t rest = m - h;
    Eigen::Map<Arr>(out + off + h, rest) = r.head(rest) * t.head(rest).sin();
  }
}
/// A seed from a row of ids (FNV-1a over their bytes, then splitmix-style mixing).
inline std::uint64_t ids_seed(const std::int32_t* ids, std::int64_t n, std::uint64_t salt) {
  std::uint64_t h = 1469598103934665603ull ^ salt;
  for (std::int64_t i = 0; i < n; ++i) {
    h ^= static_cast<std::uint32_t>(ids[i]);
    h *= 1099511628211ull;
  }
  h ^= h >> 31;
  h *= 0xBF58476D1CE4E5B9ull;
  return h ^ (h >> 29);
}
}  // namespace detail

/// Torch-RecHub's CapsuleNetwork: history embeddings [B, L, D] -> interest capsules [B, K, D].
class CapsuleNetwork : public Module {
 public:
  struct Options {
    int bilinear_type = 2;      // 0 MIND, 1 one Linear to K*D, 2 ComiRec-DR
    int interest_num = 4;
    int routing_times = 3;
    float init_std = 1.0f;      // bilinear_type 2's maps ~ N(0, init_std)
    std::uint64_t seed = 2022;  // MIND's random routing logits
  };

  CapsuleNetwork(std::int64_t embedding_dim, std::int64_t seq_len, Options o, Rng& init_rng = global_rng())
      : D_(embedding_dim), seq_len_(seq_len), o_(o), logit_rng_(o.seed) {
    RECHUB_CHECK_AS(ConfigError, o.bilinear_type >= 0 && o.bilinear_type <= 2,
                    "CapsuleNetwork: bilinear_type must be 0, 1 or 2, got ", o.bilinear_type);
    RECHUB_CHECK_AS(ConfigError, D_ >= 1 && seq_len_ >= 1 && o.interest_num >= 1 && o.routing_times >= 1,
                    "CapsuleNetwork: embedding_dim, seq_len, interest_num and routing_times must be >= 1, got ",
                    D_, ", ", seq_len_, ", ", o.interest_num, ", ", o.routing_times);
    const std::int64_t K = o.interest_num;
    if (o.bilinear_type == 2) {
      Tensor w = Tensor::empty({1, seq_len_, K * D_, D_});
      for (std::int64_t i = 0; i < w.numel(); ++i) w.f32()[i] = init_rng.normal(0.0f, o.init_std);
      weight_.set(std::move(w));
      register_parameter("w", weight_);
    } else {
      const std::int64_t out = o.bilinear_type == 0 ? D_ : K * D_;
      Tensor w = Tensor::empty({out, D_});
      const float bound = 1.0f / std::sqrt(static_cast<float>(D_));  // torch Linear: kaiming_uniform(a = sqrt 5)
      for (std::int64_t i = 0; i < w.numel(); ++i) w.f32()[i] = init_rng.uniform(-bound, bound);
      weight_.set(std::move(w));
      register_parameter("linear.weight", weight_);
    }
  }

  /// Interest capsules [B, K, D] of `seq` [B, L, D] under `mask` [B, L]. `init_logits` [B, K, L]
  /// overrides the initial routing logits (tests pass MIND's random ones explicitly).
  Var forward(const Var& seq, const Tensor& mask, const Tensor& init_logits = Tensor()) {
    RECHUB_CHECK_SHAPE(seq.ndim() == 3 && seq.dim(2) == D_, "CapsuleNetwork: input ", seq.shape().str(),
                       " must be [B, L, ", D_, "]");
    const std::int64_t B = seq.dim(0), L = seq.dim(1), K = o_.interest_num;
    if (o_.bilinear_type == 0) {  // hat = linear(seq, W), routed without forming it
      const Tensor init = init_logits.defined() ? init_logits : random_logits(mask, B, L);
      return capsule_routing_mapped(seq, weight_, mask, o_.interest_num, init, o_.routing_times);
    }
    Var hat = o_.bilinear_type == 1 ? reshape(linear(seq, weight_), Shape{B, L, K, D_})  // [B, L, K, D]
                                    : reshape(position_bilinear(seq, weight_), Shape{B, L, K, D_});
    return capsule_routing(hat, mask, o_.interest_num, init_logits, o_.routing_times);
  }

  const Options& options() const { return o_; }
  std::int64_t embedding_dim() const { return D_; }
  std::int64_t seq_len() const { return seq_len_; }
  Parameter& weight() { return weight_; }

 private:
  /// N(0, 1) logits [B, K, L] in the step arena (see the header comment for the seeding).
  Tensor random_logits(const Tensor& mask, std::int64_t B, std::int64_t L) {
    RECHUB_CHECK_SHAPE(mask.ndim() == 2 && mask.dim(0) == B && mask.dim(1) == L && mask.dtype() == DType::i32,
                       "CapsuleNetwork: mask ", mask.shape().str(), " must be int32 [", B, ", ", L, "]");
    const std::int64_t K = o_.interest_num;
    Tensor t = step_arena().tensor({B, K, L});
    float* p = t.f32();
    const bool training = is_training();
    const Rng batch(training ? logit_rng_.next_u64() : 0);
    const std::int32_t* ids = mask.i32();
    const std::uint64_t salt = o_.seed;
    parallel_for(B, 40 * K * L, [&](std::int64_t s, std::int64_t e) {
      for (std::int64_t b = s; b < e; ++b) {
        Rng r = training ? batch.fork(static_cast<std::uint64_t>(b)) : Rng(detail::ids_seed(ids + b * L, L, salt));
        detail::fill_normal(p + b * K * L, K * L, r);
      }
    });
    return t;
  }

  std::int64_t D_, seq_len_;
  Options o_;
  Rng logit_rng_;
  Parameter weight_;
};

}  // namespace rechub
