#pragma once
// Tensor: float32 or int32, row-major, up to 4 dims, with a device tag and shared storage.
//
// Two kinds of storage back a tensor:
//  * owned  — `Tensor::empty/zeros/...` allocate a Storage held by shared_ptr; copies and views
//             share it, the last one frees it (parameters, datasets, results).
//  * borrowed — `Tensor::view_of` wraps memory someone else owns (the per-step arena, a user
//             buffer); the tensor is valid only as long as that memory is.
// Views (reshape, slice of the leading dim, select) never copy; `clone()` always does.
#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <memory>
#include <string>

#include "rechub/core/error.hpp"

namespace rechub {

enum class DType : std::uint8_t { f32, i32 };
enum class Device : std::uint8_t { cpu, cuda };

inline const char* dtype_name(DType t) { return t == DType::f32 ? "float32" : "int32"; }
inline const char* device_name(Device d) { return d == Device::cpu ? "cpu" : "cuda"; }
inline std::size_t dtype_size(DType) { return 4; }  // both dtypes are 4 bytes wide

/// Up to four dimensions; the last one is contiguous.
class Shape {
 public:
  static constexpr int kMaxDims = 4;
  Shape() = default;
  Shape(std::initializer_list<std::int64_t> dims) {
    RECHUB_CHECK_SHAPE(dims.size() <= kMaxDims, "Shape: ", dims.size(), " dims, at most 4 supported");
    for (auto d : dims) push(d);
  }
  void push(std::int64_t d) {
    RECHUB_CHECK_SHAPE(nd_ < kMaxDims, "Shape: more than 4 dims");
    RECHUB_CHECK_SHAPE(d >= 0, "Shape: negative dim ", d);
    d_[nd_++] = d;
  }
  int ndim() const { return nd_; }
  std::int64_t operator[](int i) const { return d_[i < 0 ? i + nd_ : i]; }
  std::int64_t& operator[](int i) { return d_[i < 0 ? i + nd_ : i]; }
  std::int64_t numel() const {
    std::int64_t n = 1;
    for (int i = 0; i < nd_; ++i) n *= d_[i];
    return n;
  }
  bool operator==(const Shape& o) const {
    if (nd_ != o.nd_) return false;
    for (int i = 0; i < nd_; ++i)
      if (d_[i] != o.d_[i]) return false;
    return true;
  }
  bool operator!=(const Shape& o) const { return !(*this == o); }
  std::string str() const {
    std::string s = "[";
    for (int i = 0; i < nd_; ++i) s += (i ? ", " : "") + std::to_string(d_[i]);
    return s + "]";
  }

 private:
  std::array<std::int64_t, kMaxDims> d_{};
  int nd_ = 0;
};

namespace detail {
/// Device memory hooks; the CUDA backend installs them, the CPU build never calls them.
struct DeviceAllocator {
  void* (*alloc)(std::size_t bytes) = nullptr;
  void (*free)(void* p) = nullptr;
};
inline DeviceAllocator& cuda_allocator() {
  static DeviceAllocator a;
  return a;
}

struct Storage {
  void* data = nullptr;
  std::size_t bytes = 0;
  Device device = Device::cpu;
  Storage(std::size_t n, Device dev) : bytes(n), device(dev) {
    if (n == 0) return;
    if (dev == Device::cpu) {
      data = std::aligned_alloc(64, (n + 63) / 64 * 64);
      if (!data) throw Error("Tensor: out of memory allocating " + std::to_string(n) + " bytes");
    } else {
      auto& a = cuda_allocator();
      if (!a.alloc) throw CudaError("Tensor: no CUDA backend linked (build with RECHUB_CUDA=ON and link rechub::cuda)");
      data = a.alloc(n);
    }
  }
  ~Storage() {
    if (!data) return;
    if (device == Device::cpu) std::free(data);
    else cuda_allocator().free(data);
  }
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
};
}  // namespace detail

class Tensor {
 public:
  Tensor() = default;

  /// Owned, uninitialised.
  static Tensor empty(const Shape& s, DType t = DType::f32, Device dev = Device::cpu) {
    Tensor x;
    x.owner_ = std::make_shared<detail::Storage>(static_cast<std::size_t>(s.numel()) * dtype_size(t), dev);
    x.data_ = x.owner_->data;
    x.shape_ = s;
    x.dtype_ = t;
    x.device_ = dev;
    return x;
  }
  static Tensor zeros(const Shape& s, DType t = DType::f32) {
    Tensor x = empty(s, t);
    x.zero_();
    return x;
  }
  static Tensor full(const Shape& s, float v) {
    Tensor x = empty(s, DType::f32);
    x.fill_(v);
    return x;
  }
  /// Borrowed: wraps memory owned elsewhere (arena, user buffer). No copy, no ownership.
  static Tensor view_of(void* data, const Shape& s, DType t = DType::f32, Device dev = Device::cpu) {
    Tensor x;
    x.data_ = data;
    x.shape_ = s;
    x.dtype_ = t;
    x.device_ = dev;
    return x;
  }
  /// Owned copy of host values.
  static Tensor from_vector(const Shape& s, const float* v) {
    Tensor x = empty(s, DType::f32);
    std::memcpy(x.data_, v, x.nbytes());
    return x;
  }
  static Tensor from_vector(const Shape& s, const std::int32_t* v) {
    Tensor x = empty(s, DType::i32);
    std::memcpy(x.data_, v, x.nbytes());
    return x;
  }

