// Runtime of the CUDA backend: device selection, the one stream, the cuBLAS handle, the caching
// allocator behind Tensor storage on Device::cuda, host <-> device copies, and the GEMM wrapper.
//
// The allocator rounds requests up (512 B below 1 MiB, 2 MiB above) and keeps returned blocks in
// a size-ordered free list; a request takes the smallest cached block at least as large and at
// most twice its size. A training step allocates the same sizes every step, so from the second
// step on cudaMalloc is never called (allocator_stats().device_mallocs stays flat). Blocks go
// back to the driver only in empty_cache() or when cudaMalloc fails (then it retries once).
//
// The runtime state is created on first use and never destroyed: tensors released during static
// destruction still find their allocator (the driver reclaims the memory at exit).
#include <atomic>
#include <cstdio>
#include <map>
#include <mutex>
#include <string>
#include <unordered_map>

#include "common.cuh"

namespace rechub::cuda {

namespace detail {

void throw_cuda(const char* what, cudaError_t e, const char* file, int line) {
  cudaGetLastError();  // clear a sticky launch error so later calls report their own
  ::rechub::detail::throw_error<CudaError>("cuda: ", what, " failed: ", cudaGetErrorName(e), " (",
                                           cudaGetErrorString(e), ") at ", file, ":", line);
}
void throw_cublas(const char* what, cublasStatus_t s, const char* file, int line) {
  ::rechub::detail::throw_error<CudaError>("cuda: ", what, " failed: cuBLAS status ", static_cast<int>(s), " (",
                                           cublasGetStatusString(s), ") at ", file, ":", line);
}

namespace {

class CachingAllocator {
 public:
  void* alloc(std::size_t bytes) {
    const std::size_t n = round(bytes);
    std::lock_guard<std::mutex> lock(mu_);
    auto it = free_.lower_bound(n);
    if (it != free_.end() && it->first <= 2 * n) {
      void* p = it->second;
      const std::size_t size = it->first;
      free_.erase(it);
      cached_ -= size;
      take(p, size);
      return p;
    }
    void* p = nullptr;
    cudaError_t e = cudaMalloc(&p, n);
    if (e == cudaErrorMemoryAllocation) {  // give the cache back to the driver and retry once
      cudaGetLastError();
      release_cached_locked();
      e = cudaMalloc(&p, n);
    }
    if (e != cudaSuccess) {
      cudaGetLastError();
      ::rechub::detail::throw_error<CudaError>("cuda: out of device memory allocating ", bytes, " bytes (",
                                               cudaGetErrorString(e), "; ", in_use_, " bytes in use, ", cached_,
                                               " cached)");
    }
    ++mallocs_;
    take(p, n);
    return p;
  }
  void free(void* p) {
    if (!p) return;
    std::lock_guard<std::mutex> lock(mu_);
    auto it = live_.find(p);
    if (it == live_.end()) {
      std::fprintf(stderr, "rechub::cuda: free of %p, which the caching allocator did not hand out\n", p);
      return;
    }
    const std::size_t size = it->second;
    live_.erase(it);
    in_use_ -= size;
    cached_ += size;
    free_.emplace(size, p);
  }
  void empty_cache() {
    std::lock_guard<std::mutex> lock(mu_);
    release_cached_locked();
  }
  AllocatorStats stats() {
    std::lock_guard<std::mutex> lock(mu_);
    AllocatorStats s;
    s.in_use = in_use_;
    s.cached = cached_;
    s.peak_in_use = peak_;
    s.device_mallocs = mallocs_;
    return s;
  }

 private:
  static std::size_t round(std::size_t n) {
    constexpr std::size_t kSmall = 512, kLarge = std::size_t(2) << 20, kSplit = std::size_t(1) << 20;
    if (n == 0) n = 1;
    return n < kSplit ? (n + kSmall - 1) / kSmall * kSmall : (n + kLarge - 1) / kLarge * kLarge;
  }
  void take(void* p, std::size_t size) {
    live_.emplace(p, size);
    in_use_ += size;
    if (in_use_ > peak_) peak_ = in_use_;
  }
  void release_cached_locked() {
    if (free_.empty()) return;
    cudaDeviceSynchronize();  // a cached block may still be read by queued kernels
    for (auto& kv : free_) cudaFree(kv.second);
    free_.clear();
    cached_ = 0;
  }

