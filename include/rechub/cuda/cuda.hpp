#pragma once
// rechub::cuda: the CUDA backend's host-side API (link rechub::cuda, built from kernels/ when
// RECHUB_CUDA=ON). This header includes no CUDA header, so code built on the CPU engine can call
// it with a plain C++ compiler.
//
// Runtime (kernels/runtime.cu): one device, one stream, one cuBLAS handle, and a caching
// allocator installed as detail::cuda_allocator(), so Tensor::empty(shape, dtype, Device::cuda)
// returns device memory. Every launcher below enqueues on that stream and returns before the GPU
// finishes; to_host() and synchronize() wait. Memory returned to the cache is reused only by
// later work on the same stream, which is ordered after every kernel that used it.
//
// Launchers follow llm.c's order: outputs first, then inputs, then sizes (B, L, D, ...). Every
// pointer is a DEVICE pointer. Gradient outputs ACCUMULATE (+=) like every gradient in rechub and
// may be null when that input needs no gradient. The upstream gradient of a scalar loss (dloss)
// is read on the device, so no backward ever waits for the host. Each launcher mirrors a CPU op
// (named in its comment), whose header states the math; tests/cuda/test_cuda_parity.cpp compares
// the two. Launchers validate only sizes: id and label ranges are the CPU front-ends' job (they
// see the host batch before it is copied).
//
// Errors: every failing CUDA or cuBLAS call throws rechub::CudaError naming the call and the
// CUDA error text.
#include <cstddef>
#include <cstdint>
#include <string>

#include "rechub/core/tensor.hpp"

