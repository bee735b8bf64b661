#pragma once
// TwoTower: the machinery shared by DSSM, FaceBookDSSM, YoutubeDNN and YoutubeSBC.
//
//   u = norm( MLP_u( [e(f) for f in user_features] ) )          user tower
//   v = norm( MLP_i( [e(f) for f in item_features] ) )          item tower (no MLP for YoutubeDNN)
//   V_neg = norm( MLP_i( [e(f) for f in neg_item_features] ) )  [B, K, D], the same item MLP
// e() is one EmbeddingLayer over every feature (shared tables via shared_with), `norm` is
// L2 normalisation when the model asks for it. Parameter names follow Torch-RecHub's
// state_dict: embedding.embed_dict.<table>.weight, user_mlp.mlp.<i>.*, item_mlp.mlp.<i>.*.
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "rechub/models/match_model.hpp"
#include "rechub/ops/norm.hpp"
#include "rechub/ops/shape.hpp"

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
    return finish(user_mlp_.get(), embedding_.forward(batch, cfg_.user_features, true));
  }
  Var item_tower(const Batch& batch) override {
    return finish(item_mlp_.get(), embedding_.forward(batch, cfg_.item_features, true));
  }
  /// [B, K, D]: every negative feature embedded per position, concatenated, then the item MLP.
  Var neg_item_tower(const Batch& batch) override {
    RECHUB_CHECK_AS(ConfigError, !cfg_.neg_item_features.empty(), name(),
                    ": no neg_item_features configured (train it with in-batch negatives)");
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
  Var finish(MLP* mlp, Var x) const {
    if (mlp) x = mlp->forward(x);
    return cfg_.normalize ? l2_normalize(x) : x;
  }

  TwoTowerConfig cfg_;
  EmbeddingLayer embedding_;
  std::unique_ptr<MLP> user_mlp_, item_mlp_;
};

}  // namespace rechub
