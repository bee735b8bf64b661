#pragma once
// NARM (Li et al., CIKM'17, "Neural Attentive Session-based Recommendation") as Torch-RecHub
// builds it (torch_rechub/models/matching/narm.py):
//   e_j = dropout(E[x_j])                              item embeddings of the history, E [V, D]
//   h_1..h_n = GRU(e)  (1 layer, hidden H, bias)       over the valid steps only
//   c_g = h_n                                          global encoder: the last state
//   q_j = v^T sigmoid(A_1 h_n + A_2 h_j)               local encoder: attention over the states
//   alpha = softmax over the valid j of q              (Torch-RecHub: exp(q) * mask / sum)
//   c_l = sum_j alpha_j h_j
//   u = B dropout([c_g; c_l])                          bilinear decoder, B [D, 2H]
//   score(i) = <u, E[i]>                               item vectors are the same table E
// Parameter names as its state_dict: item_emb.weight, gru.weight_ih_l0, gru.weight_hh_l0,
// gru.bias_ih_l0, gru.bias_hh_l0, a_1 [H, H], a_2 [H, H], v [H, 1], b [D, 2H]; init as there:
// E ~ N(0, 1) with row 0 (padding) zero, a_1, a_2, v, b ~ N(0, 1), the GRU as torch.
// Its example (examples/matching/run_sbr.py): D = 100, H = 50, dropouts 0.25 / 0.5, full softmax
// over every item (loss "full" here), Adam lr 1e-3, batch 512.
//
// Where Torch-RecHub departs from the paper:
//  * The paper weights the states by the raw alpha_j = v^T sigmoid(...) (no normalisation);
//    Torch-RecHub normalises exp(q) over the valid positions (a softmax). variant "paper" uses
//    the raw weights.
//  * Its padding handling assumes post-padding: pack_padded_sequence takes the first count
//    positions while the mask is (ids != 0), so pre-padded histories feed padding to the GRU;
//    and pad_packed_sequence returns max(count) positions, which only matches the [B, L] mask when
//    some row of the batch is full. Here both paddings give the same result (a row's valid run is
//    found from its ids) and a row without history gives c = 0 (Torch-RecHub: NaN).
#include <algorithm>
#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include "rechub/models/feature_schema.hpp"
#include "rechub/models/match_model.hpp"
#include "rechub/nn/activation.hpp"
#include "rechub/nn/gru.hpp"
#include "rechub/ops/activation.hpp"
#include "rechub/ops/elementwise.hpp"
#include "rechub/ops/index.hpp"
#include "rechub/ops/matmul.hpp"
#include "rechub/ops/shape.hpp"
#include "rechub/ops/softmax.hpp"

