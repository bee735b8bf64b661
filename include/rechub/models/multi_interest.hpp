#pragma once
// MultiInterestModel: what MIND, ComiRec-DR and ComiRec-SA share, as Torch-RecHub builds them
// (torch_rechub/models/matching/mind.py, comirec.py):
//
//   H      = e(hist) [B, L, D] (concat pooling, the item table), mask = hist ids != 0
//   I      = extractor(H, mask)                      [B, K, D]   capsules (MIND, DR) or self-attention (SA)
//   u_k    = normalize( [e(user features) | I_k] W ) [B, K, D]   W "convert_user_weight" [sum dims, D],
//                                                                 torch.rand: U[0, 1)
//   v      = normalize(e(item)),  V- = normalize(e(neg_items))    the item table itself, no item tower
// Training (label-aware selection): the row's vector is the interest closest to its positive item,
//   u* = u_argmax_k <u_k, v+>   (gradient through the selected interest only, torch.argmax ties to
//   the first), scored against [v+, V-] (Torch-RecHub: list-wise softmax, no temperature applied).
// label_aware = "soft" is the MIND paper's label-aware attention instead, u* = sum_k a_k u_k with
//   a = softmax_k(pow_p * <u_k, v+>): the paper's pow(<u_k, v+>, p) sharpening written as a scale,
//   which stays defined for the negative scores cosine vectors give (p -> inf is the hard choice).
// Serving: all K vectors ([B, K, D]; [B, D] when interest_num is 1), merged at retrieval.
//
// Torch-RecHub's examples pass temperature = 0.02 but its forward never divides by it: the
// default config sets 1.0 (the scores are cosines), like DSSM's.
// JSON: {"user_features": [...], "history_features": [one concat sequence feature],
//        "item_features": [...], "neg_item_features": [...], "interest_num": 4, "max_length": 50,
//        "temperature": 1.0, "routing_times": 3, "hidden_dim": 0, "dr_init_std": 1.0,
//        "label_aware": "hard", "pow_p": 1.0, "seed": 2022}.
#include <array>
#include <string>
#include <utility>
#include <vector>

#include "rechub/models/feature_schema.hpp"
#include "rechub/models/match_model.hpp"
#include "rechub/ops/elementwise.hpp"
#include "rechub/ops/index.hpp"
#include "rechub/ops/matmul.hpp"
#include "rechub/ops/norm.hpp"
#include "rechub/ops/score.hpp"
#include "rechub/ops/shape.hpp"
#include "rechub/ops/softmax.hpp"

namespace rechub {

struct MultiInterestConfig {
  std::vector<Feature> user_features;      // concatenated to every interest (may be empty)
  std::vector<Feature> history_features;   // exactly one SequenceFeature (pooling "concat")
  std::vector<Feature> item_features;      // the item id (SparseFeature)
  std::vector<Feature> neg_item_features;  // "neg_items" (concat, shared with the item id); may be empty
  int interest_num = 4;
  std::int64_t max_length = 50;            // history length the per-position maps are built for (DR)
  float temperature = 1.0f;                // the objective's score scale 1/T
  int routing_times = 3;                   // MIND, ComiRec-DR
  std::int64_t hidden_dim = 0;             // ComiRec-SA attention width (0 = 4 * embed_dim)
  float dr_init_std = 1.0f;                // ComiRec-DR's per-position maps ~ N(0, std)
  std::string label_aware = "hard";        // "hard" (Torch-RecHub) or "soft" (MIND paper)
  float pow_p = 1.0f;                      // "soft": the attention's sharpness
  std::uint64_t seed = 2022;               // MIND's random routing logits

