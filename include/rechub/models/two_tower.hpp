#pragma once
// TwoTower: the machinery shared by DSSM, FaceBookDSSM, YoutubeDNN and YoutubeSBC.
//
//   u = norm( MLP_u( [e(f) for f in user_features] ) )          user tower
//   v = norm( MLP_i( [e(f) for f in item_features] ) )          item tower (no MLP for YoutubeDNN)
//   V_neg = norm( MLP_i( [e(f) for f in neg_item_features] ) )  [B, K, D], the same item MLP
// e() is one EmbeddingLayer over every feature (shared tables via shared_with), `norm` is
// L2 normalisation when the model asks for it. Parameter names follow Torch-RecHub's
// state_dict: embedding.embed_dict.<table>.weight, user_mlp.mlp.<i>.*, item_mlp.mlp.<i>.*.
//
// Distinct ids: a batch repeats ids, and two exact shortcuts skip the repeated work (the same
// values and gradients up to rounding, tests/test_models.cpp; use_distinct_ids(false) turns both off):
// - Item towers: an item's tower output depends on its ids alone, and 4,096 ML-100K training rows
//   hold ~1,100 distinct movies. When the item features are all sparse ids and the item MLP is
//   exact on distinct rows (nn/mlp.hpp: no dropout while training, elementwise activations), the
//   MLP runs once per distinct row, BatchNorm weighting each by its count, and the outputs are
//   gathered back to every row.
// - The user tower's first layer: x W^T over the concatenated embeddings is a sum of per-feature
//   products e_f W_f^T; for a sparse feature with repeats (gender, age, occupation, zip, user id
//   in a 4,096-row batch) that product is formed once per distinct id and looked up per row.
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "rechub/models/match_model.hpp"
#include "rechub/ops/index.hpp"
#include "rechub/ops/matmul.hpp"
#include "rechub/ops/norm.hpp"
#include "rechub/ops/shape.hpp"
#include "rechub/ops/unique_rows.hpp"

namespace rechub {

struct TwoTowerConfig {
  std::vector<Feature> user_features;
  std::vector<Feature> item_features;
  std::vector<Feature> neg_item_features;   // empty: the model trains without sampled negatives
  std::optional<TowerParams> user_params;   // none: the user tower is the concatenated embeddings
  std::optional<TowerParams> item_params;   // none: the item tower is the concatenated embeddings
  bool normalize = true;                    // L2-normalise tower outputs
  float temperature = 1.0f;
};

inline nlohmann::json two_tower_json(const TwoTowerConfig& c) {
  nlohmann::json j;
  j["user_features"] = c.user_features;
  j["item_features"] = c.item_features;
  j["neg_item_features"] = c.neg_item_features;
  j["user_params"] = c.user_params ? nlohmann::json(*c.user_params) : nlohmann::json(nullptr);
  j["item_params"] = c.item_params ? nlohmann::json(*c.item_params) : nlohmann::json(nullptr);
  j["normalize"] = c.normalize;
  j["temperature"] = c.temperature;
  return j;
}
inline TwoTowerConfig two_tower_from_json(const nlohmann::json& j) {
  TwoTowerConfig c;
  c.user_features = j.at("user_features").get<std::vector<Feature>>();
  c.item_features = j.at("item_features").get<std::vector<Feature>>();
  if (j.contains("neg_item_features")) c.neg_item_features = j.at("neg_item_features").get<std::vector<Feature>>();
  if (j.contains("user_params") && !j["user_params"].is_null()) c.user_params = j["user_params"].get<TowerParams>();
  if (j.contains("item_params") && !j["item_params"].is_null()) c.item_params = j["item_params"].get<TowerParams>();
  c.normalize = j.value("normalize", true);
  c.temperature = j.value("temperature", 1.0f);
  return c;
}

class TwoTower : public MatchModel {
 public:
  explicit TwoTower(TwoTowerConfig cfg) : cfg_(std::move(cfg)), embedding_(all_features(cfg_)) {
    RECHUB_CHECK_AS(ConfigError, !cfg_.user_features.empty() && !cfg_.item_features.empty(),
                    "TwoTower: user_features and item_features must not be empty");
    RECHUB_CHECK_AS(ConfigError, cfg_.temperature > 0, "TwoTower: temperature must be > 0, got ", cfg_.temperature);
    register_module("embedding", embedding_);
    if (cfg_.user_params) {
      user_mlp_ = make_mlp(sum_embed_dims(cfg_.user_features), *cfg_.user_params);
      register_module("user_mlp", *user_mlp_);
    }
    if (cfg_.item_params) {
      item_mlp_ = make_mlp(sum_embed_dims(cfg_.item_features), *cfg_.item_params);
      register_module("item_mlp", *item_mlp_);
    }
  }

