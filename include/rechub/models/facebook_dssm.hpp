#pragma once
// FaceBookDSSM (Huang et al., KDD'20, "Embedding-based Retrieval in Facebook Search"):
//   u = normalize(MLP_u(E_user)),  v+ = normalize(MLP_i(E_pos)),  v- = normalize(MLP_i(E_neg))
//   trained pair-wise on (<u, v+>, <u, v->) with BPR (Torch-RecHub's MatchTrainer mode 1) or
//   the paper's hinge loss max(0, margin - <u,v+> + <u,v->).
// Torch-RecHub's example gives the negatives embedding tables of their own ("neg_items" and
// "neg_cate" are not shared_with the positive columns), so negatives and positives never
// share item embeddings; default_config(shared_negatives = false) reproduces that, rechub's
// recipe shares them. Torch-RecHub also returns the item vector UN-normalised in inference
// mode; we normalise both, which changes nothing under the cosine evaluation.
#include "rechub/models/feature_schema.hpp"
#include "rechub/models/two_tower.hpp"

namespace rechub {

class FaceBookDSSM : public TwoTower {
 public:
  explicit FaceBookDSSM(TwoTowerConfig cfg) : TwoTower(std::move(cfg)) {}
  std::string name() const override { return "facebook_dssm"; }

  /// Torch-RecHub's run_ml_facebook_dssm.py: embed 16, towers [256, 128, 64, 32] relu.
  static TwoTowerConfig default_config(const FeatureSchema& s, int embed_dim = 16, bool shared_negatives = true,
                                       bool one_negative_per_row = true) {
    TwoTowerConfig c;
    c.user_features = s.user_sparse(embed_dim);
    c.user_features.push_back(s.history(embed_dim));
    c.item_features = s.item_sparse(embed_dim);
    c.neg_item_features = s.negatives(embed_dim, one_negative_per_row, shared_negatives);
    c.user_params = TowerParams{{256, 128, 64, 32}, "relu", 0.0f, true};
    c.item_params = TowerParams{{256, 128, 64, 32}, "relu", 0.0f, true};
    c.normalize = true;
    c.temperature = 1.0f;
    return c;
  }
};

}  // namespace rechub
