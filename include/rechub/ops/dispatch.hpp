#pragma once
// Device dispatch for ops. Every op checks its tensors' device here; an op with no CUDA path
// fails loudly instead of silently copying to the host.
#include <string>

#include "rechub/autograd/tape.hpp"
#include "rechub/core/parallel.hpp"
#include "rechub/core/error.hpp"

namespace rechub::detail {

inline void check_cpu(const char* op, const Tensor& t) {
  if (t.device() != Device::cpu) throw CudaError(std::string("no CUDA path for op ") + op);
}
template <class... Ts>
void check_cpu(const char* op, const Tensor& t, const Ts&... rest) {
  check_cpu(op, t);
  check_cpu(op, rest...);
}
inline void check_f32(const char* op, const Tensor& t, const char* name) {
  RECHUB_CHECK_SHAPE(t.dtype() == DType::f32, op, ": ", name, " must be float32, got ", dtype_name(t.dtype()), " ",
                     t.shape().str());
}
inline void check_i32(const char* op, const Tensor& t, const char* name) {
  RECHUB_CHECK_SHAPE(t.dtype() == DType::i32, op, ": ", name, " must be int32, got ", dtype_name(t.dtype()), " ",
                     t.shape().str());
}

}  // namespace rechub::detail
