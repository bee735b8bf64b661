#pragma once
// ComiRec (Cen et al., KDD'20, "Controllable Multi-Interest Framework for Recommendation") as
// Torch-RecHub builds it (torch_rechub/models/matching/comirec.py):
//   ComirecDR  interests are capsules with a bilinear map per position and interest
//              (CapsuleNetwork bilinear_type 2, "capsule.w" [1, max_length, K*D, D]), zero initial
//              routing logits, 3 iterations; histories may be shorter than max_length (the first
//              L maps are used), not longer.
//   ComirecSA  interests are self-attentive pools (MultiInterestSA, "multi_interest_sa.W1/W2").
// User-feature concat, projection, normalisation and label-aware selection: MultiInterestModel.
#include "rechub/models/mind.hpp"  // CapsuleInterestModel
#include "rechub/models/multi_interest.hpp"
#include "rechub/nn/multi_interest_sa.hpp"

namespace rechub {

class ComirecDR : public CapsuleInterestModel {
 public:
  explicit ComirecDR(MultiInterestConfig cfg) : CapsuleInterestModel(std::move(cfg), 2) {}
  std::string name() const override { return "comirec_dr"; }
};

class ComirecSA : public MultiInterestModel {
 public:
  explicit ComirecSA(MultiInterestConfig cfg)
      : MultiInterestModel(std::move(cfg)), sa_(D_, cfg_.interest_num, cfg_.hidden_dim) {
    register_module("multi_interest_sa", sa_);
  }
  std::string name() const override { return "comirec_sa"; }
  Var interests(const Var& seq, const Tensor& mask) override { return sa_.forward(seq, mask); }
  MultiInterestSA& multi_interest_sa() { return sa_; }

  /// Torch-RecHub's run_ml_comirec.py (model_name comirec_sa): embed 16, 4 interests, attention
  /// width 4 * embed; temperature 0.02 never applied, so 1.0.
  static MultiInterestConfig default_config(const FeatureSchema& s, int embed_dim = 16, int interest_num = 4) {
    MultiInterestConfig c = MultiInterestConfig::from_schema(s, embed_dim);
    c.interest_num = interest_num;
    return c;
  }

 private:
  MultiInterestSA sa_;
};

}  // namespace rechub