  /// Torch-RecHub's example features: user id + profile (sparse), the history sharing the item
  /// table, the item id, list-wise negatives; every embedding `embed_dim` wide.
  static MultiInterestConfig from_schema(const FeatureSchema& s, int embed_dim) {
    MultiInterestConfig c;
    c.user_features = s.user_sparse(embed_dim);
    c.history_features = {s.history(embed_dim, "concat")};
    c.item_features = {SparseFeature(s.item_col, s.item_vocab, embed_dim)};
    c.neg_item_features = {SequenceFeature("neg_items", s.item_vocab, embed_dim, "concat", s.item_col)};
    return c;
  }
};

inline void to_json(nlohmann::json& j, const MultiInterestConfig& c) {
  j = {{"user_features", c.user_features},
       {"history_features", c.history_features},
       {"item_features", c.item_features},
       {"neg_item_features", c.neg_item_features},
       {"interest_num", c.interest_num},
       {"max_length", c.max_length},
       {"temperature", c.temperature},
       {"routing_times", c.routing_times},
       {"hidden_dim", c.hidden_dim},
       {"dr_init_std", c.dr_init_std},
       {"label_aware", c.label_aware},
       {"pow_p", c.pow_p},
       {"seed", c.seed}};
}
inline void from_json(const nlohmann::json& j, MultiInterestConfig& c) {
  const std::string ctx = "multi-interest config";
  RECHUB_CHECK_AS(ConfigError, j.is_object(), ctx, ": expects an object, got ", j.dump());
  MultiInterestConfig d;
  c.user_features = j.contains("user_features") ? j.at("user_features").get<std::vector<Feature>>()
                                                 : std::vector<Feature>{};
  c.history_features = detail::json_get<std::vector<Feature>>(j, "history_features", ctx);
  c.item_features = detail::json_get<std::vector<Feature>>(j, "item_features", ctx);
  c.neg_item_features = j.contains("neg_item_features") ? j.at("neg_item_features").get<std::vector<Feature>>()
                                                         : std::vector<Feature>{};
  c.interest_num = j.value("interest_num", d.interest_num);
  c.max_length = j.value("max_length", d.max_length);
  c.temperature = j.value("temperature", d.temperature);
  c.routing_times = j.value("routing_times", d.routing_times);
  c.hidden_dim = j.value("hidden_dim", d.hidden_dim);
  c.dr_init_std = j.value("dr_init_std", d.dr_init_std);
  c.label_aware = j.value("label_aware", d.label_aware);
  c.pow_p = j.value("pow_p", d.pow_p);
  c.seed = j.value("seed", d.seed);
}

/// Label-aware selection shared by the multi-interest models: the [B, D] training vector of
/// interests `u` [B, K, D] for positives `pos` [B, D] ("hard": argmax; "soft": attention, p).
inline Var label_aware_select(const Var& u, const Var& pos, const std::string& mode, float pow_p) {
  RECHUB_CHECK_SHAPE(u.ndim() == 3 && pos.ndim() == 2 && pos.dim(0) == u.dim(0) && pos.dim(1) == u.dim(2),
                     "label_aware_select: interests ", u.shape().str(), " and positives ", pos.shape().str(),
                     " do not match (expects [B, K, D] and [B, D])");
  const std::int64_t B = u.dim(0), K = u.dim(1), D = u.dim(2);
  if (mode == "soft") {
    Var a = softmax(group_dot(pos, u, pow_p));                    // [B, K]
    return reshape(matmul(reshape(a, Shape{B, 1, K}), u), Shape{B, D});
  }
  RECHUB_CHECK_AS(ConfigError, mode == "hard", "label_aware_select: mode '", mode, "' is not one of hard, soft");
  Tensor idx = step_arena().tensor({B}, DType::i32);
  const float *pu = u.value().f32(), *pp = pos.value().f32();
  std::int32_t* pi = idx.i32();
  for (std::int64_t b = 0; b < B; ++b) {
    float best = 0.0f;
    std::int32_t arg = 0;
    for (std::int64_t k = 0; k < K; ++k) {
      float dot = 0.0f;
      for (std::int64_t j = 0; j < D; ++j) dot += pu[(b * K + k) * D + j] * pp[b * D + j];
      if (k == 0 || dot > best) best = dot, arg = static_cast<std::int32_t>(k);  // first maximum, as torch.argmax
    }
    pi[b] = arg;
  }
  return select_rows(u, idx);
}

/// Base of MIND, ComirecDR and ComirecSA (see the header comment); subclasses supply interests().
class MultiInterestModel : public MatchModel {
 public:
  explicit MultiInterestModel(MultiInterestConfig cfg)
      : cfg_(std::move(cfg)), embedding_(all_features(cfg_)), D_(check_and_embed_dim(cfg_)) {
    register_module("embedding", embedding_);
    serving_user_features_ = cfg_.user_features;
    serving_user_features_.push_back(cfg_.history_features[0]);
    const std::int64_t user_dims = sum_embed_dims(cfg_.user_features) + D_;
    Tensor w = Tensor::empty({user_dims, D_});
    for (std::int64_t i = 0; i < w.numel(); ++i) w.f32()[i] = global_rng().uniform(0.0f, 1.0f);
    convert_user_weight_.set(std::move(w));
    register_parameter("convert_user_weight", convert_user_weight_);
  }

  /// Interests [B, K, D] of history embeddings `seq` [B, L, D] under `mask` (the history ids).
  virtual Var interests(const Var& seq, const Tensor& mask) = 0;

