#pragma once
// MIND (Li et al., CIKM'19, "Multi-Interest Network with Dynamic Routing") as Torch-RecHub builds
// it (torch_rechub/models/matching/mind.py): interests are B2I capsules, one bilinear map shared
// by all interests (CapsuleNetwork bilinear_type 0) with random initial routing logits, 3 routing
// iterations; the rest (user-feature concat, projection, normalisation, label-aware selection)
// is MultiInterestModel.
#include "rechub/models/multi_interest.hpp"
#include "rechub/nn/capsule.hpp"

namespace rechub {

/// A multi-interest model whose interests are capsules: MIND (bilinear_type 0) and ComiRec-DR
/// (bilinear_type 2) differ only in the capsule layer's map (and ComiRec-DR's map initialiser).
class CapsuleInterestModel : public MultiInterestModel {
 public:
  CapsuleInterestModel(MultiInterestConfig cfg, int bilinear_type)
      : MultiInterestModel(std::move(cfg)), capsule_(D_, cfg_.max_length, options(cfg_, bilinear_type)) {
    register_module("capsule", capsule_);
  }
  Var interests(const Var& seq, const Tensor& mask) override { return capsule_.forward(seq, mask); }
  CapsuleNetwork& capsule() { return capsule_; }

  /// Torch-RecHub's run_ml_mind.py / run_ml_comirec.py: embed 16, 4 interests, max_length 50;
  /// their temperature 0.02 is never applied, so 1.0 here.
  static MultiInterestConfig default_config(const FeatureSchema& s, int embed_dim = 16, int interest_num = 4,
                                            std::int64_t max_length = 50) {
    MultiInterestConfig c = MultiInterestConfig::from_schema(s, embed_dim);
    c.interest_num = interest_num;
    c.max_length = max_length;
    return c;
  }

 private:
  static CapsuleNetwork::Options options(const MultiInterestConfig& c, int bilinear_type) {
    CapsuleNetwork::Options o;
    o.bilinear_type = bilinear_type;
    o.interest_num = c.interest_num;
    o.routing_times = c.routing_times;
    o.init_std = c.dr_init_std;  // read by bilinear_type 2 only
    o.seed = c.seed;
    return o;
  }
  CapsuleNetwork capsule_;
};

class MIND : public CapsuleInterestModel {
 public:
  explicit MIND(MultiInterestConfig cfg) : CapsuleInterestModel(std::move(cfg), 0) {}
  std::string name() const override { return "mind"; }
};

}  // namespace rechub