  std::mutex mu_;
  std::multimap<std::size_t, void*> free_;
  std::unordered_map<void*, std::size_t> live_;
  std::size_t in_use_ = 0, cached_ = 0, peak_ = 0;
  std::int64_t mallocs_ = 0;
};

struct Runtime {
  std::mutex mu;
  std::atomic<bool> ready{false};
  int device = -1;
  cudaStream_t stream = nullptr;
  cublasHandle_t blas = nullptr;
  float* consts = nullptr;  // {0, 1} on the device
  CachingAllocator allocator;
};
Runtime& rt() {
  static Runtime* r = new Runtime;  // never destroyed (see the file comment)
  return *r;
}

void* hook_alloc(std::size_t bytes);
void hook_free(void* p) { rt().allocator.free(p); }
void install_hooks() {
  auto& a = ::rechub::detail::cuda_allocator();
  a.alloc = &hook_alloc;
  a.free = &hook_free;
}
// Linking rechub::cuda makes Device::cuda tensors allocatable and the CPU ops' device hooks
// filled before any explicit call; nothing touches the GPU until the first allocation.
struct InstallAtStartup {
  InstallAtStartup() {
    install_hooks();
    register_hooks();
  }
} install_at_startup;

/// Initialises device 0 on first use; makes the runtime's device current on every host thread.
void ensure_ready() {
  thread_local bool device_set = false;
  if (!rt().ready.load(std::memory_order_acquire)) init(0);
  if (!device_set) {
    RECHUB_CUDA_CHECK(cudaSetDevice(rt().device));
    device_set = true;
  }
}
void* hook_alloc(std::size_t bytes) {
  ensure_ready();
  return rt().allocator.alloc(bytes);
}

}  // namespace

cudaStream_t cur_stream() {
  ensure_ready();
  return rt().stream;
}
cublasHandle_t cublas() {
  ensure_ready();
  return rt().blas;
}
const float* device_zero() {
  ensure_ready();
  return rt().consts;
}
const float* device_one() {
  ensure_ready();
  return rt().consts + 1;
}

namespace {
__global__ void scale_matrix_kernel(float* C, std::int64_t M, std::int64_t N, std::int64_t ldc, float beta) {
  RECHUB_GRID_STRIDE(i, M * N) {
    float& c = C[(i / N) * ldc + i % N];
    c = beta == 0.0f ? 0.0f : beta * c;
  }
}
void check_gemm_dims(std::int64_t M, std::int64_t N, std::int64_t K, std::int64_t lda, std::int64_t ldb,
                     std::int64_t ldc) {
  constexpr std::int64_t kMax = 2147483647;
  RECHUB_CHECK_AS(CudaError, M <= kMax && N <= kMax && K <= kMax && lda <= kMax && ldb <= kMax && ldc <= kMax,
                  "cuda::gemm: sizes M=", M, " N=", N, " K=", K, " exceed cuBLAS's int range");
}
// Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: swap the operands.
void sgemm(bool ta, bool tb, std::int64_t M, std::int64_t N, std::int64_t K, const float* alpha, const float* A,
           std::int64_t lda, const float* B, std::int64_t ldb, const float* beta, float* C, std::int64_t ldc) {
  RECHUB_CUBLAS_CHECK(cublasSgemm(cublas(), tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N,
                                  static_cast<int>(N), static_cast<int>(M), static_cast<int>(K), alpha, B,
                                  static_cast<int>(ldb), A, static_cast<int>(lda), beta, C, static_cast<int>(ldc)));
}
}  // namespace

void gemm_device_scalars(bool ta, bool tb, std::int64_t M, std::int64_t N, std::int64_t K, const float* alpha,
                         const float* A, std::int64_t lda, const float* B, std::int64_t ldb, const float* beta,
                         float* C, std::int64_t ldc) {
  if (M == 0 || N == 0 || K == 0) return;  // K == 0 only happens with beta = 1 here (accumulating)
  check_gemm_dims(M, N, K, lda, ldb, ldc);
  cublasHandle_t h = cublas();  // initialises before taking the runtime's lock (init takes it too)
  std::lock_guard<std::mutex> lock(rt().mu);  // the pointer mode is handle state
  RECHUB_CUBLAS_CHECK(cublasSetPointerMode(h, CUBLAS_POINTER_MODE_DEVICE));
  try {
    sgemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  } catch (...) {
    cublasSetPointerMode(h, CUBLAS_POINTER_MODE_HOST);
    throw;
  }
  RECHUB_CUBLAS_CHECK(cublasSetPointerMode(h, CUBLAS_POINTER_MODE_HOST));
}

namespace {
__global__ void add_total_kernel(float* dst, const float* v, std::int64_t n) {
  __shared__ float sh[32];
  float s = 0.0f;
  for (std::int64_t i = threadIdx.x; i < n; i += blockDim.x) s += v[i];
  s = block_sum(s, sh);
  if (threadIdx.x == 0) dst[0] += s;
}
__global__ void add_vector_kernel(float* dst, const float* v, std::int64_t n) {
  RECHUB_GRID_STRIDE(i, n) dst[i] += v[i];
}
}  // namespace

void add_total(float* dst, const float* v, std::int64_t n) {
  add_total_kernel<<<1, kThreads, 0, cur_stream()>>>(dst, v, n);
  RECHUB_CUDA_LAUNCHED("add_total_kernel");
}
void add_vector(float* dst, const float* v, std::int64_t n) {
  if (n <= 0) return;
  add_vector_kernel<<<grid_for(n), kThreads, 0, cur_stream()>>>(dst, v, n);
  RECHUB_CUDA_LAUNCHED("add_vector_kernel");
}

}  // namespace detail

using detail::cur_stream;
using detail::rt;

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return n;
}