namespace rechub::cuda {

// ---- runtime: kernels/runtime.cu --------------------------------------------------------------

/// Number of CUDA devices; 0 when there is no driver, no device, or the runtime fails. Never throws.
int device_count();
/// True when cudaGetDeviceCount succeeds and reports at least one device. Never throws.
bool available();
/// The first device's name and compute capability, or why there is none (the CUDA error text).
std::string describe();
/// Selects `device`, creates the stream and cuBLAS handle and installs the allocator. Every
/// other call does this for device 0 on first use; call it first to pick another device.
void init(int device = 0);
/// The device in use (-1 before init).
int current_device();
/// Waits for all work enqueued on the backend's stream.
void synchronize();
/// The backend's stream as an opaque handle (a cudaStream_t).
void* stream();
/// Allows TF32 tensor cores in cuBLAS GEMMs (off by default: FP32 results, as on the CPU).
void set_allow_tf32(bool on);

/// Caching allocator counters, in bytes.
struct AllocatorStats {
  std::size_t in_use = 0;        // handed out and not yet returned
  std::size_t cached = 0;        // returned and kept for reuse
  std::size_t peak_in_use = 0;
  std::int64_t device_mallocs = 0;  // cudaMalloc calls so far (flat in a steady-state step)
};
AllocatorStats allocator_stats();
/// Returns every cached block to the driver (after a device synchronize).
void empty_cache();
/// Device memory from the caching allocator (what Tensor storage on Device::cuda uses).
void* device_alloc(std::size_t bytes);
void device_free(void* p);

/// Uninitialised device tensor.
Tensor empty(const Shape& s, DType t = DType::f32);
/// Zero-filled device tensor.
Tensor zeros(const Shape& s, DType t = DType::f32);
/// A host tensor copied to the device (a device tensor is returned as is).
Tensor to_device(const Tensor& t);
/// A device tensor copied to an owned host tensor, after waiting for the stream (a host tensor
/// is returned as is).
Tensor to_host(const Tensor& t);
/// Copies src into dst (same numel and dtype), in any direction; waits when dst is on the host.
void copy(const Tensor& dst, const Tensor& src);
/// Zero-fills a device tensor (Tensor::zero_ is host-only).
void zero(const Tensor& t);
/// Zero-fills `bytes` bytes of device memory at p.
void memset_zero(void* p, std::size_t bytes);

/// Row-major C = alpha op(A) op(B) + beta C on cuBLAS, op(A) [M, K], op(B) [K, N] (detail::gemm's
/// contract, CPU ops/gemm.hpp).
void gemm(bool trans_a, bool trans_b, std::int64_t M, std::int64_t N, std::int64_t K, float alpha, const float* A,
          std::int64_t lda, const float* B, std::int64_t ldb, float beta, float* C, std::int64_t ldc);

// ---- elementwise: kernels/elementwise.cu (CPU ops/elementwise.hpp, ops/activation.hpp) ---------

enum class BinaryOp : std::uint8_t { add, sub, mul, div };
/// The activations fused kernels apply; same order and values as rechub::ActKind.
enum class Act : std::uint8_t { none, relu, prelu, sigmoid, tanh };

/// A broadcast loop nest, as the CPU's detail::plan_broadcast collapses it: nd dims (innermost
/// last) of sizes d, with each operand's element strides sa / sb (0 along broadcast dims).
struct BroadcastPlan {
  int nd = 1;
  std::int64_t d[4] = {0, 1, 1, 1};
  std::int64_t sa[4] = {1, 0, 0, 0};
  std::int64_t sb[4] = {1, 0, 0, 0};
};
/// a and b of the same n elements.
inline BroadcastPlan broadcast_same(std::int64_t n) {
  BroadcastPlan p;
  p.d[0] = n;
  return p;
}
/// a [rows, cols] against b [cols] (trailing broadcast: a bias added to every row).
inline BroadcastPlan broadcast_rows(std::int64_t rows, std::int64_t cols) {
  BroadcastPlan p;
  p.nd = 2;
  p.d[0] = rows;
  p.d[1] = cols;
  p.sa[0] = cols;
  p.sa[1] = 1;
  p.sb[0] = 0;
  p.sb[1] = 1;
  return p;
}

/// add / sub / mul / div forward: y = a op b over the plan.
void binary_forward(BinaryOp op, float* y, const float* a, const float* b, const BroadcastPlan& p);
/// Their backward: da += local gradient, summed over the dims a is broadcast along (same for db),
/// in a fixed order (deterministic). y is the forward output (div's db needs it).
void binary_backward(BinaryOp op, float* da, float* db, const float* g, const float* a, const float* b,
                     const float* y, const BroadcastPlan& p);
/// y = c x (scale).
void scale_forward(float* y, const float* x, float c, std::int64_t n);
/// y += alpha x (scale's backward, and gradient accumulation in general).
void axpy(float* y, float alpha, const float* x, std::int64_t n);

/// y = act(x + bias) over rows x C (relu / sigmoid / tanh / prelu, and the epilogue of
/// linear_act). bias [C] and slope (prelu, [na] with na 1 or C) may be null; x may equal y. z,
/// when not null, receives x + bias (prelu's backward needs it).
void bias_act_forward(Act act, float* y, float* z, const float* x, const float* bias, const float* slope,
                      std::int64_t na, std::int64_t rows, std::int64_t C);
/// With G = g act'(z): dx += G, G_out = G (written, not accumulated), dbias += column sums of G,
/// dslope += sum g min(z, 0) per column (or in total when na == 1). Every output may be null.
/// z may be null for the kinds whose derivative y determines (none, relu, sigmoid, tanh).
void bias_act_backward(Act act, float* dx, float* G_out, float* dbias, float* dslope, const float* g, const float* z,
                       const float* y, const float* slope, std::int64_t na, std::int64_t rows, std::int64_t C);
/// linear_act forward: y = act(x W^T + b), x [rows, in], W [out, in]; z [rows, out] receives the
/// pre-activation when act is prelu (else may be null).
void linear_act_forward(Act act, float* y, float* z, const float* x, const float* w, const float* bias,
                        const float* slope, std::int64_t na, std::int64_t rows, std::int64_t in, std::int64_t out);
/// linear_act backward: G = dy act'(z); dx += G W, dw += G^T x, dbias += colsum G, dslope as above.
void linear_act_backward(Act act, float* dx, float* dw, float* dbias, float* dslope, const float* dy,
                         const float* x, const float* w, const float* z, const float* y, const float* slope,
                         std::int64_t na, std::int64_t rows, std::int64_t in, std::int64_t out);

// ---- reductions: kernels/reduce.cu (CPU ops/reduce.hpp) ---------------------------------------

/// y[0] = scale * sum of x (accumulated in double, fixed order).
void sum_all_forward(float* y, const float* x, std::int64_t n, float scale);
/// dx += scale * dy[0].
void sum_all_backward(float* dx, const float* dy, std::int64_t n, float scale);
/// y[o, i] = scale * sum_j x[o, j, i] over x viewed as [outer, len, inner].
void sum_dim_forward(float* y, const float* x, std::int64_t outer, std::int64_t len, std::int64_t inner, float scale);
/// dx[o, j, i] += scale * dy[o, i].
void sum_dim_backward(float* dx, const float* dy, std::int64_t outer, std::int64_t len, std::int64_t inner,
                      float scale);
/// masked_mean: y [B, D] from x [B, L, D] and mask int32 [B, L]; w [B, L] receives m / n_b for the backward.
void masked_mean_forward(float* y, float* w, const float* x, const std::int32_t* mask, std::int64_t B,
                         std::int64_t L, std::int64_t D);
/// dx[b, l] += w[b, l] dy[b].
void masked_mean_backward(float* dx, const float* dy, const float* w, std::int64_t B, std::int64_t L,
                          std::int64_t D);

// ---- softmax: kernels/softmax.cu (CPU ops/softmax.hpp) ----------------------------------------

/// How the rows of x map to the rows of a broadcast mask (the CPU's detail::MaskRows): x's leading
/// dims padded to 3 (e) with the mask's row stride per leading dim (s; 0 where the mask has size 1).
struct MaskRows {
  std::int64_t e[3] = {1, 1, 1};
  std::int64_t s[3] = {0, 0, 0};
};
/// A mask [rows, L] with one row per row of x.
inline MaskRows mask_rows_same(std::int64_t rows) {
  MaskRows m;
  m.e[2] = rows;
  m.s[2] = 1;
  return m;
}
/// softmax (log = false) or log_softmax over the last dim of x [rows, L]; mask (int32, nonzero =
/// keep) may be null. Masked positions and fully masked rows output 0.
void softmax_forward(bool log, float* y, const float* x, const std::int32_t* mask, const MaskRows& mr,
                     std::int64_t rows, std::int64_t L);
/// Their backward (log_softmax reads the mask again to leave masked positions out).
void softmax_backward(bool log, float* dx, const float* g, const float* y, const std::int32_t* mask,
                      const MaskRows& mr, std::int64_t rows, std::int64_t L);

// ---- normalisation: kernels/norm.cu (CPU ops/norm.hpp) ----------------------------------------

/// layer_norm over the last dim of x [rows, D]; gamma / beta may be null; stats [rows, 2] receives (mean, rstd).
void layer_norm_forward(float* y, float* stats, const float* x, const float* gamma, const float* beta,
                        std::int64_t rows, std::int64_t D, float eps);
void layer_norm_backward(float* dx, float* dgamma, float* dbeta, const float* g, const float* x, const float* stats,
                         const float* gamma, std::int64_t rows, std::int64_t D);
/// act(batch_norm1d(x)) for x [N, C] (batch_norm1d_act). cols [6, C] is the op's saved state
/// (invstd, -mean invstd, folded scale A, folded shift B, prelu slope per column, mean);
/// running_mean / running_var may be null in training and are updated in place.
void batch_norm1d_forward(Act act, float* y, float* cols, float* running_mean, float* running_var, const float* x,
                          const float* gamma, const float* beta, const float* slope, std::int64_t na, std::int64_t N,
                          std::int64_t C, bool training, float momentum, float eps);
void batch_norm1d_backward(Act act, float* dx, float* dgamma, float* dbeta, float* dslope, const float* g,
                           const float* x, const float* y, const float* cols, std::int64_t na, std::int64_t N,
                           std::int64_t C, bool training);
/// x / max(||x||, eps) per row of x [rows, D]; denom [rows] receives max(||x||, eps).
void l2_normalize_forward(float* y, float* denom, const float* x, std::int64_t rows, std::int64_t D, float eps);
void l2_normalize_backward(float* dx, const float* g, const float* y, const float* denom, std::int64_t rows,
                           std::int64_t D, float eps);

// ---- embeddings: kernels/embedding.cu (CPU ops/index.hpp) -------------------------------------

/// How embedding_bag pools; same order and values as rechub::BagMode.
enum class Bag : std::uint8_t { sum, mean, concat };
/// How table gradients are scattered: `sorted` sorts the ids and sums each row's contributions
/// in id-position order (deterministic, the CPU's order); `atomic` uses float atomics (faster on
/// hot rows, run-to-run differences in the last bits).
enum class Scatter : std::uint8_t { sorted, atomic };

/// gather_rows: y[i] = table[ids[i]] for n ids, rows of D floats.
void gather_rows_forward(float* y, const float* table, const std::int32_t* ids, std::int64_t n, std::int64_t D);
/// embedding_bag over ids [B, L]: y [B, D] (sum / mean) or [B, L, D] (concat); ids equal to
/// padding_idx (-1: none) are skipped. scale [B] (nullable; sum / mean only) receives the
/// per-row factor of the backward (1, 1 / n_b, or 0 for a row of padding only).
void embedding_bag_forward(Bag mode, float* y, float* scale, const float* table, const std::int32_t* ids,
                           std::int64_t B, std::int64_t L, std::int64_t D, std::int32_t padding_idx);
/// The table gradient of both (detail::scatter_add_rows): for i in [0, n) with ids[i] != skip,
/// dtable[ids[i]] += scale[i / ids_per_grad] * dy[i / ids_per_grad] (scale null: 1). gather_rows
/// uses ids_per_grad 1 and no scale; sum / mean bags ids_per_grad L with the forward's scale;
/// concat 1 with no scale. touched [V] (nullable) gets 1 for every row that receives gradient
/// (the CPU's mark_row, for lazy Adam). Ids must lie in [0, V).
void embedding_backward(Scatter how, float* dtable, std::uint8_t* touched, const float* dy, const std::int32_t* ids,
                        const float* scale, std::int64_t n, std::int64_t ids_per_grad, std::int64_t V,
                        std::int64_t D, std::int32_t skip);

// ---- losses: kernels/loss.cu (CPU loss/*.hpp) -------------------------------------------------
// Each forward writes the scalar loss [1] (the batch mean, summed in double in a fixed order).

/// bce_with_logits on x [N] with float labels [N].
void bce_with_logits_forward(float* loss, const float* x, const float* label, std::int64_t N);
void bce_with_logits_backward(float* dx, const float* dloss, const float* x, const float* label, std::int64_t N);
/// bce on probabilities p [N] (logs clamped at -100, torch's BCELoss).
void bce_forward(float* loss, const float* p, const float* label, std::int64_t N);
void bce_backward(float* dp, const float* dloss, const float* p, const float* label, std::int64_t N);
/// bpr on pos [N] and neg [N, k].
void bpr_forward(float* loss, const float* pos, const float* neg, std::int64_t N, std::int64_t k);
void bpr_backward(float* dpos, float* dneg, const float* dloss, const float* pos, const float* neg, std::int64_t N,
                  std::int64_t k);
/// softmax_cross_entropy on logits x [N, C] / T with int32 targets [N], or listwise_softmax_ce
/// (target null: class 0). lse [N] receives each row's logsumexp for the backward.
void softmax_ce_forward(float* loss, float* lse, const float* x, const std::int32_t* target, std::int64_t N,
                        std::int64_t C, float T);
void softmax_ce_backward(float* dx, const float* dloss, const float* x, const float* lse, const std::int32_t* target,
                         std::int64_t N, std::int64_t C, float T);
/// inbatch_softmax on u, v [B, D]: P [B, B] receives the softmax of the corrected logits
/// (cuBLAS GEMM + one row kernel); log_q [B] and item_ids [B] may be null.
void inbatch_softmax_forward(float* loss, float* P, const float* u, const float* v, const float* log_q,
                             const std::int32_t* item_ids, std::int64_t B, std::int64_t D, float T);
void inbatch_softmax_backward(float* du, float* dv, const float* dloss, const float* P, const float* u,
                              const float* v, std::int64_t B, std::int64_t D, float T);

// ---- Adam: kernels/adam.cu (CPU optim/adam.hpp) -----------------------------------------------

/// The per-step scalars of torch.optim.Adam, computed in double and rounded once (as Adam does).
struct AdamScalars {
  float step_size, bc2_sqrt, w1, b2, w2, eps, wd;
};
AdamScalars adam_scalars(double lr, double beta1, double beta2, double eps, double weight_decay, std::int32_t step);
/// One fused dense update of n elements (w, m, v in place).
void adam_step(float* w, const float* g, float* m, float* v, std::int64_t n, const AdamScalars& c);
/// The lazy update: only the rows listed in rows [n_rows] (rows of `cols` floats).
void adam_step_rows(float* w, const float* g, float* m, float* v, const std::int32_t* rows, std::int64_t n_rows,
                    std::int64_t cols, const AdamScalars& c);
/// The lazy update on the rows flagged in touched [V] (embedding_backward's flags).
void adam_step_flagged(float* w, const float* g, float* m, float* v, const std::uint8_t* touched, std::int64_t V,
                       std::int64_t cols, const AdamScalars& c);
/// zero_grad of a lazy parameter: zeroes the flagged rows of g and clears the flags.
void zero_flagged_rows(float* g, std::uint8_t* touched, std::int64_t V, std::int64_t cols);

// ---- top-k: kernels/topk.cu (CPU ops/topk.hpp) ------------------------------------------------

/// Largest k supported by the block top-k.
constexpr std::int64_t kTopkMaxK = 4096;
/// The k largest entries of every row of scores [N, M], descending, ties to the lower index, NaN
/// ranked with -inf (ops/topk.hpp's order exactly): values [N, k], indices [N, k].
void topk(float* values, std::int32_t* indices, const float* scores, std::int64_t N, std::int64_t M, std::int64_t k);
/// Retrieval: top-k of queries [N, D] x items [M, D]^T, the scores made by cuBLAS in row chunks
/// (at most ~256 MiB of scores at a time) and ranked by topk().
void score_topk(float* values, std::int32_t* indices, const float* queries, const float* items, std::int64_t N,
                std::int64_t M, std::int64_t D, std::int64_t k);

}  // namespace rechub::cuda
