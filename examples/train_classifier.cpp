// Train a 2-layer MLP classifier end to end with fusedloss' fused cross-entropy.
//
// The task: interleaved spirals (one arm per class) in a 2-D plane hidden inside a
// higher-dimensional feature space (a random orthonormal embedding plus noise on every
// feature). A linear model cannot separate the arms; a ReLU MLP can.
//
// Each step: forward (matmuls) → fusedloss::compute(cross_entropy, label smoothing) writes the
// mean loss AND dLoss/dlogits in place over the logits buffer → backward (matmuls) → Adam.
// On the GPU the matmuls are cuBLAS calls and the loss runs on the library's CUDA path on the
// same stream, with a workspace sized once (fusedloss::workspace_size) before the loop; on the
// CPU they are plain loops and the library's CPU path.
#include "common.hpp"

using namespace example;

namespace {

struct Dataset {
  std::vector<float> x;           // [n × features]
  std::vector<std::int32_t> y;    // [n]
};

/// n points, `classes` spiral arms of `turns` turns, embedded in `features` dimensions.
/// Returns train and test sets drawn from the same distribution.
void make_spirals(Rng& rng, int classes, int features, double turns, double noise, long n_train, long n_test,
                  Dataset* train, Dataset* test) {
  // Two orthonormal directions in feature space span the plane of the spirals.
  std::vector<double> u(features), v(features);
  for (int f = 0; f < features; ++f) {
    u[f] = rng.normal();
    v[f] = rng.normal();
  }
  auto dot = [&](const std::vector<double>& a, const std::vector<double>& b) {
    double s = 0;
    for (int f = 0; f < features; ++f) s += a[f] * b[f];
    return s;
  };
  const double nu = std::sqrt(dot(u, u));
  for (double& t : u) t /= nu;
  const double uv = dot(u, v);
  for (int f = 0; f < features; ++f) v[f] -= uv * u[f];
  const double nv = std::sqrt(dot(v, v));
  for (double& t : v) t /= nv;

  const long n = n_train + n_test;
  std::vector<long> order(static_cast<std::size_t>(n));
  for (long i = 0; i < n; ++i) order[static_cast<std::size_t>(i)] = i;
  rng.shuffle(order);  // which point goes to train/test, and in what order

  train->x.assign(static_cast<std::size_t>(n_train) * features, 0.0f);
  train->y.assign(static_cast<std::size_t>(n_train), 0);
  test->x.assign(static_cast<std::size_t>(n_test) * features, 0.0f);
  test->y.assign(static_cast<std::size_t>(n_test), 0);
  for (long i = 0; i < n; ++i) {
    const int c = static_cast<int>(i % classes);
    const double t = rng.uniform();                 // position along the arm
    const double r = 0.15 + 0.85 * t;               // radius
    const double a = 6.283185307179586 * (static_cast<double>(c) / classes + turns * t) + noise * rng.normal();
    const double px = 2.0 * r * std::cos(a), py = 2.0 * r * std::sin(a);
    const long slot = order[static_cast<std::size_t>(i)];
    Dataset* d = slot < n_train ? train : test;
    const long row = slot < n_train ? slot : slot - n_train;
    float* xr = d->x.data() + static_cast<std::size_t>(row) * features;
    for (int f = 0; f < features; ++f) xr[f] = static_cast<float>(px * u[f] + py * v[f] + 0.05 * rng.normal());
    d->y[static_cast<std::size_t>(row)] = c;
  }
}

/// Fraction of rows whose largest logit is at the label (logits: [y.size() × classes]).
double accuracy(const float* logits, const std::vector<std::int32_t>& y, int classes) {
  long correct = 0;
  for (std::size_t i = 0; i < y.size(); ++i) {
    const float* z = logits + i * classes;
    correct += (std::max_element(z, z + classes) - z) == y[i];
  }
  return y.empty() ? 0.0 : static_cast<double>(correct) / static_cast<double>(y.size());
}

}  // namespace