namespace rechub {

struct NARMConfig {
  SequenceFeature history_feature;          // the item history [B, L]; its vocab_size / embed_dim size E
  SparseFeature item_feature;               // the target item column (looked up in E)
  std::vector<Feature> neg_item_features;   // optional: sampled negatives [B, K] (looked up in E)
  std::int64_t hidden_dim = 50;
  float emb_dropout = 0.25f;
  float session_rep_dropout = 0.5f;
  std::string variant = "torch_rechub";     // or "paper": raw attention weights
};

inline nlohmann::json narm_json(const NARMConfig& c) {
  nlohmann::json j;
  j["history_feature"] = c.history_feature;
  j["item_feature"] = c.item_feature;
  j["neg_item_features"] = c.neg_item_features;
  j["hidden_dim"] = c.hidden_dim;
  j["emb_dropout"] = c.emb_dropout;
  j["session_rep_dropout"] = c.session_rep_dropout;
  j["variant"] = c.variant;
  return j;
}
inline NARMConfig narm_from_json(const nlohmann::json& j) {
  RECHUB_CHECK_AS(ConfigError, j.is_object() && j.contains("history_feature") && j.contains("item_feature"),
                  "narm: config needs \"history_feature\" and \"item_feature\"");
  NARMConfig c;
  c.history_feature = j.at("history_feature").get<SequenceFeature>();
  c.item_feature = j.at("item_feature").get<SparseFeature>();
  if (j.contains("neg_item_features")) c.neg_item_features = j.at("neg_item_features").get<std::vector<Feature>>();
  c.hidden_dim = j.value("hidden_dim", c.hidden_dim);
  c.emb_dropout = j.value("emb_dropout", c.emb_dropout);
  c.session_rep_dropout = j.value("session_rep_dropout", c.session_rep_dropout);
  c.variant = j.value("variant", c.variant);
  return c;
}

namespace detail {
/// N(0, std) entries, drawn in order.
inline Tensor session_normal_tensor(const Shape& s, float std, Rng& rng) {
  Tensor t = Tensor::empty(s);
  for (std::int64_t i = 0; i < t.numel(); ++i) t.f32()[i] = rng.normal(0.0f, std);
  return t;
}
/// Item vectors of a negatives column [B, K] (or [B]) -> [B, K, D] from table E.
inline Var session_negatives(const Var& table, const Batch& batch, const std::vector<Feature>& features,
                                const std::string& model) {
  RECHUB_CHECK_AS(ConfigError, features.size() == 1, model,
                  ": needs exactly one neg_item_features entry (train it with in-batch negatives or loss "
                  "\"full\" otherwise), got ",
                  features.size());
  const Tensor& ids = batch[feature_name(features[0])];
  detail::check_i32(model.c_str(), ids, feature_name(features[0]).c_str());
  return gather_rows(table, ids.ndim() == 1 ? ids.reshape({ids.dim(0), 1}) : ids);
}
/// An int32 mask as float32 (step arena), to weight by it.
inline Tensor session_mask_f32(const Tensor& m) {
  Tensor f = step_arena().tensor(m.shape());
  for (std::int64_t i = 0; i < m.numel(); ++i) f.f32()[i] = float(m.i32()[i]);
  return f;
}
}  // namespace detail

class NARM : public MatchModel {
 public:
  explicit NARM(NARMConfig cfg, Rng& rng = global_rng())
      : cfg_(check(std::move(cfg))),
        gru_(cfg_.history_feature.embed_dim, cfg_.hidden_dim, 1, true, init_embedding(rng)),
        emb_dropout_(cfg_.emb_dropout),
        rep_dropout_(cfg_.session_rep_dropout) {
    const std::int64_t H = cfg_.hidden_dim, D = cfg_.history_feature.embed_dim;
    a_1.set(detail::session_normal_tensor({H, H}, 1.0f, rng));
    a_2.set(detail::session_normal_tensor({H, H}, 1.0f, rng));
    v.set(detail::session_normal_tensor({H, 1}, 1.0f, rng));
    b.set(detail::session_normal_tensor({D, 2 * H}, 1.0f, rng));
    register_parameter("item_emb.weight", item_emb);
    register_module("gru", gru_);
    register_parameter("a_1", a_1);
    register_parameter("a_2", a_2);
    register_parameter("v", v);
    register_parameter("b", b);
    register_module("emb_dropout", emb_dropout_);
    register_module("session_rep_dropout", rep_dropout_);
  }

  std::string name() const override { return "narm"; }

  /// Torch-RecHub's run_sbr.py settings: embed 100, hidden 50, dropouts 0.25 / 0.5 (full softmax).
  static NARMConfig default_config(const FeatureSchema& s, int embed_dim = 100, std::int64_t hidden_dim = 50) {
    NARMConfig c;
    c.history_feature = s.history(embed_dim, "concat");
    c.item_feature = SparseFeature(s.item_col, s.item_vocab, embed_dim);
    c.neg_item_features = {SequenceFeature("neg_items", s.item_vocab, embed_dim, "concat", s.item_col)};
    c.hidden_dim = hidden_dim;
    return c;
  }

