// Uses the installed headers: one linear layer forward and backward.
#include <cstdio>
#include <rechub/rechub.hpp>

int main() {
  rechub::Parameter w(rechub::Tensor::full({2, 3}, 0.5f));
  rechub::Var x = rechub::constant(rechub::Tensor::full({4, 3}, 1.0f));
  rechub::Var y = rechub::linear(x, w);
  rechub::tape().backward(y, rechub::Tensor::full({4, 2}, 1.0f));
  const bool ok = y.value().f32()[0] == 1.5f && w.grad().f32()[0] == 4.0f;
  std::printf("consumer: %s\n", ok ? "ok" : "WRONG");
  return ok ? 0 : 1;
}