  Var user_tower(const Batch& batch) override {
    if (Var z = first_layer_by_distinct_ids(batch, cfg_.user_features, user_mlp_.get()); z.defined()) {
      Var u = user_mlp_->forward_from_first_linear(z);
      return cfg_.normalize ? l2_normalize(u) : u;
    }
    return finish(user_mlp_.get(), embedding_.forward(batch, cfg_.user_features, true));
  }
  Var item_tower(const Batch& batch) override {
    if (Var v = distinct_item_rows(batch, cfg_.item_features, false); v.defined()) return v;
    return finish(item_mlp_.get(), embedding_.forward(batch, cfg_.item_features, true));
  }
  /// [B, K, D]: every negative feature embedded per position, concatenated, then the item MLP.
  Var neg_item_tower(const Batch& batch) override {
    RECHUB_CHECK_AS(ConfigError, !cfg_.neg_item_features.empty(), name(),
                    ": no neg_item_features configured (train it with in-batch negatives)");
    if (Var v = distinct_item_rows(batch, cfg_.neg_item_features, true); v.defined()) return v;
    std::array<Var, EmbeddingLayer::kMaxFeatures> parts;
    int n = 0;
    for (const auto& f : cfg_.neg_item_features) {
      Var e = embedding_.embed(batch, f);               // [B, D] (one negative) or [B, K, D]
      if (e.ndim() == 2) e = unsqueeze(e, 1);
      parts[static_cast<std::size_t>(n++)] = e;
    }
    Var x = n == 1 ? parts[0] : concat(parts.data(), n, 2);  // [B, K, sum D]
    return finish(item_mlp_.get(), x);
  }

  /// Whether the towers may take the distinct-id shortcuts (see the top; on by default). Off
  /// always takes the direct path: for comparisons, and the tests that show the two agree.
  void use_distinct_ids(bool on) { distinct_ids_ = on; }

  float temperature() const override { return cfg_.temperature; }
  const std::vector<Feature>& user_features() const override { return cfg_.user_features; }
  const std::vector<Feature>& item_features() const override { return cfg_.item_features; }
  const TwoTowerConfig& two_tower_config() const { return cfg_; }
  EmbeddingLayer& embedding() { return embedding_; }
  nlohmann::json config() const override {
    nlohmann::json j = two_tower_json(cfg_);
    j["model"] = name();
    return j;
  }

 private:
  static std::vector<Feature> all_features(const TwoTowerConfig& c) {
    std::vector<Feature> all = c.user_features;
    all.insert(all.end(), c.item_features.begin(), c.item_features.end());
    all.insert(all.end(), c.neg_item_features.begin(), c.neg_item_features.end());
    return all;
  }
  static std::unique_ptr<MLP> make_mlp(std::int64_t in, const TowerParams& p) {
    MLP::Options o;
    o.dims = p.dims;
    o.activation = p.activation;
    o.dropout = p.dropout;
    o.batchnorm = p.batchnorm;
    o.output_layer = false;
    return std::make_unique<MLP>(in, o);
  }
  Var finish(MLP* mlp, Var x, const Tensor& row_weights = Tensor()) const {
    if (mlp) x = mlp->forward(x, row_weights);
    return cfg_.normalize ? l2_normalize(x) : x;
  }

