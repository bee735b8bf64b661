#pragma once
// Gradient check against central finite differences, shared by every op and loss test.
//
// The op runs in float32, so the check uses a step h = 1e-2 (relative to max(1, |x|)) and a
// random projection R of the output: numeric = (sum(R*f(x+h)) - sum(R*f(x-h))) / 2h summed in
// double. Truncation error is O(h^2 * f''') ~ 1e-4 for our smooth ops, float32 rounding of
// the sums is ~ 1e-7 * |sum| / h ~ 1e-5 * |sum|: hence atol 2e-3 and rtol 2e-2 by default.
// Every input gets a gradient compared element by element; the first mismatches are printed.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "rechub/autograd/tape.hpp"
#include "rechub/core/rng.hpp"

namespace rechub::testing {

inline Tensor random_tensor(const Shape& s, Rng& rng, float lo = -1.0f, float hi = 1.0f) {
  Tensor t = Tensor::empty(s);
  for (std::int64_t i = 0; i < t.numel(); ++i) t.f32()[i] = rng.uniform(lo, hi);
  return t;
}

struct GradCheckOptions {
  double h = 1e-2;
  double atol = 2e-3;
  double rtol = 2e-2;
  std::uint64_t seed = 7;
};

/// Checks d(sum(R * f(inputs)))/d(inputs) from backward against finite differences.
inline void check_gradients(const std::function<Var(const std::vector<Var>&)>& f, const std::vector<Tensor>& inputs,
                            GradCheckOptions opt = {}) {
  std::vector<Parameter> params;
  params.reserve(inputs.size());
  for (const auto& t : inputs) params.emplace_back(t.clone());
  std::vector<Var> vars;
  for (auto& p : params) vars.push_back(p.var());

  Rng rng(opt.seed);
  Tensor out0 = f(vars).value().clone();
  end_step();
  Tensor R = random_tensor(out0.shape(), rng, 0.5f, 1.5f);
  auto objective = [&]() {
    NoGrad ng;
    Var out = f(vars);
    double s = 0;
    for (std::int64_t i = 0; i < out.value().numel(); ++i) s += double(out.value().f32()[i]) * R.f32()[i];
    end_step();
    return s;
  };

  {
    Var out = f(vars);
    tape().backward(out, R);
    end_step();
  }
  for (std::size_t k = 0; k < params.size(); ++k) {
    Tensor& x = params[k].value();
    const Tensor& g = params[k].grad();
    int bad = 0;
    for (std::int64_t i = 0; i < x.numel(); ++i) {
      const float orig = x.f32()[i];
      const double step = opt.h * std::max(1.0, std::fabs(double(orig)));
      x.f32()[i] = float(orig + step);
      const double fp = objective();
      x.f32()[i] = float(orig - step);
      const double fm = objective();
      x.f32()[i] = orig;
      const double numeric = (fp - fm) / (2 * step);
      const double analytic = g.f32()[i];
      if (std::fabs(analytic - numeric) > opt.atol + opt.rtol * std::fabs(numeric)) {
        if (bad < 5)
          std::printf("  input %zu %s element %lld: analytic %.6g numeric %.6g\n", k, x.shape().str().c_str(),
                      static_cast<long long>(i), analytic, numeric);
        ++bad;
      }
    }
    CHECK_MESSAGE(bad == 0, "input ", k, " ", x.shape().str(), ": ", bad, " gradient mismatches");
  }
}

}  // namespace rechub::testing