bool available() { return device_count() > 0; }

std::string describe() {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    cudaGetLastError();
    return std::string("no CUDA device (cudaGetDeviceCount: ") + cudaGetErrorName(e) + ": " + cudaGetErrorString(e) +
           ")";
  }
  if (n == 0) return "no CUDA device (cudaGetDeviceCount returned 0)";
  cudaDeviceProp p{};
  if (cudaGetDeviceProperties(&p, 0) != cudaSuccess) {
    cudaGetLastError();
    return std::to_string(n) + " CUDA device(s)";
  }
  return std::string(p.name) + " (compute capability " + std::to_string(p.major) + "." + std::to_string(p.minor) +
         ", " + std::to_string(p.totalGlobalMem >> 20) + " MiB), " + std::to_string(n) + " device(s)";
}

void init(int device) {
  auto& r = rt();
  std::lock_guard<std::mutex> lock(r.mu);
  if (r.ready.load(std::memory_order_acquire)) {
    RECHUB_CHECK_AS(CudaError, device == r.device, "cuda::init: already running on device ", r.device,
                    ", cannot switch to device ", device);
    return;
  }
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    cudaGetLastError();
    ::rechub::detail::throw_error<CudaError>("cuda::init: no usable CUDA device (cudaGetDeviceCount: ",
                                             cudaGetErrorString(e), ")");
  }
  RECHUB_CHECK_AS(CudaError, device >= 0 && device < n, "cuda::init: device ", device, " does not exist (", n,
                  " device(s))");
  RECHUB_CUDA_CHECK(cudaSetDevice(device));
  RECHUB_CUDA_CHECK(cudaStreamCreateWithFlags(&r.stream, cudaStreamNonBlocking));
  RECHUB_CUBLAS_CHECK(cublasCreate(&r.blas));
  RECHUB_CUBLAS_CHECK(cublasSetStream(r.blas, r.stream));
  RECHUB_CUBLAS_CHECK(cublasSetMathMode(r.blas, CUBLAS_DEFAULT_MATH));
  const float consts[2] = {0.0f, 1.0f};
  RECHUB_CUDA_CHECK(cudaMalloc(&r.consts, sizeof(consts)));
  RECHUB_CUDA_CHECK(cudaMemcpy(r.consts, consts, sizeof(consts), cudaMemcpyHostToDevice));
  r.device = device;
  detail::install_hooks();
  r.ready.store(true, std::memory_order_release);
}