  /// z = x W^T + b of `mlp`'s first Linear over the embedded `features` (x as
  /// EmbeddingLayer::forward(batch, features, true) lays it out), each sparse feature with
  /// enough repeats entering as (E[distinct ids] W_f^T)[inverse]; undefined when none repeats.
  Var first_layer_by_distinct_ids(const Batch& batch, const std::vector<Feature>& features, const MLP* mlp) const {
    const Linear* lin = mlp ? mlp->first_linear() : nullptr;
    if (!distinct_ids_ || !lin || features.size() > static_cast<std::size_t>(EmbeddingLayer::kMaxFeatures))
      return Var();
    const std::int64_t B = batch.rows();
    if (B < kMinDistinctRows) return Var();
    struct Distinct {
      bool use = false;  // enough repeats to pay for the lookups
      Tensor ids, inverse;
    };
    std::array<Distinct, EmbeddingLayer::kMaxFeatures> distinct;
    bool any = false;
    for (std::size_t i = 0; i < features.size(); ++i) {
      if (!std::holds_alternative<SparseFeature>(features[i])) continue;
      const Tensor* col = &batch[feature_name(features[i])];
      if (col->dtype() != DType::i32 || col->numel() != B) return Var();  // the direct path reports
      UniqueRows u = unique_rows(&col, 1);
      distinct[i] = {u.unique * 4 <= B * 3, u.ids[0], u.inverse.reshape(Shape{B})};
      any = any || distinct[i].use;
    }
    if (!any) return Var();
    const Var W = lin->weight.var();
    std::array<Var, EmbeddingLayer::kMaxFeatures> tables;
    std::array<const Tensor*, EmbeddingLayer::kMaxFeatures> inverse{};
    int n = 0;
    Var base;
    std::int64_t offset = 0;
    // Columns of x: sparse and sequence features in order, then the dense ones (EmbeddingLayer).
    for (bool dense_pass : {false, true})
      for (std::size_t i = 0; i < features.size(); ++i) {
        const Feature& f = features[i];
        if (std::holds_alternative<DenseFeature>(f) != dense_pass) continue;
        const bool by_id = distinct[i].use;
        Var e = by_id ? gather_rows(embedding_.table(feature_name(f)).var(), distinct[i].ids)
                      : embedding_.embed(batch, f);
        if (e.ndim() == 3) e = reshape(e, Shape{e.dim(0), e.dim(1) * e.dim(2)});  // concat pooling
        const std::int64_t w = e.dim(1);
        if (offset + w > lin->in_features()) return Var();  // the direct path reports the mismatch
        Var part = matmul(e, slice(W, 1, offset, offset + w), false, true);
        offset += w;
        if (by_id) {
          tables[static_cast<std::size_t>(n)] = part;
          inverse[static_cast<std::size_t>(n++)] = &distinct[i].inverse;
        } else {
          base = base.defined() ? add(base, part) : part;
        }
      }
    if (offset != lin->in_features()) return Var();
    return add_gathered_rows(base, lin->bias_var(), tables.data(), inverse.data(), n);
  }

  /// The item tower over the distinct rows of `features` gathered back to every row ([B, D], or
  /// [B, 1, D] for negatives); undefined when that is not exact or would not pay (see the top).
  Var distinct_item_rows(const Batch& batch, const std::vector<Feature>& features, bool negatives) const {
    if (!distinct_ids_ || !item_mlp_ || !item_mlp_->exact_on_distinct_rows() ||
        features.size() > static_cast<std::size_t>(UniqueRows::kMaxColumns))
      return Var();
    std::array<const Tensor*, UniqueRows::kMaxColumns> cols{};
    int n = 0;
    for (const auto& f : features) {
      if (!std::holds_alternative<SparseFeature>(f)) return Var();
      const Tensor& c = batch[feature_name(f)];
      if (c.dtype() != DType::i32 || (n > 0 && c.shape() != cols[0]->shape())) return Var();  // the direct path reports
      cols[static_cast<std::size_t>(n++)] = &c;
    }
    const std::int64_t rows = cols[0]->numel();
    if (rows < kMinDistinctRows) return Var();
    // Too few repeats: the hashing, gather and scatter would cost more than the rows saved.
    UniqueRows u = unique_rows(cols.data(), n);
    if (u.unique * 4 > rows * 3) return Var();
    std::array<Var, UniqueRows::kMaxColumns> parts;
    for (int k = 0; k < n; ++k)
      parts[static_cast<std::size_t>(k)] =
          gather_rows(embedding_.table(feature_name(features[static_cast<std::size_t>(k)])).var(),
                      u.ids[static_cast<std::size_t>(k)]);
    Var x = n == 1 ? parts[0] : concat(parts.data(), n, 1);  // [U, sum D]
    Var v = finish(item_mlp_.get(), x, u.counts);
    // Sparse columns are [B] or [B, 1]: one item per row; negatives come out [B, 1, D] as below.
    return gather_rows(v, u.inverse.reshape(negatives ? Shape{rows, 1} : Shape{rows}));
  }

  // Smaller batches (a serving request) take the direct path without looking for repeats.
  static constexpr std::int64_t kMinDistinctRows = 64;

  TwoTowerConfig cfg_;
  EmbeddingLayer embedding_;
  std::unique_ptr<MLP> user_mlp_, item_mlp_;
  bool distinct_ids_ = true;
};

}  // namespace rechub
