#pragma once
// MatchModel: what every recall model exposes to the trainer, the evaluator and a service.
//
//   user_tower(batch)      -> [B, D]      user vectors of the batch rows (the training graph)
//   item_tower(batch)      -> [B, D]      vectors of each row's positive item
//   neg_item_tower(batch)  -> [B, K, D]   vectors of each row's K sampled negatives
//   user_embedding / item_embedding       the same towers in eval mode without a tape, as owned
//                                         tensors: what `rechub embed` writes and services call.
// Multi-interest models (MIND, ComiRec, SINE) have interest_num() = K > 1: their user_tower gives
// [B, K, D] and train_user_tower(batch, pos) picks the vector each row trains against (label-aware
// selection). Sequence models trained on every position (SASRec) expose position_states().
// Which scores and loss a batch trains on is the trainer's Objective (train/objective.hpp); a
// model only builds vectors. Configs round-trip through JSON so a checkpoint can rebuild it.
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "rechub/data/dataset.hpp"
#include "rechub/nn/embedding.hpp"
#include "rechub/nn/features.hpp"
#include "rechub/nn/mlp.hpp"
#include "rechub/nn/module.hpp"

namespace rechub {

/// Torch-RecHub's user_params / item_params: {"dims": [...], "activation": ..., "dropout": ...}.
struct TowerParams {
  std::vector<std::int64_t> dims;
  std::string activation = "relu";
  float dropout = 0.0f;
  bool batchnorm = true;
};
inline void to_json(nlohmann::json& j, const TowerParams& p) {
  j = {{"dims", p.dims}, {"activation", p.activation}, {"dropout", p.dropout}, {"batchnorm", p.batchnorm}};
}
inline void from_json(const nlohmann::json& j, TowerParams& p) {
  RECHUB_CHECK_AS(ConfigError, j.is_object() && j.contains("dims"), "tower params: expects an object with \"dims\", got ",
                  j.dump());
  p.dims = j.at("dims").get<std::vector<std::int64_t>>();
  p.activation = j.value("activation", std::string("relu"));
  p.dropout = j.value("dropout", 0.0f);
  p.batchnorm = j.value("batchnorm", true);
}

class MatchModel : public Module {
 public:
  /// Registry name: "dssm", "youtube_dnn", ...
  virtual std::string name() const = 0;
  /// Everything needed to rebuild the model (features, towers, temperature).
  virtual nlohmann::json config() const = 0;
  virtual Var user_tower(const Batch& batch) = 0;
  virtual Var item_tower(const Batch& batch) = 0;
  virtual Var neg_item_tower(const Batch& batch) {
    (void)batch;
    detail::throw_error<ConfigError>(name(), ": no negative-item tower (train it with in-batch negatives)");
  }
  /// Vectors per user: 1 -> user_tower gives [B, D]; K > 1 -> [B, K, D] (multi-interest).
  virtual int interest_num() const { return 1; }
  /// The [B, D] user vector a training row is scored with, given its positive item vectors
  /// `pos` [B, D]. Single-vector models ignore `pos`; multi-interest models select among their
  /// K interests with it (Torch-RecHub: the interest with the highest <interest, pos>).
  virtual Var train_user_tower(const Batch& batch, const Var& pos) {
    (void)pos;
    return user_tower(batch);
  }
  /// Per-position sequence states [B, L, D] (SASRec-style training on every position).
  virtual Var position_states(const Batch& batch) {
    (void)batch;
    detail::throw_error<ConfigError>(name(), ": no per-position states (a per-position loss needs a sequence model)");
  }
  /// Score scale 1/temperature used by the model's own objective.
  virtual float temperature() const { return 1.0f; }
  /// Features the user tower reads (a serving request must carry these columns).
  virtual const std::vector<Feature>& user_features() const = 0;
  virtual const std::vector<Feature>& item_features() const = 0;

  /// User vectors in eval mode, no tape: owned [B, D]. Ends the current step (call between steps).
  Tensor user_embedding(const Batch& batch) { return infer([&] { return user_tower(batch); }); }
  /// Item vectors in eval mode, no tape: owned [B, D].
  Tensor item_embedding(const Batch& batch) { return infer([&] { return item_tower(batch); }); }

 private:
  template <class F>
  Tensor infer(F&& tower) {
    const bool was_training = is_training();
    eval();
    Tensor out;
    {
      NoGrad ng;
      out = tower().value().clone();
    }
    end_step();
    train(was_training);
    return out;
  }
};

}  // namespace rechub