int current_device() { return rt().ready.load() ? rt().device : -1; }

void synchronize() { RECHUB_CUDA_CHECK(cudaStreamSynchronize(cur_stream())); }

void* stream() { return static_cast<void*>(cur_stream()); }

void set_allow_tf32(bool on) {
  RECHUB_CUBLAS_CHECK(cublasSetMathMode(detail::cublas(), on ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH));
}

AllocatorStats allocator_stats() { return rt().allocator.stats(); }
void empty_cache() {
  if (rt().ready.load()) rt().allocator.empty_cache();
}
void* device_alloc(std::size_t bytes) { return detail::hook_alloc(bytes); }
void device_free(void* p) { detail::hook_free(p); }

Tensor empty(const Shape& s, DType t) { return Tensor::empty(s, t, Device::cuda); }

Tensor zeros(const Shape& s, DType t) {
  Tensor x = empty(s, t);
  zero(x);
  return x;
}

void memset_zero(void* p, std::size_t bytes) {
  if (bytes) RECHUB_CUDA_CHECK(cudaMemsetAsync(p, 0, bytes, cur_stream()));
}

void zero(const Tensor& t) {
  RECHUB_CHECK_AS(CudaError, t.device() == Device::cuda, "cuda::zero: tensor ", t.shape().str(), " is on the host");
  memset_zero(t.raw(), t.nbytes());
}

void copy(const Tensor& dst, const Tensor& src) {
  RECHUB_CHECK_SHAPE(src.numel() == dst.numel() && src.dtype() == dst.dtype(), "cuda::copy: ", src.shape().str(), " ",
                     dtype_name(src.dtype()), " into ", dst.shape().str(), " ", dtype_name(dst.dtype()));
  if (!dst.nbytes()) return;
  const bool hd = src.device() == Device::cpu, dd = dst.device() == Device::cpu;
  const cudaMemcpyKind kind = hd ? (dd ? cudaMemcpyHostToHost : cudaMemcpyHostToDevice)
                                 : (dd ? cudaMemcpyDeviceToHost : cudaMemcpyDeviceToDevice);
  RECHUB_CUDA_CHECK(cudaMemcpyAsync(dst.raw(), src.raw(), dst.nbytes(), kind, cur_stream()));
  // A host source may be freed as soon as we return, a host destination read: wait for both.
  if (hd || dd) RECHUB_CUDA_CHECK(cudaStreamSynchronize(cur_stream()));
}

Tensor to_device(const Tensor& t) {
  if (t.device() == Device::cuda) return t;
  Tensor d = empty(t.shape(), t.dtype());
  copy(d, t);
  return d;
}

Tensor to_host(const Tensor& t) {
  if (t.device() == Device::cpu) return t;
  Tensor h = Tensor::empty(t.shape(), t.dtype(), Device::cpu);
  copy(h, t);
  return h;
}

void gemm(bool ta, bool tb, std::int64_t M, std::int64_t N, std::int64_t K, float alpha, const float* A,
          std::int64_t lda, const float* B, std::int64_t ldb, float beta, float* C, std::int64_t ldc) {
  if (M == 0 || N == 0) return;
  if (K == 0) {  // C = beta C; done here rather than relying on cuBLAS's k = 0 handling
    if (beta == 1.0f) return;
    detail::scale_matrix_kernel<<<detail::grid_for(M * N), detail::kThreads, 0, cur_stream()>>>(C, M, N, ldc, beta);
    RECHUB_CUDA_LAUNCHED("scale_matrix_kernel");
    return;
  }
  detail::check_gemm_dims(M, N, K, lda, ldb, ldc);
  detail::sgemm(ta, tb, M, N, K, &alpha, A, lda, B, ldb, &beta, C, ldc);
}

}  // namespace rechub::cuda
