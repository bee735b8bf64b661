#pragma once
// Module: named parameters, buffers and children, Torch-style dotted names
// ("user_mlp.0.weight") that checkpoints are keyed by. Modules hold their parameters as
// members and register them by address, so a module is neither copyable nor movable.
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "rechub/autograd/tape.hpp"

namespace rechub {

class Module {
 public:
  Module() = default;
  virtual ~Module() = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  /// Every parameter of this module and its children, depth-first, with dotted names.
  std::vector<std::pair<std::string, Parameter*>> named_parameters() const {
    std::vector<std::pair<std::string, Parameter*>> out;
    collect_params("", out);
    return out;
  }
  std::vector<Parameter*> parameters() const {
    std::vector<Parameter*> out;
    for (auto& kv : named_parameters()) out.push_back(kv.second);
    return out;
  }
  /// Non-trainable state saved with checkpoints (batchnorm running statistics).
  std::vector<std::pair<std::string, Tensor*>> named_buffers() const {
    std::vector<std::pair<std::string, Tensor*>> out;
    collect_buffers("", out);
    return out;
  }
  std::int64_t num_parameters() const {
    std::int64_t n = 0;
    for (auto& kv : named_parameters()) n += kv.second->numel();
    return n;
  }
  /// Training mode (dropout on, batchnorm on batch statistics) or eval mode; recursive.
  void train(bool on = true) {
    training_ = on;
    for (auto& c : children_) c.second->train(on);
  }
  void eval() { train(false); }
  bool is_training() const { return training_; }
  void zero_grad() {
    for (auto* p : parameters()) p->zero_grad();
  }

 protected:
  void register_parameter(const std::string& name, Parameter& p) { params_.emplace_back(name, &p); }
  void register_buffer(const std::string& name, Tensor& t) { buffers_.emplace_back(name, &t); }
  void register_module(const std::string& name, Module& m) {
    m.train(training_);
    children_.emplace_back(name, &m);
  }

 private:
  void collect_params(const std::string& prefix, std::vector<std::pair<std::string, Parameter*>>& out) const {
    for (auto& p : params_) out.emplace_back(prefix + p.first, p.second);
    for (auto& c : children_) c.second->collect_params(prefix + c.first + ".", out);
  }
  void collect_buffers(const std::string& prefix, std::vector<std::pair<std::string, Tensor*>>& out) const {
    for (auto& b : buffers_) out.emplace_back(prefix + b.first, b.second);
    for (auto& c : children_) c.second->collect_buffers(prefix + c.first + ".", out);
  }

  std::vector<std::pair<std::string, Parameter*>> params_;
  std::vector<std::pair<std::string, Tensor*>> buffers_;
  std::vector<std::pair<std::string, Module*>> children_;
  bool training_ = true;
};

}  // namespace rechub
