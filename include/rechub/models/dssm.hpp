#pragma once
// DSSM (Huang et al., CIKM'13) as Torch-RecHub builds it:
//   u = normalize(MLP_u(E_user)),  v = normalize(MLP_i(E_item)),  score = <u, v>  (cosine)
// Torch-RecHub trains it point-wise: sigmoid(<u, v>) with BCE, and never applies its
// `temperature` (the division is commented out in its forward). With cosine scores in
// [-1, 1] the sigmoid cannot go below 0.27 or above 0.73, which is why its example barely
// learns. rechub applies the temperature (score = <u, v> / T); pass T = 1 to reproduce
// Torch-RecHub exactly.
#include "rechub/models/feature_schema.hpp"
#include "rechub/models/two_tower.hpp"

namespace rechub {

class DSSM : public TwoTower {
 public:
  explicit DSSM(TwoTowerConfig cfg) : TwoTower(std::move(cfg)) {}
  std::string name() const override { return "dssm"; }

  /// Torch-RecHub's run_ml_dssm.py: embed 16, towers [256, 128, 64] prelu, normalised.
  static TwoTowerConfig default_config(const FeatureSchema& s, int embed_dim = 16, bool list_negatives = true) {
    TwoTowerConfig c;
    c.user_features = s.user_sparse(embed_dim);
    c.user_features.push_back(s.history(embed_dim));
    c.item_features = s.item_sparse(embed_dim);
    c.neg_item_features = s.negatives(embed_dim, !list_negatives, true);
    c.user_params = TowerParams{{256, 128, 64}, "prelu", 0.0f, true};
    c.item_params = TowerParams{{256, 128, 64}, "prelu", 0.0f, true};
    c.normalize = true;
    c.temperature = 1.0f;
    return c;
  }
};

}  // namespace rechub
