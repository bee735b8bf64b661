#pragma once
// SINE (Tan et al., WSDM'21, "Sparse-Interest Network for Sequential Recommendation") as
// Torch-RecHub builds it (torch_rechub/models/matching/sine.py):
//   user:  (phi, v) = SineExtractor(e(hist), mask)   K interests phi [B, K, D], aggregate v [B, D]
//   item:  e(item) and e(neg_items), the raw item table (no normalisation), "item_embedding.weight"
//          [num_items, D] ~ N(0, 1e-4)
//   training scores <v, [v+, V-]> (the aggregate is the training vector: train_user_tower).
// Serving: Torch-RecHub's inference embeds users with the aggregate v (inference = "aggregate",
// interest_num() 1, the default); inference = "interests" serves the K interests phi instead
// ([B, K, D], merged at retrieval, as multi-interest retrieval does).
// `temperature` is Torch-RecHub's, the aggregation softmax's; the scores themselves are not
// scaled in Torch-RecHub (score_temperature 1).
// Parameters keep Torch-RecHub's flat names (item_embedding.weight, concept_embedding.weight,
// position_embedding.weight, w_1 .. w_5, w_k1, w_k2): the extractor's are registered here.
//
// JSON: {"history_feature": "hist_movie_id", "item_feature": "movie_id", "neg_item_feature":
//        "neg_items", "num_items": n, "embedding_dim": 128, "hidden_dim": 512, "num_concept": 50,
//        "num_intention": 4, "seq_max_len": 20, "num_heads": 1, "temperature": 0.1,
//        "score_temperature": 1.0, "apt_norm_p": -1, "inference": "aggregate"}.
// apt_norm_p: the order of the next-intention vector's normalisation; Torch-RecHub's code
// F.normalize(x, -1) makes it -1 (see nn/sine_extractor.hpp), 2 is the paper's L2.
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "rechub/models/feature_schema.hpp"
#include "rechub/models/match_model.hpp"
#include "rechub/nn/sine_extractor.hpp"
#include "rechub/ops/index.hpp"
#include "rechub/ops/shape.hpp"

namespace rechub {

struct SINEConfig {
  std::string history_feature = "hist_movie_id";
  std::string item_feature = "movie_id";
  std::string neg_item_feature = "neg_items";  // "" = no sampled negatives
  std::int64_t num_items = 0;                  // item vocabulary, padding id 0 included
  std::int64_t embedding_dim = 128;
  std::int64_t hidden_dim = 512;
  std::int64_t num_concept = 50;
  int num_intention = 4;
  std::int64_t seq_max_len = 20;
  int num_heads = 1;
  float temperature = 0.1f;        // interest aggregation softmax
  float score_temperature = 1.0f;  // the objective's score scale
  float apt_norm_p = -1.0f;        // next-intention normalisation order (Torch-RecHub: -1; paper: 2)
  std::string inference = "aggregate";  // or "interests"
};

inline void to_json(nlohmann::json& j, const SINEConfig& c) {
  j = {{"history_feature", c.history_feature}, {"item_feature", c.item_feature},
       {"neg_item_feature", c.neg_item_feature}, {"num_items", c.num_items},
       {"embedding_dim", c.embedding_dim}, {"hidden_dim", c.hidden_dim},
       {"num_concept", c.num_concept}, {"num_intention", c.num_intention},
       {"seq_max_len", c.seq_max_len}, {"num_heads", c.num_heads},
       {"temperature", c.temperature}, {"score_temperature", c.score_temperature},
       {"apt_norm_p", c.apt_norm_p}, {"inference", c.inference}};
}
inline void from_json(const nlohmann::json& j, SINEConfig& c) {
  const std::string ctx = "SINE config";
  RECHUB_CHECK_AS(ConfigError, j.is_object(), ctx, ": expects an object, got ", j.dump());
  SINEConfig d;
  c.history_feature = j.value("history_feature", d.history_feature);
  c.item_feature = j.value("item_feature", d.item_feature);
  c.neg_item_feature = j.value("neg_item_feature", d.neg_item_feature);
  c.num_items = detail::json_get<std::int64_t>(j, "num_items", ctx);
  c.embedding_dim = j.value("embedding_dim", d.embedding_dim);
  c.hidden_dim = j.value("hidden_dim", d.hidden_dim);
  c.num_concept = j.value("num_concept", d.num_concept);
  c.num_intention = j.value("num_intention", d.num_intention);
  c.seq_max_len = j.value("seq_max_len", d.seq_max_len);
  c.num_heads = j.value("num_heads", d.num_heads);
  c.temperature = j.value("temperature", d.temperature);
  c.score_temperature = j.value("score_temperature", d.score_temperature);
  c.apt_norm_p = j.value("apt_norm_p", d.apt_norm_p);
  c.inference = j.value("inference", d.inference);
}

class SINE : public MatchModel {
 public:
  explicit SINE(SINEConfig cfg) : cfg_(std::move(cfg)), extractor_(extractor_options(cfg_)) {
    const std::int64_t D = cfg_.embedding_dim;
    Tensor w = Tensor::empty({cfg_.num_items, D});
    Rng& rng = global_rng();
    // Torch-RecHub creates the item table first; ours is drawn after the extractor's parameters.
    for (std::int64_t i = 0; i < w.numel(); ++i) w.f32()[i] = rng.normal(0.0f, 1e-4f);
    item_embedding_.set(std::move(w));
    register_parameter("item_embedding.weight", item_embedding_);
    for (auto& [n, p] : extractor_.named_parameters()) register_parameter(n, *p);
    user_features_ = {SequenceFeature(cfg_.history_feature, cfg_.num_items, static_cast<int>(D), "concat")};
    item_features_ = {SparseFeature(cfg_.item_feature, cfg_.num_items, static_cast<int>(D))};
  }
  std::string name() const override { return "sine"; }

