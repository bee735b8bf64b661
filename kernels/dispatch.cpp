// Fills the CPU ops' device hooks (rechub/cuda/hooks.hpp) with the Var-level device ops of
// rechub/cuda/ops.hpp. Plain C++: compiled by the host compiler into rechub::cuda. runtime.cu
// calls register_hooks() from its static initialiser, which also keeps this object file linked
// (a static library drops objects nothing refers to, and their initialisers with them).
#include "rechub/cuda/hooks.hpp"
#include "rechub/cuda/ops.hpp"
#include "rechub/ops/topk.hpp"

namespace rechub::cuda::detail {

namespace {
Var view_hook(const Var& x, const Shape& s) { return cuda::reshape(x, s); }
Var relu_hook(const Var& x) { return cuda::relu(x); }
Var sigmoid_hook(const Var& x) { return cuda::sigmoid(x); }
Var tanh_hook(const Var& x) { return cuda::tanh(x); }
Var linear_hook(const Var& x, const Var& w, const Var& b) { return cuda::linear(x, w, b); }
Var linear_act_hook(const Var& x, const Var& w, const Var& b, ActKind act, const Var& slope) {
  return cuda::linear_act(x, w, b, act, slope);
}
Var sum_hook(const Var& x) { return cuda::sum(x); }
Var mean_hook(const Var& x) { return cuda::mean(x); }
Var sum_dim_hook(const Var& x, int dim, bool keepdim) { return cuda::sum(x, dim, keepdim); }
Var mean_dim_hook(const Var& x, int dim, bool keepdim) { return cuda::mean(x, dim, keepdim); }
Var gather_rows_hook(const Var& t, const Tensor& ids) { return cuda::gather_rows(t, ids); }
Var embedding_bag_hook(const Var& t, const Tensor& ids, BagMode mode, std::int32_t pad) {
  return cuda::embedding_bag(t, ids, mode, pad);
}
Var inbatch_softmax_hook(const Var& u, const Var& v, float T, const float* log_q, const std::int32_t* item_ids) {
  // The CPU signature passes host arrays of B values; wrap them (ops.hpp copies them over).
  const std::int64_t B = u.value().ndim() >= 1 ? u.value().dim(0) : 0;
  const Tensor lq = log_q ? Tensor::view_of(const_cast<float*>(log_q), {B}) : Tensor();
  const Tensor ids = item_ids ? Tensor::view_of(const_cast<std::int32_t*>(item_ids), {B}, DType::i32) : Tensor();
  return cuda::inbatch_softmax(u, v, T, lq, ids);
}
TopK topk_hook(const Tensor& scores, std::int64_t k) {
  RECHUB_CHECK_SHAPE(scores.ndim() == 1 || scores.ndim() == 2, "topk: values must be [N, M] or [M], got ",
                     scores.shape().str());
  ::rechub::detail::check_f32("topk", scores, "values");
  const std::int64_t N = scores.rows(), M = scores.cols();
  const Shape out = scores.ndim() == 1 ? Shape{k} : Shape{N, k};
  RECHUB_CHECK_SHAPE(k >= 0 && k <= M, "topk: k = ", k, " must lie in [0, ", M, "] for values ",
                     scores.shape().str());
  TopK r{cuda::empty(out, DType::f32), cuda::empty(out, DType::i32)};
  cuda::topk(r.values.f32(), r.indices.i32(), scores.f32(), N, M, k);
  return r;
}
}  // namespace

void register_hooks() {
  ::rechub::detail::CudaHooks& h = ::rechub::detail::cuda_hooks();
  h.add = &cuda::add;
  h.sub = &cuda::sub;
  h.mul = &cuda::mul;
  h.div = &cuda::div;
  h.scale = &cuda::scale;
  h.view = &view_hook;
  h.relu = &relu_hook;
  h.sigmoid = &sigmoid_hook;
  h.tanh = &tanh_hook;
  h.prelu = &cuda::prelu;
  h.linear = &linear_hook;
  h.linear_act = &linear_act_hook;
  h.sum = &sum_hook;
  h.mean = &mean_hook;
  h.sum_dim = &sum_dim_hook;
  h.mean_dim = &mean_dim_hook;
  h.masked_mean = &cuda::masked_mean;
  h.softmax = &cuda::softmax;
  h.log_softmax = &cuda::log_softmax;
  h.layer_norm = &cuda::layer_norm;
  h.batch_norm1d_act = &cuda::batch_norm1d_act;
  h.l2_normalize = &cuda::l2_normalize;
  h.gather_rows = &gather_rows_hook;
  h.embedding_bag = &embedding_bag_hook;
  h.bce_with_logits = &cuda::bce_with_logits;
  h.bce = &cuda::bce;
  h.bpr = &cuda::bpr;
  h.softmax_cross_entropy = &cuda::softmax_cross_entropy;
  h.listwise_softmax_ce = &cuda::listwise_softmax_ce;
  h.inbatch_softmax = &inbatch_softmax_hook;
  h.topk = &topk_hook;
}

}  // namespace rechub::cuda::detail
