// Train a 2-layer MLP regressor end to end with fusedloss' fused huber loss, on data whose
// training targets contain gross outliers.
//
// The task: y = f(x) + small noise with a nonlinear f of 8 standard-normal features; a
// fraction of the TRAINING targets is corrupted by a large one-sided offset (a stuck sensor,
// a unit mix-up...). The test targets are clean, so test RMSE shows how much the outliers
// pulled the fit. Huber caps each point's gradient at delta and stays close to f; run with
// --loss mse to see the squared loss chase the outliers.
//
// Each step: forward (matmuls) → fusedloss::compute(huber or mse, mean) writes the loss AND
// dLoss/dprediction in place over the prediction buffer → backward (matmuls) → Adam. On the
// GPU the matmuls are cuBLAS calls and the loss runs on the library's CUDA path on the same
// stream with a workspace sized once before the loop; on the CPU, plain loops and the CPU path.
#include "common.hpp"

using namespace example;

namespace {

double target_function(const float* x) {
  return std::sin(1.5 * x[0]) + 0.5 * x[1] * x[2] + 0.25 * x[3] * x[3] + 0.5 * std::tanh(2.0 * x[4]) - 0.3 * x[5] -
         0.25;
}

struct Dataset {
  std::vector<float> x;  // [n × features]
  std::vector<float> y;  // [n]
};

Dataset make_data(Rng& rng, long n, int features, double noise, double outlier_fraction, long* outliers) {
  Dataset d;
  d.x.resize(static_cast<std::size_t>(n) * features);
  d.y.resize(static_cast<std::size_t>(n));
  *outliers = 0;
  for (long i = 0; i < n; ++i) {
    float* x = d.x.data() + static_cast<std::size_t>(i) * features;
    for (int f = 0; f < features; ++f) x[f] = static_cast<float>(rng.normal());
    double y = target_function(x) + noise * rng.normal();
    if (rng.uniform() < outlier_fraction) {
      y += rng.uniform(5.0, 15.0);
      ++*outliers;
    }
    d.y[static_cast<std::size_t>(i)] = static_cast<float>(y);
  }
  return d;
}

double rmse(const float* pred, const std::vector<float>& y) {
  double s = 0.0;
  for (std::size_t i = 0; i < y.size(); ++i) s += (static_cast<double>(pred[i]) - y[i]) * (pred[i] - y[i]);
  return std::sqrt(s / static_cast<double>(y.size()));
}

}  // namespace

