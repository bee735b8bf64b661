#pragma once
// Device hooks of the CPU ops: a table of function pointers that rechub::cuda fills at static
// initialisation (kernels/dispatch.cpp, with the Var-level ops of rechub/cuda/ops.hpp), so a
// header-only op can run on the GPU without including CUDA or any cuda/ header beyond this one.
//
// An op dispatches with two lines before its check_cpu:
//
//   #ifdef RECHUB_WITH_CUDA
//   if (X.device() == Device::cuda) return detail::cuda_hook("relu", detail::cuda_hooks().relu)(x);
//   #endif
//
// RECHUB_WITH_CUDA is defined for every target that links rechub::cuda, so the CPU-only build
// compiles none of it. A null hook throws CudaError "no CUDA path for op relu", check_cpu's
// message: an op without a kernel still fails loudly, never silently copies to the host.
#include <cstdint>
#include <string>

#include "rechub/autograd/tape.hpp"
#include "rechub/core/error.hpp"

namespace rechub {

enum class ActKind : std::uint8_t;  // ops/activation.hpp
enum class BagMode : std::uint8_t;  // ops/index.hpp
struct TopK;                        // ops/topk.hpp

namespace detail {

/// One entry per op with a CUDA path; the signatures are the CPU ops' own.
struct CudaHooks {
  Var (*add)(const Var&, const Var&) = nullptr;
  Var (*sub)(const Var&, const Var&) = nullptr;
  Var (*mul)(const Var&, const Var&) = nullptr;
  Var (*div)(const Var&, const Var&) = nullptr;
  Var (*scale)(const Var&, float) = nullptr;
  Var (*view)(const Var&, const Shape&) = nullptr;  // reshape and the other zero-copy views
  Var (*relu)(const Var&) = nullptr;
  Var (*sigmoid)(const Var&) = nullptr;
  Var (*tanh)(const Var&) = nullptr;
  Var (*prelu)(const Var&, const Var&) = nullptr;
  Var (*linear)(const Var&, const Var&, const Var&) = nullptr;
  Var (*linear_act)(const Var&, const Var&, const Var&, ActKind, const Var&) = nullptr;
  Var (*sum)(const Var&) = nullptr;
  Var (*mean)(const Var&) = nullptr;
  Var (*sum_dim)(const Var&, int, bool) = nullptr;
  Var (*mean_dim)(const Var&, int, bool) = nullptr;
  Var (*masked_mean)(const Var&, const Tensor&) = nullptr;
  Var (*softmax)(const Var&, const Tensor&) = nullptr;
  Var (*log_softmax)(const Var&, const Tensor&) = nullptr;
  Var (*layer_norm)(const Var&, const Var&, const Var&, float) = nullptr;
  Var (*batch_norm1d_act)(const Var&, const Var&, const Var&, Tensor&, Tensor&, bool, float, float, ActKind,
                          const Var&) = nullptr;
  Var (*l2_normalize)(const Var&, float) = nullptr;
  Var (*gather_rows)(const Var&, const Tensor&) = nullptr;
  Var (*embedding_bag)(const Var&, const Tensor&, BagMode, std::int32_t) = nullptr;
  Var (*bce_with_logits)(const Var&, const Tensor&) = nullptr;
  Var (*bce)(const Var&, const Tensor&) = nullptr;
  Var (*bpr)(const Var&, const Var&) = nullptr;
  Var (*softmax_cross_entropy)(const Var&, const Tensor&, float) = nullptr;
  Var (*listwise_softmax_ce)(const Var&, float) = nullptr;
  Var (*inbatch_softmax)(const Var&, const Var&, float, const float*, const std::int32_t*) = nullptr;
  TopK (*topk)(const Tensor&, std::int64_t) = nullptr;  // device scores -> device values / indices
};

inline CudaHooks& cuda_hooks() {
  static CudaHooks hooks;
  return hooks;
}

/// The hook, or CudaError "no CUDA path for op <op>" when rechub::cuda has none.
template <class F>
F cuda_hook(const char* op, F f) {
  if (!f) throw CudaError(std::string("no CUDA path for op ") + op);
  return f;
}

}  // namespace detail
}  // namespace rechub
