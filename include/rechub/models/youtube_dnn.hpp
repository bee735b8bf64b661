#pragma once
// YoutubeDNN (Covington et al., RecSys'16) as Torch-RecHub builds it:
//   u = normalize(MLP_u(E_user)),  v = normalize(e(item_id))   (no item MLP: item vectors are
//   the item embedding table, shared with the history feature)
//   scores = <u, [v+, v-_1..v-_k]> / T, softmax cross-entropy with the positive first (list-wise).
#include "rechub/models/feature_schema.hpp"
#include "rechub/models/two_tower.hpp"

namespace rechub {

class YoutubeDNN : public TwoTower {
 public:
  explicit YoutubeDNN(TwoTowerConfig cfg) : TwoTower(std::move(cfg)) {}
  std::string name() const override { return "youtube_dnn"; }

  /// Torch-RecHub's run_ml_youtube_dnn.py: embed 16, user tower [128, 64, 16] relu, T = 0.02.
  static TwoTowerConfig default_config(const FeatureSchema& s, int embed_dim = 16) {
    TwoTowerConfig c;
    c.user_features = s.user_sparse(embed_dim);
    c.user_features.push_back(s.history(embed_dim));
    c.item_features = {SparseFeature(s.item_col, s.item_vocab, embed_dim)};
    c.neg_item_features = {SequenceFeature("neg_items", s.item_vocab, embed_dim, "concat", s.item_col)};
    c.user_params = TowerParams{{128, 64, static_cast<std::int64_t>(embed_dim)}, "relu", 0.0f, true};
    c.normalize = true;
    c.temperature = 0.02f;
    return c;
  }
};

}  // namespace rechub
