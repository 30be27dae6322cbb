// Consumer smoke test: include the umbrella header, compute a loss on host data, check it.
#include <cmath>
#include <cstdio>

#include <fusedloss/fusedloss.hpp>

int main() {
  const float x[3] = {1.0f, 2.0f, 4.0f}, y[3] = {1.0f, 0.0f, 1.0f};
  float loss = 0, grad[3] = {0, 0, 0};
  fusedloss::ElementwiseProblem p;
  p.loss = fusedloss::Loss::MSE;
  p.n = 3;
  p.input = x;
  p.target = y;
  fusedloss::LossOutputs out;
  out.loss = &loss;
  out.grad = grad;
  const fusedloss::Status s = fusedloss::compute(p, out);
  std::printf("fusedloss %s: mse = %g (%s), grad = [%g %g %g]\n", FUSEDLOSS_VERSION_STRING, loss,
              fusedloss::status_string(s), grad[0], grad[1], grad[2]);
  const bool ok = s == fusedloss::Status::Success && std::fabs(loss - 13.0f / 3.0f) < 1e-6f &&
                  std::fabs(grad[2] - 2.0f) < 1e-6f;
  return ok ? 0 : 1;
}
