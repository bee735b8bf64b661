#pragma once
// Checkpoints: a module's named parameters and buffers in one safetensors file, written atomically.
//
// Metadata (model config, id maps, epoch, anything JSON) lives INSIDE the file, serialised as a
// JSON string under __metadata__["rechub"]: one file means one atomic rename, so weights and the
// config that built them can never disagree, and Python's safetensors still reads the file (its
// metadata must be a string-to-string map, which this is).
//
// Loading is strict and all-or-nothing: every expected tensor must be present with the same dtype
// and shape, the file may hold no tensor the model lacks, and nothing is copied until all checks
// pass, so a failed load leaves the module as it was. Optimizer state (Adam moments, step counts)
// uses the same pair of functions on an explicit list of named tensors.
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "rechub/core/error.hpp"
#include "rechub/core/tensor.hpp"
#include "rechub/io/safetensors.hpp"
#include "rechub/nn/module.hpp"

namespace rechub {

/// The __metadata__ key holding the checkpoint's JSON metadata.
constexpr const char* kCheckpointMetadataKey = "rechub";

namespace detail {
inline nlohmann::json checkpoint_metadata(const std::map<std::string, std::string>& meta, const std::string& path) {
  auto it = meta.find(kCheckpointMetadataKey);
  if (it == meta.end()) return nlohmann::json::object();  // a plain safetensors file from elsewhere
  try {
    return nlohmann::json::parse(it->second);
  } catch (const nlohmann::json::parse_error& e) {
    throw_error<DataError>("checkpoint: ", path, ": metadata is not valid JSON (error at byte ", e.byte, ")");
  }
}
}  // namespace detail

/// Saves named tensors plus JSON metadata to `path` atomically.
inline void save_named_tensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                               const nlohmann::json& metadata = nlohmann::json::object()) {
  save_safetensors(path, tensors, {{kCheckpointMetadataKey, metadata.dump()}});
}

/// Loads into `targets` (name -> destination tensor), checking names, dtypes and shapes strictly;
/// `owner` names who expects them in messages ("model", "optimizer"). Returns the JSON metadata.
inline nlohmann::json load_named_tensors(const std::string& path,
                                         const std::vector<std::pair<std::string, Tensor*>>& targets,
                                         const char* owner = "caller") {
  SafeTensors file = load_safetensors(path);
  std::map<std::string, bool> wanted;
  for (const auto& [name, dst] : targets) {
    RECHUB_CHECK_AS(ConfigError, dst != nullptr, "checkpoint: null destination for ", name);
    RECHUB_CHECK_AS(ConfigError, wanted.emplace(name, true).second, "checkpoint: ", owner, " lists ", name, " twice");
    auto it = file.tensors.find(name);
    RECHUB_CHECK_AS(DataError, it != file.tensors.end(), "checkpoint: ", name, " ", dst->shape().str(),
                    " is missing from file ", path, " (", owner, " expects it)");
    const Tensor& src = it->second;
    RECHUB_CHECK_AS(DataError, src.dtype() == dst->dtype(), "checkpoint: ", name, " has dtype ",
                    dtype_name(src.dtype()), " in file ", path, ", ", owner, " expects ", dtype_name(dst->dtype()));
    RECHUB_CHECK_AS(DataError, src.shape() == dst->shape(), "checkpoint: ", name, " has shape ", src.shape().str(),
                    " in file ", path, ", ", owner, " expects ", dst->shape().str());
  }
  std::string extra;
  std::size_t n_extra = 0;
  for (const auto& kv : file.tensors) {
    if (wanted.count(kv.first)) continue;
    extra += (n_extra++ ? ", " : "") + kv.first;
  }
  RECHUB_CHECK_AS(DataError, n_extra == 0, "checkpoint: file ", path, " holds ", n_extra, " tensor",
                  n_extra == 1 ? "" : "s", " the ", owner, " does not have: ", extra);
  nlohmann::json meta = detail::checkpoint_metadata(file.metadata, path);
  for (const auto& [name, dst] : targets) {
    RECHUB_CHECK_AS(ConfigError, dst->device() == Device::cpu, "checkpoint: ", owner, " tensor ", name,
                    " is not on the cpu");
  }
  for (const auto& [name, dst] : targets) dst->copy_from(file.tensors.at(name));
  return meta;
}

/// The JSON metadata alone (reads only the header): learn the config before building the model.
inline nlohmann::json read_checkpoint_metadata(const std::string& path) {
  return detail::checkpoint_metadata(read_safetensors_metadata(path), path);
}

/// Every named parameter and buffer of a module, keyed by its dotted name.
inline std::vector<std::pair<std::string, Tensor*>> module_state(const Module& m) {
  std::vector<std::pair<std::string, Tensor*>> out;
  for (auto& [name, p] : m.named_parameters()) out.emplace_back(name, &p->value());
  for (auto& [name, b] : m.named_buffers()) out.emplace_back(name, b);
  return out;
}

/// Saves the module's parameters and buffers with `metadata` (config, id maps, ...) atomically.
inline void save_checkpoint(const std::string& path, const Module& m,
                            const nlohmann::json& metadata = nlohmann::json::object()) {
  std::vector<std::pair<std::string, Tensor>> tensors;
  for (auto& [name, t] : module_state(m)) tensors.emplace_back(name, *t);
  save_named_tensors(path, tensors, metadata);
}

/// Loads a checkpoint saved by save_checkpoint into `m` (strict, all-or-nothing); returns its metadata.
inline nlohmann::json load_checkpoint(const std::string& path, Module& m) {
  return load_named_tensors(path, module_state(m), "model");
}

}  // namespace rechub
