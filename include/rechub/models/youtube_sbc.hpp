#pragma once
// YoutubeSBC (Yi et al., RecSys'19, "Sampling-Bias-Corrected Neural Modeling"):
//   u = MLP_u(E_user), v = MLP_i(E_item) (not normalised in the towers),
//   s_ij = cos(u_i, v_j) - log q_j, trained with in-batch negatives, q_j the item's sampling
//   probability (Torch-RecHub: count^0.75 / sum, the "sample_weight" item column).
// Torch-RecHub scores each row against its own item and the next n_neg rows' items
// (inbatch_cyclic_softmax); rechub's recipe uses the full in-batch softmax.
#include "rechub/models/feature_schema.hpp"
#include "rechub/models/two_tower.hpp"

namespace rechub {

class YoutubeSBC : public TwoTower {
 public:
  explicit YoutubeSBC(TwoTowerConfig cfg) : TwoTower(std::move(cfg)) {}
  std::string name() const override { return "youtube_sbc"; }

  /// Torch-RecHub's run_ml_youtube_sbc.py: embed 16, towers [128, 64, 16] relu, T = 0.02.
  static TwoTowerConfig default_config(const FeatureSchema& s, int embed_dim = 16) {
    TwoTowerConfig c;
    c.user_features = s.user_sparse(embed_dim);
    c.user_features.push_back(s.history(embed_dim));
    c.item_features = s.item_sparse(embed_dim);
    c.user_params = TowerParams{{128, 64, 16}, "relu", 0.0f, true};
    c.item_params = TowerParams{{128, 64, 16}, "relu", 0.0f, true};
    c.normalize = false;
    c.temperature = 0.02f;
    return c;
  }
};

}  // namespace rechub
