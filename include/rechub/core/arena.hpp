#pragma once
// Per-step arena: a bump allocator for the temporaries of one training or inference step.
//
// Every op output and intermediate gradient lives here; `reset()` at the end of a step frees
// them all at once. When a step outgrew the first block, reset() replaces the blocks by one
// block as large as everything the step used, so from the second step on a steady-state step
// performs no heap allocation at all (tests/test_core.cpp counts them).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "rechub/core/tensor.hpp"

namespace rechub {

class Arena {
 public:
  static constexpr std::size_t kAlign = 64;

  explicit Arena(std::size_t first_block = std::size_t(1) << 20) : next_block_(first_block) {}
  ~Arena() { release(); }
  Arena(const Arena&) = delete;
  Arena& operator=(const Arena&) = delete;

  void* allocate(std::size_t bytes) {
    bytes = (bytes + kAlign - 1) / kAlign * kAlign;
    if (bytes == 0) bytes = kAlign;
    if (blocks_.empty() || blocks_.back().used + bytes > blocks_.back().size) add_block(bytes);
    Block& b = blocks_.back();
    void* p = b.mem + b.used;
    b.used += bytes;
    in_use_ += bytes;
    if (in_use_ > high_water_) high_water_ = in_use_;
    return p;
  }

  /// Uninitialised tensor valid until the next reset().
  Tensor tensor(const Shape& s, DType t = DType::f32) {
    return Tensor::view_of(allocate(static_cast<std::size_t>(s.numel()) * dtype_size(t)), s, t);
  }
  Tensor zeros(const Shape& s, DType t = DType::f32) {
    Tensor x = tensor(s, t);
    x.zero_();
    return x;
  }

  /// Frees every tensor handed out since the last reset.
  void reset() {
    if (blocks_.size() > 1) {
      std::size_t total = high_water_;
      release();
      next_block_ = total + total / 4;
      add_block(0);
    } else if (!blocks_.empty()) {
      blocks_.back().used = 0;
    }
    in_use_ = 0;
  }

  std::size_t bytes_in_use() const { return in_use_; }
  std::size_t high_water() const { return high_water_; }
  std::size_t blocks() const { return blocks_.size(); }

 private:
  struct Block {
    char* mem;
    std::size_t size;
    std::size_t used;
  };
  void add_block(std::size_t at_least) {
    std::size_t size = next_block_ > at_least ? next_block_ : at_least;
    size = (size + kAlign - 1) / kAlign * kAlign;  // aligned_alloc needs a multiple of the alignment
    char* mem = static_cast<char*>(std::aligned_alloc(kAlign, size));
    if (!mem) throw Error("Arena: out of memory allocating " + std::to_string(size) + " bytes");
    blocks_.push_back({mem, size, 0});
    next_block_ = size * 2;
  }
  void release() {
    for (auto& b : blocks_) std::free(b.mem);
    blocks_.clear();
  }

  std::vector<Block> blocks_;
  std::size_t next_block_;
  std::size_t in_use_ = 0;
  std::size_t high_water_ = 0;
};

/// The calling thread's step arena (ops allocate their outputs here).
inline Arena& step_arena() {
  thread_local Arena arena;
  return arena;
}

namespace detail {
/// A copy of n elements in the step arena: what a backward keeps of its caller's buffers, which
/// need not outlive the forward.
template <class T>
T* arena_copy(const T* src, std::int64_t n) {
  auto* dst = static_cast<T*>(step_arena().allocate(static_cast<std::size_t>(n) * sizeof(T)));
  if (n) std::memcpy(dst, src, static_cast<std::size_t>(n) * sizeof(T));
  return dst;
}
}  // namespace detail

}  // namespace rechub
