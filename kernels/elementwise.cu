// Elementwise kernels: broadcast add / sub / mul / div with their reducing backward, scale, and
// bias + activation fused (the epilogue of linear_act and the standalone activations).
// CPU references: ops/elementwise.hpp (binary, scale), ops/activation.hpp (relu, sigmoid, tanh,
// prelu, linear_act).
//
// The binary backward writes an operand's gradient as a reduction over the dims it is broadcast
// along: each operand element e gets sum_r local(out index of (e, r)), r running over the
// broadcast dims in row-major order. e equals the operand's own element offset (its strides are
// the row-major strides of its kept dims), so the output is written without atomics.
#include "common.cuh"

namespace rechub::cuda {

namespace {
using detail::cur_stream;
using detail::grid_for;
using detail::kThreads;

__device__ __forceinline__ float binary_value(BinaryOp op, float a, float b) {
  switch (op) {
    case BinaryOp::add:
      return a + b;
    case BinaryOp::sub:
      return a - b;
    case BinaryOp::mul:
      return a * b;
    default:
      return a / b;
  }
}
/// The local gradient of operand `which` (0 = a, 1 = b) given g, a, b and y = a op b.
__device__ __forceinline__ float binary_grad(BinaryOp op, int which, float g, float a, float b, float y) {
  switch (op) {
    case BinaryOp::add:
      return g;
    case BinaryOp::sub:
      return which == 0 ? g : -g;
    case BinaryOp::mul:
      return which == 0 ? g * b : g * a;
    default:
      return which == 0 ? g / b : -g * y / b;
  }
}

__global__ void binary_forward_kernel(BinaryOp op, float* y, const float* a, const float* b, BroadcastPlan p,
                                      std::int64_t n) {
  RECHUB_GRID_STRIDE(i, n) {
    std::int64_t rem = i, ia = 0, ib = 0;
    for (int k = p.nd - 1; k >= 0; --k) {
      const std::int64_t c = rem % p.d[k];
      rem /= p.d[k];
      ia += c * p.sa[k];
      ib += c * p.sb[k];
    }
    y[i] = binary_value(op, a[ia], b[ib]);
  }
}

/// The loop nest of one operand's gradient: kept dims (the operand's own, row-major) and reduced
/// dims (where it is broadcast), each with the output's and the other operand's strides.
struct GradPlan {
  int nk = 0, nr = 0;
  std::int64_t kd[4], ko[4], kx[4];  // kept: size, out stride, other-operand stride
  std::int64_t rd[4], ro[4], rx[4];  // reduced: the same
  std::int64_t E = 1, R = 1;         // kept and reduced element counts
};

GradPlan plan_grad(const BroadcastPlan& p, int which) {
  const std::int64_t* self = which == 0 ? p.sa : p.sb;
  const std::int64_t* other = which == 0 ? p.sb : p.sa;
  std::int64_t out_stride[4];
  std::int64_t s = 1;
  for (int k = p.nd - 1; k >= 0; --k) {
    out_stride[k] = s;
    s *= p.d[k];
  }
  GradPlan g;
  for (int k = 0; k < p.nd; ++k) {
    if (p.d[k] == 1) continue;
    if (self[k] != 0) {
      g.kd[g.nk] = p.d[k];
      g.ko[g.nk] = out_stride[k];
      g.kx[g.nk] = other[k];
      ++g.nk;
      g.E *= p.d[k];
    } else {
      g.rd[g.nr] = p.d[k];
      g.ro[g.nr] = out_stride[k];
      g.rx[g.nr] = other[k];
      ++g.nr;
      g.R *= p.d[k];
    }
  }
  return g;
}

/// R == 1: one output element per operand element.
__global__ void binary_grad_direct_kernel(BinaryOp op, int which, float* dself, const float* g, const float* a,
                                          const float* b, const float* y, GradPlan q) {
  RECHUB_GRID_STRIDE(e, q.E) {
    std::int64_t rem = e, io = 0, ix = 0;
    for (int k = q.nk - 1; k >= 0; --k) {
      const std::int64_t c = rem % q.kd[k];
      rem /= q.kd[k];
      io += c * q.ko[k];
      ix += c * q.kx[k];
    }
    const float av = which == 0 ? a[e] : a[ix], bv = which == 0 ? b[ix] : b[e];
    dself[e] += binary_grad(op, which, g[io], av, bv, y[io]);
  }
}

/// R > 1: block (32 operand elements) x (8 lanes over r); chunk blockIdx.y of the r range writes
/// partial[chunk][e]. Lanes combine in a fixed order.
__global__ void binary_grad_reduce_kernel(BinaryOp op, int which, float* partial, const float* g, const float* a,
                                          const float* b, const float* y, GradPlan q, std::int64_t chunk_r) {
  __shared__ float sh[detail::kColY][detail::kColX];
  const std::int64_t e = static_cast<std::int64_t>(blockIdx.x) * detail::kColX + threadIdx.x;
  const std::int64_t r0 = static_cast<std::int64_t>(blockIdx.y) * chunk_r;
  const std::int64_t r1 = r0 + chunk_r < q.R ? r0 + chunk_r : q.R;
  float acc = 0.0f;
  if (e < q.E) {
    std::int64_t rem = e, io0 = 0, ix0 = 0;
    for (int k = q.nk - 1; k >= 0; --k) {
      const std::int64_t c = rem % q.kd[k];
      rem /= q.kd[k];
      io0 += c * q.ko[k];
      ix0 += c * q.kx[k];
    }
    const float self_v = which == 0 ? a[e] : b[e];
    for (std::int64_t r = r0 + threadIdx.y; r < r1; r += detail::kColY) {
      std::int64_t rr = r, io = io0, ix = ix0;
      for (int k = q.nr - 1; k >= 0; --k) {
        const std::int64_t c = rr % q.rd[k];
        rr /= q.rd[k];
        io += c * q.ro[k];
        ix += c * q.rx[k];
      }
      const float av = which == 0 ? self_v : a[ix], bv = which == 0 ? b[ix] : self_v;
      acc += binary_grad(op, which, g[io], av, bv, y[io]);
    }
  }
  sh[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && e < q.E) {
    float s = 0.0f;
    for (int l = 0; l < detail::kColY; ++l) s += sh[l][threadIdx.x];
    partial[static_cast<std::int64_t>(blockIdx.y) * q.E + e] = s;
  }
}

__global__ void sum_chunks_into_kernel(float* dst, const float* partial, std::int64_t chunks, std::int64_t E) {
  RECHUB_GRID_STRIDE(e, E) {
    float s = 0.0f;
    for (std::int64_t k = 0; k < chunks; ++k) s += partial[k * E + e];
    dst[e] += s;
  }
}

void binary_grad(BinaryOp op, int which, float* dself, const float* g, const float* a, const float* b, const float* y,
                 const BroadcastPlan& p) {
  const GradPlan q = plan_grad(p, which);
  if (q.R == 1) {
    binary_grad_direct_kernel<<<grid_for(q.E), kThreads, 0, cur_stream()>>>(op, which, dself, g, a, b, y, q);
    RECHUB_CUDA_LAUNCHED("binary_grad_direct_kernel");
    return;
  }
  const std::int64_t chunks = detail::col_chunks(q.R), chunk_r = (q.R + chunks - 1) / chunks;
  detail::Scratch partial(static_cast<std::size_t>(chunks * q.E) * sizeof(float));
  const dim3 grid(static_cast<unsigned>((q.E + detail::kColX - 1) / detail::kColX), static_cast<unsigned>(chunks));
  binary_grad_reduce_kernel<<<grid, dim3(detail::kColX, detail::kColY), 0, cur_stream()>>>(
      op, which, partial.as<float>(), g, a, b, y, q, chunk_r);
  RECHUB_CUDA_LAUNCHED("binary_grad_reduce_kernel");
  sum_chunks_into_kernel<<<grid_for(q.E), kThreads, 0, cur_stream()>>>(dself, partial.as<float>(), chunks, q.E);
  RECHUB_CUDA_LAUNCHED("sum_chunks_into_kernel");
}

std::int64_t plan_numel(const BroadcastPlan& p) {
  RECHUB_CHECK_SHAPE(p.nd >= 1 && p.nd <= 4, "cuda::binary: plan has ", p.nd, " dims (1 to 4)");
  std::int64_t n = 1;
  for (int k = 0; k < p.nd; ++k) n *= p.d[k];
  return n;
}

__global__ void scale_kernel(float* y, const float* x, float c, std::int64_t n) {
  RECHUB_GRID_STRIDE(i, n) y[i] = c * x[i];
}
__global__ void axpy_kernel(float* y, float alpha, const float* x, std::int64_t n) {
  RECHUB_GRID_STRIDE(i, n) y[i] += alpha * x[i];
}

__global__ void bias_act_forward_kernel(Act act, float* y, float* z, const float* x, const float* bias,
                                        const float* slope, std::int64_t na, std::int64_t n, std::int64_t C) {
  RECHUB_GRID_STRIDE(i, n) {
    const std::int64_t c = i % C;
    const float v = bias ? x[i] + bias[c] : x[i];
    if (z) z[i] = v;
    y[i] = detail::act_value(act, v, slope ? slope[na == 1 ? 0 : c] : 0.0f);
  }
}

/// The column-reduction body of bias_act_backward: G per element (and dx, G_out), with column
/// sums of G (dbias) and of g min(z, 0) (prelu slope).
struct BiasActGrad {
  Act act;
  float *dx, *G;
  const float *g, *z, *y, *slope;
  std::int64_t na, C;
  __device__ void operator()(std::int64_t r, std::int64_t c, float* acc) const {
    const std::int64_t i = r * C + c;
    const float zi = z ? z[i] : y[i];
    const float a = slope ? slope[na == 1 ? 0 : c] : 0.0f;
    const float gi = detail::act_grad(act, g[i], zi, y[i], a);
    if (dx) dx[i] += gi;
    if (G) G[i] = gi;
    acc[0] += gi;
    acc[1] += g[i] * fminf(zi, 0.0f);
  }
};
__global__ void bias_act_grad_kernel(BiasActGrad f, std::int64_t n) {
  RECHUB_GRID_STRIDE(i, n) {
    float acc[2] = {0.0f, 0.0f};
    f(i / f.C, i % f.C, acc);
  }
}

}  // namespace

void binary_forward(BinaryOp op, float* y, const float* a, const float* b, const BroadcastPlan& p) {
  const std::int64_t n = plan_numel(p);
  if (n == 0) return;
  binary_forward_kernel<<<grid_for(n), kThreads, 0, cur_stream()>>>(op, y, a, b, p, n);
  RECHUB_CUDA_LAUNCHED("binary_forward_kernel");
}

void binary_backward(BinaryOp op, float* da, float* db, const float* g, const float* a, const float* b,
                     const float* y, const BroadcastPlan& p) {
  if (plan_numel(p) == 0) return;
  if (da) binary_grad(op, 0, da, g, a, b, y, p);
  if (db) binary_grad(op, 1, db, g, a, b, y, p);
}

void scale_forward(float* y, const float* x, float c, std::int64_t n) {
  if (n <= 0) return;
  scale_kernel<<<grid_for(n), kThreads, 0, cur_stream()>>>(y, x, c, n);
  RECHUB_CUDA_LAUNCHED("scale_kernel");
}

void axpy(float* y, float alpha, const float* x, std::int64_t n) {
  if (n <= 0) return;
  axpy_kernel<<<grid_for(n), kThreads, 0, cur_stream()>>>(y, alpha, x, n);
  RECHUB_CUDA_LAUNCHED("axpy_kernel");
}

void bias_act_forward(Act act, float* y, float* z, const float* x, const float* bias, const float* slope,
                      std::int64_t na, std::int64_t rows, std::int64_t C) {
  RECHUB_CHECK_SHAPE(act != Act::prelu || (slope && (na == 1 || na == C)), "cuda::bias_act_forward: prelu needs a [1] or [",
                     C, "] slope, got ", na);
  const std::int64_t n = rows * C;
  if (n <= 0) return;
  bias_act_forward_kernel<<<grid_for(n), kThreads, 0, cur_stream()>>>(act, y, z, x, bias, act == Act::prelu ? slope : nullptr,
                                                                      na, n, C);
  RECHUB_CUDA_LAUNCHED("bias_act_forward_kernel");
}

void bias_act_backward(Act act, float* dx, float* G_out, float* dbias, float* dslope, const float* g, const float* z,
                       const float* y, const float* slope, std::int64_t na, std::int64_t rows, std::int64_t C) {
  const bool prelu = act == Act::prelu;
  RECHUB_CHECK_SHAPE(!prelu || (slope && z && (na == 1 || na == C)), "cuda::bias_act_backward: prelu needs z and a [1] or [",
                     C, "] slope");
  if (rows * C <= 0) return;
  BiasActGrad f{act, dx, G_out, g, z, y, prelu ? slope : nullptr, na, C};
  const bool want_slope = prelu && dslope;
  if (!dbias && !want_slope) {  // elementwise only
    bias_act_grad_kernel<<<grid_for(rows * C), kThreads, 0, cur_stream()>>>(f, rows * C);
    RECHUB_CUDA_LAUNCHED("bias_act_grad_kernel");
    return;
  }
  // A single [1] slope takes the total of the per-column sums, gathered in zeroed scratch first.
  const bool total = want_slope && na == 1;
  detail::Scratch slope_cols(total ? static_cast<std::size_t>(C) * sizeof(float) : 0);
  if (total) memset_zero(slope_cols.as<float>(), static_cast<std::size_t>(C) * sizeof(float));
  float* slope_dst = want_slope ? (total ? slope_cols.as<float>() : dslope) : nullptr;
  detail::col_reduce<2>(f, rows, C, detail::ColDst{{dbias, slope_dst, nullptr, nullptr}}, /*accumulate=*/true);
  if (total) detail::add_total(dslope, slope_cols.as<float>(), C);
}

void linear_act_forward(Act act, float* y, float* z, const float* x, const float* w, const float* bias,
                        const float* slope, std::int64_t na, std::int64_t rows, std::int64_t in, std::int64_t out) {
  gemm(false, true, rows, out, in, 1.0f, x, in, w, in, 0.0f, y, out);
  if (act == Act::none && !bias) return;
  bias_act_forward(act, y, act == Act::prelu ? z : nullptr, y, bias, slope, na, rows, out);
}

void linear_act_backward(Act act, float* dx, float* dw, float* dbias, float* dslope, const float* dy,
                         const float* x, const float* w, const float* z, const float* y, const float* slope,
                         std::int64_t na, std::int64_t rows, std::int64_t in, std::int64_t out) {
  if (rows * out <= 0) return;
  detail::Scratch G(static_cast<std::size_t>(rows * out) * sizeof(float));
  bias_act_backward(act, nullptr, G.as<float>(), dbias, dslope, dy, act == Act::prelu ? z : nullptr, y, slope, na,
                    rows, out);
  if (dx) gemm(false, false, rows, in, out, 1.0f, G.as<float>(), out, w, in, 1.0f, dx, in);
  if (dw) gemm(true, false, out, in, rows, 1.0f, G.as<float>(), out, x, in, 1.0f, dw, in);
}

}  // namespace rechub::cuda