int main(int argc, char** argv) {
  long steps = 3000, batch = 128, n_train = 4096, n_test = 2048, hidden = 64, print_every = 250;
  double lr = 0.005, delta = 1.0, noise = 0.1, outlier_fraction = 0.1, max_rmse = 1e30;
  std::uint64_t seed = 1;
  std::string device = "auto", loss_name = "huber";
  const long features = 8;

  ArgParser args("train_regression",
                 "2-layer MLP regression with outliers in the training targets, trained with fusedloss huber\n"
                 "(in-place gradient). Exits 1 if the loss did not go down or test RMSE > --max-rmse.");
  args.add("steps", &steps, "training steps (mini-batches)");
  args.add("device", &device, "cpu | cuda | auto");
  args.add("seed", &seed, "random seed (data, initialisation, shuffling)");
  args.add("print-every", &print_every, "print the loss curve every K steps");
  args.add("loss", &loss_name, "huber | mse (any fusedloss elementwise regression loss name works)");
  args.add("delta", &delta, "huber delta");
  args.add("outliers", &outlier_fraction, "fraction of training targets corrupted by +U(5, 15)");
  args.add("batch", &batch, "mini-batch size");
  args.add("train", &n_train, "training points (rounded down to a multiple of --batch)");
  args.add("test", &n_test, "test points (clean targets)");
  args.add("hidden", &hidden, "hidden ReLU units");
  args.add("lr", &lr, "Adam learning rate");
  args.add("max-rmse", &max_rmse, "fail (exit 1) above this final test RMSE");
  args.parse(argc, argv);
  if (steps < 1 || batch < 1 || hidden < 1 || print_every < 1 || n_test < 1 || n_train < batch)
    die("bad sizes (need steps >= 1, batch >= 1, hidden >= 1, train >= batch)");
  fusedloss::Loss loss_kind;
  if (!fusedloss::parse_loss(loss_name.c_str(), &loss_kind) || !fusedloss::is_elementwise(loss_kind))
    die("--loss: not an elementwise fusedloss loss: " + loss_name);
  n_train -= n_train % batch;

  const bool gpu = choose_gpu(device);
  std::unique_ptr<Engine> engine = make_engine(gpu);
  Engine& e = *engine;

  Rng rng(seed);
  long train_outliers = 0, test_outliers = 0;
  const Dataset train = make_data(rng, n_train, static_cast<int>(features), noise, outlier_fraction, &train_outliers);
  const Dataset test = make_data(rng, n_test, static_cast<int>(features), noise, 0.0, &test_outliers);
  Mlp model(e, static_cast<int>(features), static_cast<int>(hidden), 1, static_cast<int>(batch), rng);

  double mean = 0.0, var = 0.0;
  for (float y : test.y) mean += y;
  mean /= static_cast<double>(n_test);
  for (float y : test.y) var += (y - mean) * (y - mean);
  const double baseline = std::sqrt(var / static_cast<double>(n_test));

  std::printf("train_regression: y = f(x) + N(0, %g^2), %ld features; %ld train points (%ld outliers, +U(5,15)), "
              "%ld clean test points\n",
              noise, features, n_train, train_outliers, n_test);
  std::printf("model: MLP %ld-%ld-1 (ReLU), %zu parameters; Adam lr %g, batch %ld, %ld steps, seed %llu\n", features,
              hidden, model.parameter_count(), lr, batch, steps, static_cast<unsigned long long>(seed));
  if (loss_kind == fusedloss::Loss::Huber)
    std::printf("loss: fusedloss huber (delta %g), mean, gradient in place over the predictions\n", delta);
  else
    std::printf("loss: fusedloss %s, mean, gradient in place over the predictions\n", fusedloss::loss_name(loss_kind));
  std::printf("device: %s\n", e.describe());
  std::printf("baseline: predicting the test mean gives test RMSE %.4f; the noise floor is %.4f\n\n", baseline, noise);

  ShuffledSet<float> train_set(e, rng, train.x, train.y, features);
  float* d_xtest = e.alloc(test.x.size());
  e.upload(d_xtest, test.x.data(), test.x.size() * sizeof(float));
  const long n_eval = std::max(n_train, n_test);
  float* d_heval = e.alloc(static_cast<std::size_t>(n_eval) * hidden);
  float* d_peval = e.alloc(static_cast<std::size_t>(n_eval));
  float* d_loss = e.alloc(static_cast<std::size_t>(print_every));  // one slot per step since the last print
  float* d_full_loss = e.alloc(1);

  // The training loss call. Only the target pointer and the loss slot change from step to step.
  fusedloss::ElementwiseProblem problem;
  problem.loss = loss_kind;
  problem.dtype = fusedloss::DType::Float32;
  problem.n = batch;
  problem.input = model.output();  // predictions [batch]
  problem.target = train_set.d_y();
  problem.reduction = fusedloss::Reduction::Mean;
  problem.params.delta = delta;
  fusedloss::LossOutputs outputs;
  outputs.loss = d_loss;
  outputs.grad = model.output();  // == problem.input: the gradient overwrites the predictions

  // A loss-only call (no gradient) over the whole training set, for a smooth loss curve.
  fusedloss::ElementwiseProblem full = problem;
  full.n = n_train;
  full.input = d_peval;
  fusedloss::LossOutputs full_out;
  full_out.loss = d_full_loss;

  const fusedloss::ExecutionConfig config = loss_config_with_workspace(e, problem, outputs, full, full_out);

  std::vector<float> pred(static_cast<std::size_t>(n_test));

  // The mean training loss over the whole (outlier-laden) training set.
  auto train_loss_now = [&]() {
    model.forward(train_set.d_x(), static_cast<int>(n_train), d_heval, d_peval);
    full.target = train_set.d_y();
    check(fusedloss::compute(full, full_out, config), "fusedloss::compute");
    float l = 0.0f;
    e.download(&l, d_full_loss, sizeof l);
    return static_cast<double>(l);
  };
  // RMSE on the clean test set.
  auto test_rmse_now = [&]() {
    model.forward(d_xtest, static_cast<int>(n_test), d_heval, d_peval);
    e.download(pred.data(), d_peval, pred.size() * sizeof(float));
    return rmse(pred.data(), test.y);
  };

  std::printf("%8s  %10s  %10s  %9s\n", "step", "batch loss", "train loss", "test RMSE");
  train_set.shuffle_and_upload();
  const double first_loss = train_loss_now();
  double train_loss = first_loss, test_rmse = test_rmse_now();
  std::printf("%8d  %10s  %10.4f  %9.4f\n", 0, "-", first_loss, test_rmse);

  const double secs = run_training(
      e, model, train_set, problem, outputs, config, TrainOptions{steps, batch, print_every, lr}, d_loss,
      [&](const float* y) { problem.target = y; },
      [&](long step, double batch_loss) {
        train_loss = train_loss_now();
        test_rmse = test_rmse_now();
        std::printf("%8ld  %10.4f  %10.4f  %9.4f\n", step, batch_loss, train_loss, test_rmse);
      });

  const bool decreased = train_loss < first_loss;
  const bool accurate = test_rmse <= max_rmse;
  std::printf("\nfinal: test RMSE %.4f (baseline %.4f); train %s %.4f -> %.4f; %.2f s (%.0f steps/s)\n", test_rmse,
              baseline, fusedloss::loss_name(loss_kind), first_loss, train_loss, secs,
              static_cast<double>(steps) / secs);
  if (!decreased) std::printf("FAILED: the training loss did not go down\n");
  if (!accurate) std::printf("FAILED: test RMSE %.4f is above --max-rmse %g\n", test_rmse, max_rmse);
  return decreased && accurate ? 0 : 1;
}
