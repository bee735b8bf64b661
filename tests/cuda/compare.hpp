#pragma once
// Comparison helpers of the GPU tests: |gpu - ref| <= atol + rtol |ref| elementwise, printing the
// first mismatches (llm.c's check), plus bitwise equality.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>

#include "rechub/cuda/cuda.hpp"

namespace rechub::testing {

/// NaN matches only NaN and an infinity only the same infinity; gpu may live on either device.
inline bool close(const std::string& what, const Tensor& gpu_any, const Tensor& ref, double atol, double rtol) {
  const Tensor gpu = cuda::to_host(gpu_any);
  if (gpu.numel() != ref.numel()) {
    std::printf("  %s: gpu has %lld elements, ref %lld\n", what.c_str(), static_cast<long long>(gpu.numel()),
                static_cast<long long>(ref.numel()));
    return false;
  }
  std::int64_t bad = 0;
  for (std::int64_t i = 0; i < ref.numel(); ++i) {
    const double a = gpu.f32()[i], b = ref.f32()[i];
    const bool ok = (std::isnan(a) && std::isnan(b)) || a == b ||
                    (std::isfinite(a) && std::isfinite(b) && std::fabs(a - b) <= atol + rtol * std::fabs(b));
    if (ok) continue;
    if (bad < 8)
      std::printf("  %s[%lld]: gpu %.9g  ref %.9g  |diff| %.3g > %.3g\n", what.c_str(), static_cast<long long>(i), a,
                  b, std::fabs(a - b), atol + rtol * std::fabs(b));
    ++bad;
  }
  if (bad)
    std::printf("  %s: %lld of %lld elements mismatch (atol %g, rtol %g)\n", what.c_str(), static_cast<long long>(bad),
                static_cast<long long>(ref.numel()), atol, rtol);
  return bad == 0;
}

inline bool same_bits(const std::string& what, const Tensor& a_any, const Tensor& b_any) {
  const Tensor a = cuda::to_host(a_any), b = cuda::to_host(b_any);
  const bool ok = a.nbytes() == b.nbytes() && (a.nbytes() == 0 || std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0);
  if (!ok) std::printf("  %s: results differ bitwise\n", what.c_str());
  return ok;
}

}  // namespace rechub::testing