  Var user_tower(const Batch& batch) override {
    const Tensor& ids = batch[cfg_.history_feature.name];
    detail::check_i32("narm", ids, cfg_.history_feature.name.c_str());
    RECHUB_CHECK_SHAPE(ids.ndim() == 2, "narm: history column '", cfg_.history_feature.name, "' ",
                       ids.shape().str(), " must be [B, L]");
    const std::int64_t B = ids.dim(0), L = ids.dim(1), H = cfg_.hidden_dim;
    SeqPack p = seq_pack_ids(ids);
    Var e = reshape(embedding_bag(item_emb, pack_ids(ids, p), BagMode::concat), Shape{p.T, item_emb.shape()[1]});
    Var hp = gru_.forward_packed(emb_dropout_.forward(e), p);  // [T, H]
    Var c_g = packed_last(hp, p);                              // [B, H]
    Var hs = unpack_sequence(hp, p);                           // [B, L, H], 0 at padding
    Var a2 = unpack_sequence(linear(hp, a_2), p);              // A_2 h_j, only on valid steps
    Var s = sigmoid(add(a2, unsqueeze(linear(c_g, a_1), 1)));  // [B, L, H]
    Var q = reshape(matmul(reshape(s, Shape{B * L, H}), v), Shape{B, 1, L});
    Tensor mask = pack_mask(p).reshape({B, 1, L});
    Var alpha = cfg_.variant == "paper" ? mul(q, constant(detail::session_mask_f32(mask))) : softmax(q, mask);  // [B, 1, L]
    Var c_l = reshape(matmul(alpha, hs), Shape{B, H});
    Var c = rep_dropout_.forward(concat({c_g, c_l}, 1));  // [B, 2H]
    return linear(c, b);                                  // c B^T: [B, D]
  }
  Var item_tower(const Batch& batch) override {
    const Tensor& ids = batch[cfg_.item_feature.name];
    detail::check_i32("narm", ids, cfg_.item_feature.name.c_str());
    return gather_rows(item_emb, ids.ndim() == 2 ? ids.reshape({ids.dim(0)}) : ids);
  }
  Var neg_item_tower(const Batch& batch) override {
    return detail::session_negatives(item_emb, batch, cfg_.neg_item_features, name());
  }

  const std::vector<Feature>& user_features() const override { return user_feats_; }
  const std::vector<Feature>& item_features() const override { return item_feats_; }
  const NARMConfig& narm_config() const { return cfg_; }
  GRU& gru() { return gru_; }
  nlohmann::json config() const override {
    nlohmann::json j = narm_json(cfg_);
    j["model"] = name();
    return j;
  }

  Parameter item_emb, a_1, a_2, v, b;

 private:
  static NARMConfig check(NARMConfig c) {
    RECHUB_CHECK_AS(ConfigError, c.hidden_dim > 0, "narm: hidden_dim must be positive, got ", c.hidden_dim);
    RECHUB_CHECK_AS(ConfigError, c.variant == "torch_rechub" || c.variant == "paper", "narm: variant '", c.variant,
                    "' is not one of torch_rechub, paper");
    RECHUB_CHECK_AS(ConfigError, c.item_feature.embed_dim == c.history_feature.embed_dim &&
                                     c.item_feature.vocab_size <= c.history_feature.vocab_size,
                    "narm: item feature '", c.item_feature.name, "' must share the history's table (embed_dim ",
                    c.history_feature.embed_dim, ", vocab_size <= ", c.history_feature.vocab_size, ")");
    return c;
  }
  /// E ~ N(0, 1) with the padding row zero (torch nn.Embedding(padding_idx=0)); drawn before the GRU.
  Rng& init_embedding(Rng& rng) {
    Tensor e = detail::session_normal_tensor({cfg_.history_feature.vocab_size, cfg_.history_feature.embed_dim}, 1.0f, rng);
    std::fill(e.f32(), e.f32() + e.dim(1), 0.0f);
    item_emb.set(std::move(e));
    return rng;
  }
  NARMConfig cfg_;
  std::vector<Feature> user_feats_{cfg_.history_feature};
  std::vector<Feature> item_feats_{cfg_.item_feature};
  GRU gru_;
  Dropout emb_dropout_, rep_dropout_;
};

}  // namespace rechub