int main(int argc, char** argv) {
  long steps = 3000, batch = 128, n_train = 4096, n_test = 2048, classes = 5, features = 8, hidden = 64;
  long print_every = 250;
  double lr = 0.01, label_smoothing = 0.1, turns = 1.0, noise = 0.2, min_accuracy = 0.0;
  std::uint64_t seed = 1;
  std::string device = "auto";

  ArgParser args("train_classifier",
                 "2-layer MLP on synthetic spirals, trained with fusedloss cross_entropy (label smoothing,\n"
                 "in-place gradient). Exits 1 if the loss did not go down or test accuracy < --min-accuracy.");
  args.add("steps", &steps, "training steps (mini-batches)");
  args.add("device", &device, "cpu | cuda | auto");
  args.add("seed", &seed, "random seed (data, initialisation, shuffling)");
  args.add("print-every", &print_every, "print the loss curve every K steps");
  args.add("batch", &batch, "mini-batch size");
  args.add("train", &n_train, "training points (rounded down to a multiple of --batch)");
  args.add("test", &n_test, "test points");
  args.add("classes", &classes, "classes (spiral arms)");
  args.add("features", &features, "input features (>= 2)");
  args.add("hidden", &hidden, "hidden ReLU units");
  args.add("turns", &turns, "turns of each spiral arm");
  args.add("noise", &noise, "angular noise of the arms (radians)");
  args.add("lr", &lr, "Adam learning rate");
  args.add("label-smoothing", &label_smoothing, "cross_entropy label smoothing in [0, 1]");
  args.add("min-accuracy", &min_accuracy, "fail (exit 1) below this final test accuracy");
  args.parse(argc, argv);
  if (steps < 1 || batch < 1 || classes < 2 || features < 2 || hidden < 1 || print_every < 1 || n_test < 1 ||
      n_train < batch)
    die("bad sizes (need steps >= 1, batch >= 1, classes >= 2, features >= 2, hidden >= 1, train >= batch)");
  n_train -= n_train % batch;

  const bool gpu = choose_gpu(device);
  std::unique_ptr<Engine> engine = make_engine(gpu);
  Engine& e = *engine;

  Rng rng(seed);
  Dataset train, test;
  make_spirals(rng, static_cast<int>(classes), static_cast<int>(features), turns, noise, n_train, n_test, &train,
               &test);
  Mlp model(e, static_cast<int>(features), static_cast<int>(hidden), static_cast<int>(classes), static_cast<int>(batch),
            rng);

  std::printf("train_classifier: %ld-class spirals (%.2f turns) in %ld features, %ld train / %ld test points\n",
              classes, turns, features, n_train, n_test);
  std::printf("model: MLP %ld-%ld-%ld (ReLU), %zu parameters; Adam lr %g, batch %ld, %ld steps, seed %llu\n", features,
              hidden, classes, model.parameter_count(), lr, batch, steps, static_cast<unsigned long long>(seed));
  std::printf("loss: fusedloss cross_entropy, mean, label_smoothing %g, gradient in place over the logits\n",
              label_smoothing);
  std::printf("device: %s\n\n", e.describe());

  // Data on the engine's side (see ShuffledSet).
  ShuffledSet<std::int32_t> train_set(e, rng, train.x, train.y, features);
  float* d_xtest = e.alloc(test.x.size());
  e.upload(d_xtest, test.x.data(), test.x.size() * sizeof(float));
  const long n_eval = std::max(n_train, n_test);
  float* d_heval = e.alloc(static_cast<std::size_t>(n_eval) * hidden);
  float* d_zeval = e.alloc(static_cast<std::size_t>(n_eval) * classes);
  float* d_loss = e.alloc(static_cast<std::size_t>(print_every));  // one slot per step since the last print
  float* d_full_loss = e.alloc(1);

  // The training loss call. Only the label pointer and the loss slot change from step to step.
  fusedloss::RowwiseProblem problem;
  problem.loss = fusedloss::Loss::CrossEntropy;
  problem.dtype = fusedloss::DType::Float32;
  problem.rows = batch;
  problem.classes = classes;
  problem.input = model.output();  // logits [batch × classes]
  problem.labels = train_set.d_y();
  problem.label_dtype = fusedloss::DType::Int32;
  problem.reduction = fusedloss::Reduction::Mean;
  problem.params.label_smoothing = label_smoothing;
  fusedloss::LossOutputs outputs;
  outputs.loss = d_loss;
  outputs.grad = model.output();  // == problem.input: the gradient overwrites the logits

  // A loss-only call (no gradient) over the whole training set, for a smooth loss curve.
  fusedloss::RowwiseProblem full = problem;
  full.rows = n_train;
  full.input = d_zeval;
  fusedloss::LossOutputs full_out;
  full_out.loss = d_full_loss;

  const fusedloss::ExecutionConfig config = loss_config_with_workspace(e, problem, outputs, full, full_out);

  std::vector<float> logits(static_cast<std::size_t>(n_eval) * classes);

  // Accuracy on a whole set (and, for the training set, its mean loss).
  auto evaluate = [&](const float* d_x, long n, const std::vector<std::int32_t>& y, double* loss) {
    model.forward(d_x, static_cast<int>(n), d_heval, d_zeval);
    if (loss) {
      full.labels = train_set.d_y();  // train_set.d_x() holds the shuffled copy, labels train_set.y()
      check(fusedloss::compute(full, full_out, config), "fusedloss::compute");
    }
    e.download(logits.data(), d_zeval, static_cast<std::size_t>(n) * classes * sizeof(float));
    if (loss) {
      float l = 0.0f;
      e.download(&l, d_full_loss, sizeof l);
      *loss = l;
    }
    return accuracy(logits.data(), y, static_cast<int>(classes));
  };

  std::printf("%8s  %10s  %10s  %9s  %9s\n", "step", "batch loss", "train loss", "train acc", "test acc");
  train_set.shuffle_and_upload();
  double first_loss = 0.0, train_loss = 0.0;
  double train_acc = evaluate(train_set.d_x(), n_train, train_set.y(), &first_loss);
  double test_acc = evaluate(d_xtest, n_test, test.y, nullptr);
  std::printf("%8d  %10s  %10.4f  %8.1f%%  %8.1f%%\n", 0, "-", first_loss, 100.0 * train_acc, 100.0 * test_acc);

  const double secs = run_training(
      e, model, train_set, problem, outputs, config, TrainOptions{steps, batch, print_every, lr}, d_loss,
      [&](const std::int32_t* y) { problem.labels = y; },
      [&](long step, double batch_loss) {
        train_acc = evaluate(train_set.d_x(), n_train, train_set.y(), &train_loss);
        test_acc = evaluate(d_xtest, n_test, test.y, nullptr);
        std::printf("%8ld  %10.4f  %10.4f  %8.1f%%  %8.1f%%\n", step, batch_loss, train_loss, 100.0 * train_acc,
                    100.0 * test_acc);
      });

  const bool decreased = train_loss < first_loss;
  const bool accurate = test_acc >= min_accuracy;
  std::printf("\nfinal: train accuracy %.1f%%, test accuracy %.1f%%; train loss %.4f -> %.4f; %.2f s (%.0f steps/s)\n",
              100.0 * train_acc, 100.0 * test_acc, first_loss, train_loss, secs, static_cast<double>(steps) / secs);
  if (!decreased) std::printf("FAILED: the training loss did not go down\n");
  if (!accurate) std::printf("FAILED: test accuracy %.1f%% is below --min-accuracy %.1f%%\n", 100.0 * test_acc,
                             100.0 * min_accuracy);
  return decreased && accurate ? 0 : 1;
}
