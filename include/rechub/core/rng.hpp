#pragma once
// Seeded RNG: xoshiro256** seeded through splitmix64. Same seed, same stream, on every platform.
// Parallel code derives one independent stream per row with `Rng::fork(stream)`, so results do
// not depend on which thread handled which row.
#include <cmath>
#include <cstdint>

namespace rechub {

class Rng {
 public:
  explicit Rng(std::uint64_t seed = 2022) { reseed(seed); }
  void reseed(std::uint64_t seed) {
    seed_ = seed;
    std::uint64_t x = seed;
    for (auto& w : s_) w = splitmix(x);
    has_spare_ = false;
  }
  std::uint64_t seed() const { return seed_; }

  std::uint64_t next_u64() {
    const std::uint64_t r = rotl(s_[1] * 5, 7) * 9;
    const std::uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = rotl(s_[3], 45);
    return r;
  }
  /// Uniform in [0, 1).
  double uniform() { return static_cast<double>(next_u64() >> 11) * (1.0 / 9007199254740992.0); }
  float uniform(float lo, float hi) { return lo + static_cast<float>(uniform()) * (hi - lo); }
  /// Uniform integer in [0, n).
  std::uint64_t below(std::uint64_t n) {
    // Lemire's multiply-shift; the bias is below 2^-64 * n, irrelevant here.
    return static_cast<std::uint64_t>((static_cast<unsigned __int128>(next_u64()) * n) >> 64);
  }
  /// Standard normal (Box-Muller, caching the second value).
  double normal() {
    if (has_spare_) {
      has_spare_ = false;
      return spare_;
    }
    double u1 = uniform(), u2 = uniform();
    if (u1 < 1e-300) u1 = 1e-300;
    double r = std::sqrt(-2.0 * std::log(u1));
    spare_ = r * std::sin(6.283185307179586 * u2);
    has_spare_ = true;
    return r * std::cos(6.283185307179586 * u2);
  }
  float normal(float mean, float std) { return mean + std * static_cast<float>(normal()); }
  /// An independent stream derived from this one's seed and `stream` (does not advance this one).
  Rng fork(std::uint64_t stream) const {
    std::uint64_t x = seed_ ^ (0x9E3779B97F4A7C15ull * (stream + 1));
    return Rng(splitmix(x));
  }

 private:
  static std::uint64_t rotl(std::uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  static std::uint64_t splitmix(std::uint64_t& x) {
    std::uint64_t z = (x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  std::uint64_t s_[4]{};
  std::uint64_t seed_ = 0;
  double spare_ = 0;
  bool has_spare_ = false;
};

}  // namespace rechub

namespace rechub {
/// The calling thread's default generator (parameter init, dropout), like torch's global one.
inline Rng& global_rng() {
  thread_local Rng rng(2022);
  return rng;
}
/// Reseeds the calling thread's default generator.
inline void manual_seed(std::uint64_t seed) { global_rng().reseed(seed); }
}  // namespace rechub
