// Embedding lookups: gather_rows, embedding_bag (sum / mean / concat, padding skipped) and the
// table-gradient scatter of both. CPU reference: ops/index.hpp.
//
// Forward: a bag row is one block, threads over D, the L ids summed in order (the CPU's order).
// Backward, two ways (Scatter):
//   sorted  the ids are radix-sorted with their positions (stable, so positions stay ascending
//           within an id); the first position of each run of equal ids owns that table row and
//           adds its contributions in position order, a warp across D. No atomics: the result
//           is deterministic and sums in the CPU's order (it starts from the row's current
//           gradient and adds contributions by ascending position, exactly as scatter_add_rows).
//   atomic  one float atomicAdd per (id, column): fastest when a few rows are very hot, but the
//           summation order (and so the last bits) varies from run to run.
#include <cub/device/device_radix_sort.cuh>

#include "common.cuh"

namespace rechub::cuda {

namespace {
using detail::cur_stream;
using detail::grid_for;
using detail::kThreads;

__global__ void gather_rows_kernel(float* y, const float* table, const std::int32_t* ids, std::int64_t n,
                                   std::int64_t D) {
  RECHUB_GRID_STRIDE(t, n * D) {
    const std::int64_t i = t / D, j = t % D;
    y[t] = table[static_cast<std::int64_t>(ids[i]) * D + j];
  }
}

__global__ void bag_pool_kernel(float* y, float* scale, const float* table, const std::int32_t* ids, std::int64_t B,
                                std::int64_t L, std::int64_t D, std::int32_t padding_idx, bool mean) {
  for (std::int64_t b = blockIdx.x; b < B; b += gridDim.x) {
    const std::int32_t* row = ids + b * L;
    std::int64_t cnt = 0;
    for (std::int64_t l = 0; l < L; ++l) cnt += row[l] != padding_idx;
    const float sc = mean ? (cnt > 0 ? 1.0f / static_cast<float>(cnt) : 0.0f) : 1.0f;
    for (std::int64_t j = threadIdx.x; j < D; j += blockDim.x) {
      float acc = 0.0f;
      for (std::int64_t l = 0; l < L; ++l)
        if (row[l] != padding_idx) acc += table[static_cast<std::int64_t>(row[l]) * D + j];
      y[b * D + j] = mean ? acc * sc : acc;
    }
    if (scale && threadIdx.x == 0) scale[b] = sc;
  }
}

__global__ void bag_concat_kernel(float* y, const float* table, const std::int32_t* ids, std::int64_t n,
                                  std::int64_t D, std::int32_t padding_idx) {
  RECHUB_GRID_STRIDE(t, n * D) {
    const std::int64_t i = t / D, j = t % D;
    const std::int32_t id = ids[i];
    y[t] = id == padding_idx ? 0.0f : table[static_cast<std::int64_t>(id) * D + j];
  }
}

__global__ void scatter_atomic_kernel(float* dtable, std::uint8_t* touched, const float* dy, const std::int32_t* ids,
                                      const float* scale, std::int64_t n, std::int64_t ids_per_grad, std::int64_t D,
                                      std::int32_t skip) {
  RECHUB_GRID_STRIDE(t, n * D) {
    const std::int64_t i = t / D, j = t % D;
    const std::int32_t id = ids[i];
    if (id == skip) continue;
    if (touched && j == 0) touched[id] = 1;
    const std::int64_t gi = i / ids_per_grad;
    const float sc = scale ? scale[gi] : 1.0f;
    if (sc == 0.0f) continue;
    atomicAdd(dtable + static_cast<std::int64_t>(id) * D + j, sc * dy[gi * D + j]);
  }
}

__global__ void iota_kernel(std::int32_t* v, std::int64_t n) {
  RECHUB_GRID_STRIDE(i, n) v[i] = static_cast<std::int32_t>(i);
}

/// One warp per sorted position; the first position of a run of equal ids adds the whole run.
__global__ void scatter_sorted_kernel(float* dtable, std::uint8_t* touched, const float* dy,
                                      const std::uint32_t* keys, const std::int32_t* pos, const float* scale,
                                      std::int64_t n, std::int64_t ids_per_grad, std::int64_t D, std::int32_t skip) {
  const std::int64_t warps = static_cast<std::int64_t>(gridDim.x) * (blockDim.x / 32);
  const int lane = threadIdx.x & 31;
  for (std::int64_t p = static_cast<std::int64_t>(blockIdx.x) * (blockDim.x / 32) + (threadIdx.x >> 5); p < n;
       p += warps) {
    const std::uint32_t id = keys[p];
    if ((p > 0 && keys[p - 1] == id) || static_cast<std::int32_t>(id) == skip) continue;
    std::int64_t end = p + 1;
    while (end < n && keys[end] == id) ++end;
    if (touched && lane == 0) touched[id] = 1;
    float* row = dtable + static_cast<std::int64_t>(id) * D;
    for (std::int64_t j = lane; j < D; j += 32) {
      float acc = row[j];
      for (std::int64_t q = p; q < end; ++q) {
        const std::int64_t gi = pos[q] / ids_per_grad;
        const float sc = scale ? scale[gi] : 1.0f;
        if (sc != 0.0f) acc += sc * dy[gi * D + j];
      }
      row[j] = acc;
    }
  }
}

int bits_for(std::int64_t V) {
  int b = 1;
  while (b < 32 && (std::int64_t(1) << b) < V) ++b;
  return b;
}
}  // namespace

void gather_rows_forward(float* y, const float* table, const std::int32_t* ids, std::int64_t n, std::int64_t D) {
  if (n * D <= 0) return;
  gather_rows_kernel<<<grid_for(n * D), kThreads, 0, cur_stream()>>>(y, table, ids, n, D);
  RECHUB_CUDA_LAUNCHED("gather_rows_kernel");
}

void embedding_bag_forward(Bag mode, float* y, float* scale, const float* table, const std::int32_t* ids,
                           std::int64_t B, std::int64_t L, std::int64_t D, std::int32_t padding_idx) {
  if (B <= 0) return;
  if (mode == Bag::concat) {
    if (L * D <= 0) return;
    bag_concat_kernel<<<grid_for(B * L * D), kThreads, 0, cur_stream()>>>(y, table, ids, B * L, D, padding_idx);
    RECHUB_CUDA_LAUNCHED("bag_concat_kernel");
    return;
  }
  const int threads = D <= 32 ? 32 : (D <= 64 ? 64 : 128);
  bag_pool_kernel<<<detail::grid_rows(B), threads, 0, cur_stream()>>>(y, scale, table, ids, B, L, D, padding_idx,
                                                                     mode == Bag::mean);
  RECHUB_CUDA_LAUNCHED("bag_pool_kernel");
}

void embedding_backward(Scatter how, float* dtable, std::uint8_t* touched, const float* dy, const std::int32_t* ids,
                        const float* scale, std::int64_t n, std::int64_t ids_per_grad, std::int64_t V,
                        std::int64_t D, std::int32_t skip) {
  RECHUB_CHECK_SHAPE(ids_per_grad >= 1, "cuda::embedding_backward: ids_per_grad must be >= 1, got ", ids_per_grad);
  if (n <= 0 || D <= 0 || V <= 0) return;
  if (how == Scatter::atomic) {
    scatter_atomic_kernel<<<grid_for(n * D), kThreads, 0, cur_stream()>>>(dtable, touched, dy, ids, scale, n,
                                                                          ids_per_grad, D, skip);
    RECHUB_CUDA_LAUNCHED("scatter_atomic_kernel");
    return;
  }
  RECHUB_CHECK_SHAPE(n <= 2147483647, "cuda::embedding_backward: ", n, " ids exceed the sort's int range");
  const int items = static_cast<int>(n);
  // Ids are validated to lie in [0, V), so as unsigned keys their low bits_for(V) bits order them.
  const auto* keys_in = reinterpret_cast<const std::uint32_t*>(ids);
  detail::Scratch buf(static_cast<std::size_t>(n) * 3 * sizeof(std::int32_t));
  auto* keys_out = buf.as<std::uint32_t>();
  auto* pos_in = reinterpret_cast<std::int32_t*>(keys_out + n);
  auto* pos_out = pos_in + n;
  iota_kernel<<<grid_for(n), kThreads, 0, cur_stream()>>>(pos_in, n);
  RECHUB_CUDA_LAUNCHED("iota_kernel");
  const int end_bit = bits_for(V);
  std::size_t temp_bytes = 0;
  RECHUB_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, temp_bytes, keys_in, keys_out, pos_in, pos_out, items, 0,
                                                    end_bit, cur_stream()));
  detail::Scratch temp(temp_bytes);
  RECHUB_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(temp.as<void>(), temp_bytes, keys_in, keys_out, pos_in, pos_out,
                                                    items, 0, end_bit, cur_stream()));
  const std::int64_t warps_per_block = kThreads / 32;
  const unsigned blocks = grid_for((n + warps_per_block - 1) / warps_per_block, 1);
  scatter_sorted_kernel<<<blocks, kThreads, 0, cur_stream()>>>(dtable, touched, dy, keys_out, pos_out, scale, n,
                                                               ids_per_grad, D, skip);
  RECHUB_CUDA_LAUNCHED("scatter_sorted_kernel");
}

}  // namespace rechub::cuda
