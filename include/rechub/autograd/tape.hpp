#pragma once
// The tape. An op computes its output value, then (when any input needs a gradient) records a
// closure that pushes the output's gradient back into its inputs. backward(loss) walks the tape
// in reverse creation order, which is a topological order.
//
// Lifetimes: a Var made by an op lives on the tape of its thread until `end_step()`, which
// clears the tape and the step arena together. Parameters own their node and outlive steps.
// Gradients accumulate (+=): a parameter used twice (a shared embedding table, the same tower on
// positives and negatives) receives the sum, and zero_grad() starts a new step. A backward that
// stores every element of a gradient may skip the zeroing when it is the first contribution
// (Var::grad_for_write), and an identity backward may hand its output's gradient buffer on
// (Var::share_grad_if_first); any later contribution adds.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>
#include <type_traits>
#include <utility>
#include <vector>

#include "rechub/core/arena.hpp"
#include "rechub/core/tensor.hpp"

namespace rechub {

namespace detail {
/// A move-only void() callable stored inline (no heap): backward closures capture a few Vars.
class InlineFn {
 public:
  static constexpr std::size_t kCapacity = 160;
  InlineFn() = default;
  template <class F>
  explicit InlineFn(F&& f) {
    using Fn = std::decay_t<F>;
    static_assert(sizeof(Fn) <= kCapacity, "backward closure captures too much; capture Vars and sizes only");
    static_assert(alignof(Fn) <= alignof(std::max_align_t), "backward closure over-aligned");
    ::new (static_cast<void*>(buf_)) Fn(std::forward<F>(f));
    call_ = [](void* p) { (*static_cast<Fn*>(p))(); };
    destroy_ = [](void* p) { static_cast<Fn*>(p)->~Fn(); };
  }
  InlineFn(const InlineFn&) = delete;
  InlineFn& operator=(const InlineFn&) = delete;
  ~InlineFn() { reset(); }
  template <class F>
  void assign(F&& f) {
    reset();
    ::new (this) InlineFn(std::forward<F>(f));
  }
  void reset() {
    if (destroy_) destroy_(buf_);
    call_ = nullptr;
    destroy_ = nullptr;
  }
  explicit operator bool() const { return call_ != nullptr; }
  void operator()() { call_(buf_); }

 private:
  alignas(std::max_align_t) unsigned char buf_[kCapacity];
  void (*call_)(void*) = nullptr;
  void (*destroy_)(void*) = nullptr;
};

/// Rows of an embedding table touched since the last optimiser step (for lazy/sparse Adam).
struct RowSet {
  std::vector<std::uint8_t> marked;
  std::vector<std::int32_t> rows;
  void mark(std::int32_t r) {
    if (!marked[r]) {
      marked[r] = 1;
      rows.push_back(r);
    }
  }
  void clear() {
    for (auto r : rows) marked[r] = 0;
    rows.clear();
  }
};
}  // namespace detail

/// A value on the tape with its (lazily allocated) gradient.
struct Node {
  Tensor value;
  Tensor grad;  // undefined until something flows into it
  bool requires_grad = false;
  bool persistent = false;           // a parameter: grad is owned and zeroed by the optimiser
  detail::RowSet* touched = nullptr;  // set for parameters trained with lazy Adam
  const char* op = "leaf";
  detail::InlineFn backward;
};

/// Handle to a Node: cheap to copy, no ownership.
class Var {
 public:
  Var() = default;
  explicit Var(Node* n) : n_(n) {}
  bool defined() const { return n_ != nullptr; }
  Node* node() const { return n_; }
  const Tensor& value() const { return n_->value; }
  const Shape& shape() const { return n_->value.shape(); }
  std::int64_t dim(int i) const { return n_->value.dim(i); }
  int ndim() const { return n_->value.ndim(); }
  bool requires_grad() const { return n_->requires_grad; }
  /// The gradient so far (undefined tensor when none has flowed in).
  const Tensor& grad() const { return n_->grad; }
  bool has_grad() const { return n_->grad.defined(); }
  /// The gradient buffer to accumulate into, allocated zeroed on first use.
  Tensor& grad_acc() const {
    if (!n_->grad.defined()) n_->grad = step_arena().zeros(n_->value.shape(), DType::f32);
    return n_->grad;
  }
  /// The gradient buffer for a backward that stores EVERY element of it: when no gradient has
  /// flowed in yet, an uninitialised buffer and `overwrite` = true (the caller stores, it does not
  /// add: no zeroing pass, no read of zeros); otherwise grad_acc() and `overwrite` = false.
  Tensor& grad_for_write(bool& overwrite) const {
    overwrite = !n_->grad.defined();
    if (overwrite) n_->grad = step_arena().tensor(n_->value.shape(), DType::f32);
    return n_->grad;
  }
  /// For an identity backward (dx += dy): when no gradient has flowed in yet, takes `g` itself as
  /// the gradient, no copy, and returns true; otherwise returns false and the caller adds. Later
  /// contributions then add into g's buffer: only safe when g is the gradient of an op output
  /// whose backward has run (nothing reads it again within the step).
  bool share_grad_if_first(const Tensor& g) const {
    if (n_->grad.defined()) return false;
    n_->grad = g;
    return true;
  }
  /// Records rows of this (parameter) tensor as touched, for lazy optimisers.
  void mark_row(std::int32_t r) const {
    if (n_->touched) n_->touched->mark(r);
  }
  float item() const { return n_->value.f32()[0]; }