  /// Serving vectors: the aggregate v [B, D] (inference "aggregate") or the interests [B, K, D].
  Var user_tower(const Batch& batch) override {
    SineExtractor::Output o = extract(batch);
    return cfg_.inference == "interests" && cfg_.num_intention > 1 ? o.interests : o.user;
  }
  /// The aggregate v [B, D], whatever the serving mode (SINE trains on it; `pos` is not needed).
  Var train_user_tower(const Batch& batch, const Var& pos) override {
    (void)pos;
    return extract(batch).user;
  }
  Var item_tower(const Batch& batch) override {
    const Tensor& ids = batch[cfg_.item_feature];
    RECHUB_CHECK_SHAPE(ids.ndim() == 1 || (ids.ndim() == 2 && ids.dim(1) == 1), "sine: item column '",
                       cfg_.item_feature, "' ", ids.shape().str(), " must be [B] or [B, 1]");
    return gather_rows(item_embedding_, ids.ndim() == 1 ? ids : ids.reshape(Shape{ids.dim(0)}));
  }
  Var neg_item_tower(const Batch& batch) override {
    RECHUB_CHECK_AS(ConfigError, !cfg_.neg_item_feature.empty(),
                    "sine: no neg_item_feature configured (train it with in-batch negatives)");
    const Tensor& ids = batch[cfg_.neg_item_feature];
    if (ids.ndim() == 1) return unsqueeze(gather_rows(item_embedding_, ids), 1);
    return gather_rows(item_embedding_, ids);  // [B, k, D]
  }
  int interest_num() const override {
    return cfg_.inference == "interests" ? cfg_.num_intention : 1;
  }
  float temperature() const override { return cfg_.score_temperature; }
  const std::vector<Feature>& user_features() const override { return user_features_; }
  const std::vector<Feature>& item_features() const override { return item_features_; }
  nlohmann::json config() const override {
    nlohmann::json j = cfg_;
    j["model"] = name();
    return j;
  }
  const SINEConfig& sine_config() const { return cfg_; }
  SineExtractor& extractor() { return extractor_; }
  Parameter& item_embedding() { return item_embedding_; }

  /// Torch-RecHub's run_ml_sine.py: embedding 128, hidden 512 (4x the embedding here, so other
  /// widths scale), 50 concepts, 4 intentions, seq_max_len 20, temperature 0.1.
  static SINEConfig default_config(const FeatureSchema& s, int embed_dim = 128, int num_intention = 4,
                                   std::int64_t seq_max_len = 20) {
    SINEConfig c;
    c.history_feature = s.hist_col();
    c.item_feature = s.item_col;
    c.neg_item_feature = "neg_items";
    c.num_items = s.item_vocab;
    c.embedding_dim = embed_dim;
    c.hidden_dim = 4 * static_cast<std::int64_t>(embed_dim);
    c.num_concept = 50;
    c.num_intention = num_intention;
    c.seq_max_len = seq_max_len;
    c.temperature = 0.1f;
    return c;
  }

 private:
  static SineExtractor::Options extractor_options(const SINEConfig& c) {
    RECHUB_CHECK_AS(ConfigError, c.num_items >= 1, "sine: num_items must be >= 1, got ", c.num_items);
    RECHUB_CHECK_AS(ConfigError, c.num_heads == 1, "sine: num_heads must be 1 (Torch-RecHub's aggregation only works "
                    "with one head), got ", c.num_heads);
    RECHUB_CHECK_AS(ConfigError, c.inference == "aggregate" || c.inference == "interests", "sine: inference '",
                    c.inference, "' is not one of aggregate, interests");
    RECHUB_CHECK_AS(ConfigError, c.score_temperature > 0, "sine: score_temperature must be > 0, got ",
                    c.score_temperature);
    SineExtractor::Options o;
    o.embedding_dim = c.embedding_dim;
    o.hidden_dim = c.hidden_dim;
    o.num_concept = c.num_concept;
    o.num_intention = c.num_intention;
    o.seq_max_len = c.seq_max_len;
    o.temperature = c.temperature;
    o.apt_norm_p = c.apt_norm_p;
    return o;
  }
  SineExtractor::Output extract(const Batch& batch) {
    const Tensor& hist = batch[cfg_.history_feature];
    RECHUB_CHECK_SHAPE(hist.ndim() == 2, "sine: history column '", cfg_.history_feature, "' ", hist.shape().str(),
                       " must be [B, L]");
    // Padding positions embed to 0 here and to the table's row 0 in Torch-RecHub: either way
    // every attention gives them weight 0, so the outputs agree.
    Var items = embedding_bag(item_embedding_, hist, BagMode::concat, 0);
    return extractor_.forward(items, hist, item_embedding_.var());
  }

  SINEConfig cfg_;
  SineExtractor extractor_;
  Parameter item_embedding_;
  std::vector<Feature> user_features_, item_features_;
};

}  // namespace rechub