  bool defined() const { return data_ != nullptr || shape_.ndim() > 0; }
  const Shape& shape() const { return shape_; }
  int ndim() const { return shape_.ndim(); }
  std::int64_t dim(int i) const { return shape_[i]; }
  std::int64_t numel() const { return shape_.numel(); }
  std::size_t nbytes() const { return static_cast<std::size_t>(numel()) * dtype_size(dtype_); }
  /// Product of all dims but the last (1 for a 1-d or 0-d tensor).
  std::int64_t rows() const { return ndim() <= 1 ? 1 : numel() / shape_[-1]; }
  /// The last dim (the number of elements for 0-d: 1).
  std::int64_t cols() const { return ndim() == 0 ? 1 : shape_[-1]; }
  DType dtype() const { return dtype_; }
  Device device() const { return device_; }
  bool is_owned() const { return owner_ != nullptr; }

  void* raw() const { return data_; }
  float* f32() const {
    RECHUB_CHECK_SHAPE(dtype_ == DType::f32, "Tensor::f32: tensor ", shape_.str(), " is ", dtype_name(dtype_));
    return static_cast<float*>(data_);
  }
  std::int32_t* i32() const {
    RECHUB_CHECK_SHAPE(dtype_ == DType::i32, "Tensor::i32: tensor ", shape_.str(), " is ", dtype_name(dtype_));
    return static_cast<std::int32_t*>(data_);
  }
  /// Element access for tests and small host code (CPU only, no bounds beyond an assert).
  float& at(std::int64_t i) const { return f32()[i]; }

  /// Same storage, new shape with the same number of elements.
  Tensor reshape(const Shape& s) const {
    RECHUB_CHECK_SHAPE(s.numel() == numel(), "reshape: cannot view ", shape_.str(), " as ", s.str());
    Tensor x = *this;
    x.shape_ = s;
    return x;
  }
  /// Rows [begin, end) of the leading dim, sharing storage.
  Tensor slice(std::int64_t begin, std::int64_t end) const {
    RECHUB_CHECK_SHAPE(ndim() >= 1 && 0 <= begin && begin <= end && end <= shape_[0], "slice: [", begin, ", ", end,
                       ") out of range for ", shape_.str());
    Tensor x = *this;
    std::int64_t inner = shape_[0] == 0 ? 0 : numel() / shape_[0];
    x.data_ = static_cast<char*>(data_) + begin * inner * static_cast<std::int64_t>(dtype_size(dtype_));
    x.shape_[0] = end - begin;
    return x;
  }
  /// Index `i` of the leading dim, dropping that dim.
  Tensor select(std::int64_t i) const {
    Tensor x = slice(i, i + 1);
    Shape s;
    for (int k = 1; k < ndim(); ++k) s.push(shape_[k]);
    x.shape_ = s;
    return x;
  }
  /// Owned deep copy (CPU).
  Tensor clone() const {
    Tensor x = empty(shape_, dtype_, device_);
    RECHUB_CHECK(device_ == Device::cpu, "Tensor::clone: use cuda::copy for device tensors");
    if (nbytes()) std::memcpy(x.data_, data_, nbytes());
    return x;
  }
  void copy_from(const Tensor& src) {
    RECHUB_CHECK_SHAPE(src.numel() == numel() && src.dtype_ == dtype_, "copy_from: ", src.shape_.str(), " ",
                       dtype_name(src.dtype_), " into ", shape_.str(), " ", dtype_name(dtype_));
    if (nbytes()) std::memcpy(data_, src.data_, nbytes());
  }
  Tensor& zero_() {
    if (nbytes()) std::memset(data_, 0, nbytes());
    return *this;
  }
  Tensor& fill_(float v) {
    float* p = f32();
    std::fill(p, p + numel(), v);
    return *this;
  }
  Tensor& fill_(std::int32_t v) {
    std::int32_t* p = i32();
    std::fill(p, p + numel(), v);
    return *this;
  }

 private:
  std::shared_ptr<detail::Storage> owner_;
  void* data_ = nullptr;
  Shape shape_;
  DType dtype_ = DType::f32;
  Device device_ = Device::cpu;
};

}  // namespace rechub