 private:
  Node* n_ = nullptr;
};

namespace detail {
inline int& no_grad_depth() {
  thread_local int depth = 0;
  return depth;
}
}  // namespace detail

inline bool grad_enabled() { return detail::no_grad_depth() == 0; }

/// Within this scope ops record nothing: inference pays no tape overhead.
class NoGrad {
 public:
  NoGrad() { ++detail::no_grad_depth(); }
  ~NoGrad() { --detail::no_grad_depth(); }
  NoGrad(const NoGrad&) = delete;
  NoGrad& operator=(const NoGrad&) = delete;
};

class Tape {
 public:
  static constexpr std::size_t kChunk = 1024;

  /// A fresh node for an op output (recycled across steps: no allocation in steady state).
  Node* new_node() {
    if (used_ == chunks_.size() * kChunk) chunks_.push_back(std::make_unique<Node[]>(kChunk));
    Node* n = &chunks_[used_ / kChunk][used_ % kChunk];
    ++used_;
    return n;
  }
  std::size_t size() const { return used_; }

  /// Runs every recorded closure in reverse order, starting from d(loss)/d(loss) = 1.
  void backward(const Var& loss) {
    RECHUB_CHECK_SHAPE(loss.value().numel() == 1, "backward: loss must be a scalar, got ", loss.shape().str());
    RECHUB_CHECK(loss.requires_grad(), "backward: loss does not depend on any parameter");
    loss.grad_acc().fill_(1.0f);
    run_from(loss.node());
  }
  /// Backward from a non-scalar output seeded with d(something)/d(out) = grad_out (gradient checks).
  void backward(const Var& out, const Tensor& grad_out) {
    RECHUB_CHECK_SHAPE(grad_out.shape() == out.shape(), "backward: seed ", grad_out.shape().str(), " for output ",
                       out.shape().str());
    RECHUB_CHECK(out.requires_grad(), "backward: output does not depend on any parameter");
    out.grad_acc().copy_from(grad_out);
    run_from(out.node());
  }

 private:
  void run_from(Node* start) {
    bool started = false;
    for (std::size_t i = used_; i-- > 0;) {
      Node* n = &chunks_[i / kChunk][i % kChunk];
      if (n == start) started = true;
      if (!started || !n->backward || !n->grad.defined()) continue;
      n->backward();
    }
  }

 public:

  /// Forgets every op output of this step (their Vars become invalid).
  void clear() {
    for (std::size_t i = 0; i < used_; ++i) {
      Node& n = chunks_[i / kChunk][i % kChunk];
      n.backward.reset();
      n.value = Tensor();
      n.grad = Tensor();
      n.requires_grad = false;
      n.op = "leaf";
    }
    used_ = 0;
  }

 private:
  std::vector<std::unique_ptr<Node[]>> chunks_;
  std::size_t used_ = 0;
};

/// The calling thread's tape.
inline Tape& tape() {
  thread_local Tape t;
  return t;
}

/// Ends a step: clears the tape and the step arena. Every op-made Var and tensor becomes invalid.
inline void end_step() {
  tape().clear();
  step_arena().reset();
}

inline void backward(const Var& loss) { tape().backward(loss); }

/// A Var for a value that needs no gradient (a batch input): lives until end_step().
inline Var constant(const Tensor& value) {
  Node* n = tape().new_node();
  n->value = value;
  return Var(n);
}

namespace detail {
/// An op's output: a fresh arena tensor of `shape` on the tape; it requires grad when grad
/// mode is on and any input does.
template <class... Vars>
Var make_output(const char* op, const Shape& shape, DType dtype, const Vars&... inputs) {
  Node* n = tape().new_node();
  n->value = step_arena().tensor(shape, dtype);
  n->op = op;
  n->requires_grad = grad_enabled() && (false || ... || inputs.requires_grad());
  return Var(n);
}
/// Attaches `fn` as the backward of `out` (only when out requires grad).
template <class F>
void record(const Var& out, F&& fn) {
  if (out.requires_grad()) out.node()->backward.assign(std::forward<F>(fn));
}
}  // namespace detail

/// A trainable tensor: owns its node, value and gradient; survives end_step().
class Parameter {
 public:
  Parameter() : node_(std::make_unique<Node>()) {}
  explicit Parameter(Tensor init) : Parameter() { set(std::move(init)); }
  void set(Tensor init) {
    RECHUB_CHECK(init.dtype() == DType::f32, "Parameter: values must be float32");
    node_->value = std::move(init);
    node_->grad = Tensor::zeros(node_->value.shape());
    node_->requires_grad = true;
    node_->persistent = true;
    node_->op = "parameter";
  }
  Var var() const { return Var(node_.get()); }
  operator Var() const { return var(); }
  Tensor& value() { return node_->value; }
  const Tensor& value() const { return node_->value; }
  Tensor& grad() { return node_->grad; }
  const Tensor& grad() const { return node_->grad; }
  const Shape& shape() const { return node_->value.shape(); }
  std::int64_t numel() const { return node_->value.numel(); }
  /// Freezes or unfreezes the parameter.
  void set_requires_grad(bool on) { node_->requires_grad = on; }
  bool requires_grad() const { return node_->requires_grad; }
  /// Tracks which rows receive gradient (embedding tables under lazy Adam).
  void track_rows(bool on) {
    if (on) {
      rows_ = std::make_unique<detail::RowSet>();
      rows_->marked.assign(static_cast<std::size_t>(node_->value.dim(0)), 0);
      node_->touched = rows_.get();
    } else {
      node_->touched = nullptr;
      rows_.reset();
    }
  }
  detail::RowSet* touched_rows() const { return rows_.get(); }
  void zero_grad() { node_->grad.zero_(); }

 private:
  std::unique_ptr<Node> node_;
  std::unique_ptr<detail::RowSet> rows_;
};

}  // namespace rechub
