#pragma once
// Training checkpoints: model parameters and buffers, the optimizer's state ("optimizer.<name>")
// and the next epoch, in one safetensors file written atomically. Resuming restores all three,
// and since epoch e's shuffle and in-batch negatives depend only on (seed, e), a resumed run
// continues exactly where the interrupted one stopped (dropout masks excepted).
#include <string>
#include <utility>
#include <vector>

#include "rechub/io/checkpoint.hpp"
#include "rechub/train/match_trainer.hpp"

namespace rechub {

namespace detail {
inline std::vector<std::pair<std::string, Tensor*>> training_state(MatchModel& m, MatchTrainer& t) {
  auto state = module_state(m);
  for (auto& [name, tensor] : t.optimizer().named_state()) state.emplace_back("optimizer." + name, tensor);
  return state;
}
}  // namespace detail

/// Saves model + optimizer + next epoch (and `metadata`, e.g. the run config) to `path` atomically.
inline void save_training_checkpoint(const std::string& path, MatchModel& m, MatchTrainer& t,
                                     nlohmann::json metadata = nlohmann::json::object()) {
  metadata["next_epoch"] = t.start_epoch();
  metadata["model"] = m.name();
  std::vector<std::pair<std::string, Tensor>> tensors;
  for (auto& [name, tensor] : detail::training_state(m, t)) tensors.emplace_back(name, *tensor);
  save_named_tensors(path, tensors, metadata);
}

/// Restores a checkpoint written by save_training_checkpoint; the next fit() continues from it.
inline nlohmann::json load_training_checkpoint(const std::string& path, MatchModel& m, MatchTrainer& t) {
  nlohmann::json meta = load_named_tensors(path, detail::training_state(m, t), "training state");
  t.set_start_epoch(meta.value("next_epoch", 0));
  return meta;
}

}  // namespace rechub