  /// [B, K, D] unit vectors ([B, D] when interest_num is 1).
  Var user_tower(const Batch& batch) override {
    const Feature& hist = cfg_.history_features[0];
    const Tensor& mask = batch[feature_name(hist)];
    Var seq = embedding_.embed(batch, hist);  // [B, L, D], zero at padding
    RECHUB_CHECK_SHAPE(seq.ndim() == 3, name(), ": history feature '", feature_name(hist),
                       "' must use concat pooling (gives ", seq.shape().str(), ")");
    Var I = interests(seq, mask);
    const std::int64_t B = I.dim(0), K = I.dim(1);
    Var x = I;
    if (!cfg_.user_features.empty()) {
      Var uf = embedding_.forward(batch, cfg_.user_features, true);  // [B, sum dims]
      x = concat({expand(uf, 1, K), I}, 2);
    }
    Var u = l2_normalize(reshape(matmul(reshape(x, Shape{B * K, x.dim(2)}), convert_user_weight_), Shape{B, K, D_}));
    return K == 1 ? reshape(u, Shape{B, D_}) : u;
  }
  Var item_tower(const Batch& batch) override {
    return l2_normalize(embedding_.forward(batch, cfg_.item_features, true));
  }
  Var neg_item_tower(const Batch& batch) override {
    RECHUB_CHECK_AS(ConfigError, !cfg_.neg_item_features.empty(), name(),
                    ": no neg_item_features configured (train it with in-batch negatives)");
    Var e = embedding_.embed(batch, cfg_.neg_item_features[0]);  // [B, k, D] (or [B, D] for one negative)
    if (e.ndim() == 2) e = unsqueeze(e, 1);
    return l2_normalize(e);
  }
  Var train_user_tower(const Batch& batch, const Var& pos) override {
    Var u = user_tower(batch);
    if (cfg_.interest_num == 1) return u;
    return label_aware_select(u, pos, cfg_.label_aware, cfg_.pow_p);
  }
  int interest_num() const override { return cfg_.interest_num; }
  float temperature() const override { return cfg_.temperature; }
  const std::vector<Feature>& user_features() const override { return serving_user_features_; }
  const std::vector<Feature>& item_features() const override { return cfg_.item_features; }
  nlohmann::json config() const override {
    nlohmann::json j = cfg_;
    j["model"] = name();
    return j;
  }
  const MultiInterestConfig& multi_interest_config() const { return cfg_; }
  EmbeddingLayer& embedding() { return embedding_; }
  std::int64_t embed_dim() const { return D_; }

 protected:
  MultiInterestConfig cfg_;
  EmbeddingLayer embedding_;
  std::int64_t D_;

 private:
  static std::vector<Feature> all_features(const MultiInterestConfig& c) {
    std::vector<Feature> all = c.user_features;
    all.insert(all.end(), c.item_features.begin(), c.item_features.end());
    all.insert(all.end(), c.history_features.begin(), c.history_features.end());
    all.insert(all.end(), c.neg_item_features.begin(), c.neg_item_features.end());
    return all;
  }
  static std::int64_t check_and_embed_dim(const MultiInterestConfig& c) {
    RECHUB_CHECK_AS(ConfigError, c.history_features.size() == 1 && std::holds_alternative<SequenceFeature>(c.history_features[0]),
                    "multi-interest model: history_features must hold exactly one sequence feature, got ",
                    c.history_features.size(), " feature(s)");
    RECHUB_CHECK_AS(ConfigError, std::get<SequenceFeature>(c.history_features[0]).pooling == "concat",
                    "multi-interest model: history feature '", feature_name(c.history_features[0]),
                    "' must use pooling \"concat\", got \"", std::get<SequenceFeature>(c.history_features[0]).pooling,
                    "\"");
    RECHUB_CHECK_AS(ConfigError, c.item_features.size() == 1 && std::holds_alternative<SparseFeature>(c.item_features[0]),
                    "multi-interest model: item_features must hold exactly one sparse feature (the item id)");
    const int D = feature_embed_dim(c.history_features[0]);
    RECHUB_CHECK_AS(ConfigError, feature_embed_dim(c.item_features[0]) == D, "multi-interest model: item embed_dim ",
                    feature_embed_dim(c.item_features[0]), " differs from the history's ", D);
    RECHUB_CHECK_AS(ConfigError, c.neg_item_features.size() <= 1, "multi-interest model: at most one negative feature, got ",
                    c.neg_item_features.size());
    for (const auto& f : c.user_features)
      RECHUB_CHECK_AS(ConfigError, !std::holds_alternative<SequenceFeature>(f) ||
                                       std::get<SequenceFeature>(f).pooling != "concat",
                      "multi-interest model: user feature '", feature_name(f), "' must embed to one vector per row");
    RECHUB_CHECK_AS(ConfigError, c.interest_num >= 1, "multi-interest model: interest_num must be >= 1, got ",
                    c.interest_num);
    RECHUB_CHECK_AS(ConfigError, c.temperature > 0, "multi-interest model: temperature must be > 0, got ",
                    c.temperature);
    RECHUB_CHECK_AS(ConfigError, c.label_aware == "hard" || c.label_aware == "soft",
                    "multi-interest model: label_aware '", c.label_aware, "' is not one of hard, soft");
    return D;
  }

  Parameter convert_user_weight_;
  std::vector<Feature> serving_user_features_;
};

}  // namespace rechub
