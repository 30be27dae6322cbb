// Process-level tests of the `fusedloss` program: they run the built binary (path from CMake)
// and check its exit status, stdout/stderr and the files it writes. No GPU needed: every eval
// names --device cpu; validate's expected status depends on whether a GPU is usable.
#include <fcntl.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "cli/npy.hpp"
#include "fusedloss/api.hpp"
#include "fusedloss/float16.hpp"

#ifndef FUSEDLOSS_CLI_BINARY
#error "FUSEDLOSS_CLI_BINARY must name the built fusedloss program"
#endif

extern char** environ;

namespace fusedloss_cli {
namespace {

namespace fs = std::filesystem;
using fusedloss::DType;
using fusedloss::Loss;
using fusedloss::Reduction;

struct ProcessResult {
  int status = -1;
  std::string out, err;
  int err_lines() const {
    int n = 0;
    for (char c : err) n += c == '\n';
    if (!err.empty() && err.back() != '\n') ++n;
    return n;
  }
};

std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

class Cli : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string templ = ::testing::TempDir() + "fusedloss_cli_XXXXXX";
    ASSERT_NE(::mkdtemp(templ.data()), nullptr);
    dir_ = templ;
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  std::string path(const std::string& name) const { return (fs::path(dir_) / name).string(); }

  ProcessResult run(std::vector<std::string> args) const {
    args.insert(args.begin(), FUSEDLOSS_CLI_BINARY);
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    const std::string out_path = path(".stdout"), err_path = path(".stderr");
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 1, out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_addopen(&actions, 2, err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    pid_t pid = 0;
    ProcessResult r;
    const int spawned = posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    if (spawned != 0) {
      r.err = std::string("spawn failed: ") + std::strerror(spawned);
      return r;
    }
    int wstatus = 0;
    waitpid(pid, &wstatus, 0);
    r.status = WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : 128 + WTERMSIG(wstatus);
    r.out = slurp(out_path);
    r.err = slurp(err_path);
    std::remove(out_path.c_str());
    std::remove(err_path.c_str());
    return r;
  }

  // ---- writing inputs
  std::string save_f32(const std::string& name, const std::vector<std::int64_t>& shape, const std::vector<float>& v) {
    write_npy(path(name), NpyType::F4, shape, v.data());
    return path(name);
  }
  std::string save_i64(const std::string& name, const std::vector<std::int64_t>& shape,
                       const std::vector<std::int64_t>& v) {
    write_npy(path(name), NpyType::I8, shape, v.data());
    return path(name);
  }
  std::string save_bytes(const std::string& name, const std::vector<unsigned char>& bytes) {
    std::ofstream f(path(name), std::ios::binary);
    f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
    return path(name);
  }

  std::string dir_;
};

std::vector<float> random_floats(std::size_t n, unsigned seed, float lo, float hi) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = u(rng);
  return v;
}

std::vector<float> read_f32(const std::string& path) {
  const NpyArray a = read_npy(path);
  EXPECT_EQ(a.type, NpyType::F4) << path;
  std::vector<float> v(static_cast<std::size_t>(a.numel()));
  if (!v.empty()) std::memcpy(v.data(), a.data.data(), v.size() * 4);
  return v;
}

/// Bitwise equality, NaN == NaN.
void expect_same(const std::vector<float>& got, const std::vector<float>& want, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (std::size_t i = 0; i < got.size(); ++i) {
    if (std::isnan(want[i])) {
      EXPECT_TRUE(std::isnan(got[i])) << what << "[" << i << "]";
    } else {
      EXPECT_EQ(got[i], want[i]) << what << "[" << i << "]";
    }
  }
}

// ---- eval against the library ----------------------------------------------------------------

struct ElementwiseEvalCase {
  const char* name;
  Loss loss;
  Reduction reduction;
  std::vector<std::string> params;
  bool weighted;
  float lo, hi;  ///< input range (probabilities for bce)
  fusedloss::ElementwiseParams lib_params;
  double grad_scale;
};

void PrintTo(const ElementwiseEvalCase& c, std::ostream* os) { *os << c.name; }

class CliEvalElementwise : public Cli, public ::testing::WithParamInterface<ElementwiseEvalCase> {};

TEST_P(CliEvalElementwise, MatchesTheLibraryBitForBit) {
  const ElementwiseEvalCase& c = GetParam();
  const std::int64_t n = 1003;
  const std::vector<float> x = random_floats(n, 1, c.lo, c.hi), y = random_floats(n, 2, c.lo < 0 ? -1 : 0, 1),
                           w = random_floats(n, 3, 0, 2);
  std::vector<std::string> args = {"eval", "--device", "cpu", "--loss", fusedloss::loss_name(c.loss), "--input",
                                   save_f32("x.npy", {n}, x), "--target", save_f32("y.npy", {n}, y),
                                   "--reduction", c.reduction == Reduction::None ? "none" : c.reduction == Reduction::Sum ? "sum" : "mean",
                                   "--out", path("out")};
  if (c.weighted) {
    args.push_back("--weight");
    args.push_back(save_f32("w.npy", {n}, w));
  }
  for (const std::string& p : c.params) {
    args.push_back("--param");
    args.push_back(p);
  }
  const ProcessResult r = run(args);
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_TRUE(r.err.empty()) << r.err;

  fusedloss::ElementwiseProblem p;
  p.loss = c.loss;
  p.n = n;
  p.input = x.data();
  p.target = y.data();
  p.weight = c.weighted ? w.data() : nullptr;
  p.reduction = c.reduction;
  p.params = c.lib_params;
  p.grad_scale = c.grad_scale;
  std::vector<float> loss(c.reduction == Reduction::None ? n : 1), grad(n);
  fusedloss::LossOutputs out;
  out.loss = loss.data();
  out.grad = grad.data();
  fusedloss::ExecutionConfig cfg;
  cfg.backend = fusedloss::Backend::CPU;
  ASSERT_EQ(fusedloss::compute_sync(p, out, cfg), fusedloss::Status::Success);

  const NpyArray loss_file = read_npy(path("out/loss.npy"));
  EXPECT_EQ(loss_file.shape, c.reduction == Reduction::None ? std::vector<std::int64_t>{n} : std::vector<std::int64_t>{});
  expect_same(read_f32(path("out/loss.npy")), loss, "loss");
  expect_same(read_f32(path("out/grad.npy")), grad, "grad");
  EXPECT_FALSE(fs::exists(path("out/lse.npy")));
}

fusedloss::ElementwiseParams with_delta(double d) {
  fusedloss::ElementwiseParams p;
  p.delta = d;
  return p;
}
fusedloss::ElementwiseParams with_beta(double b) {
  fusedloss::ElementwiseParams p;
  p.beta = b;
  return p;
}
fusedloss::ElementwiseParams with_pos_weight(double w) {
  fusedloss::ElementwiseParams p;
  p.pos_weight = w;
  return p;
}

INSTANTIATE_TEST_SUITE_P(
    Losses, CliEvalElementwise,
    ::testing::Values(
        ElementwiseEvalCase{"mse_mean", Loss::MSE, Reduction::Mean, {}, false, -2, 2, {}, 1.0},
        ElementwiseEvalCase{"mse_sum_weighted", Loss::MSE, Reduction::Sum, {}, true, -2, 2, {}, 1.0},
        ElementwiseEvalCase{"huber_delta", Loss::Huber, Reduction::Mean, {"delta=0.5"}, false, -2, 2, with_delta(0.5), 1.0},
        ElementwiseEvalCase{"smooth_l1_none", Loss::SmoothL1, Reduction::None, {"beta=0.25"}, false, -2, 2,
                            with_beta(0.25), 1.0},
        ElementwiseEvalCase{"log_cosh_grad_scale", Loss::LogCosh, Reduction::Mean, {"grad_scale=128"}, false, -3, 3, {},
                            128.0},
        ElementwiseEvalCase{"bce", Loss::BCE, Reduction::Mean, {}, true, 0.01f, 0.99f, {}, 1.0},
        ElementwiseEvalCase{"bce_with_logits_pos_weight", Loss::BCEWithLogits, Reduction::Sum, {"pos_weight=3"}, false,
                            -4, 4, with_pos_weight(3), 1.0},
        ElementwiseEvalCase{"rmse", Loss::RMSE, Reduction::Mean, {}, false, -2, 2, {}, 1.0},
        ElementwiseEvalCase{"hinge_none", Loss::Hinge, Reduction::None, {}, false, -2, 2, {}, 1.0}),
    [](const ::testing::TestParamInfo<ElementwiseEvalCase>& info) { return std::string(info.param.name); });

TEST_F(Cli, EvalCrossEntropyWithOptionsMatchesTheLibrary) {
  const std::int64_t N = 37, C = 53;
  const std::vector<float> z = random_floats(N * C, 4, -5, 5), cw = random_floats(C, 5, 0.5f, 1.5f);
  std::vector<std::int64_t> labels(N);
  for (std::int64_t i = 0; i < N; ++i) labels[i] = (i * 7) % C;
  labels[3] = -100;
  const ProcessResult r = run({"eval", "--device", "cpu", "--loss", "cross_entropy", "--input", save_f32("z.npy", {N, C}, z),
                     "--target", save_i64("y.npy", {N}, labels), "--weight", save_f32("cw.npy", {C}, cw), "--param",
                     "label_smoothing=0.1", "--param", "z_loss=1e-4", "--param", "softcap=30", "--out", path("out")});
  ASSERT_EQ(r.status, 0) << r.err;

  fusedloss::RowwiseProblem p;
  p.loss = Loss::CrossEntropy;
  p.rows = N;
  p.classes = C;
  p.input = z.data();
  p.labels = labels.data();
  p.label_dtype = DType::Int64;
  p.class_weight = cw.data();
  p.params.label_smoothing = 0.1;
  p.params.z_loss = 1e-4;
  p.params.softcap = 30;
  std::vector<float> loss(1), grad(N * C), lse(N);
  fusedloss::LossOutputs out;
  out.loss = loss.data();
  out.grad = grad.data();
  out.lse = lse.data();
  fusedloss::ExecutionConfig cfg;
  cfg.backend = fusedloss::Backend::CPU;
  ASSERT_EQ(fusedloss::compute_sync(p, out, cfg), fusedloss::Status::Success);
  expect_same(read_f32(path("out/loss.npy")), loss, "loss");
  expect_same(read_f32(path("out/grad.npy")), grad, "grad");
  expect_same(read_f32(path("out/lse.npy")), lse, "lse");
  EXPECT_EQ(read_npy(path("out/grad.npy")).shape, (std::vector<std::int64_t>{N, C}));
  EXPECT_NE(r.out.find("loss = "), std::string::npos) << r.out;
}

TEST_F(Cli, EvalLinearCrossEntropyMatchesTheLibrary) {
  const std::int64_t N = 37, H = 19, V = 301;
  const std::vector<float> h = random_floats(N * H, 6, -2, 2), w = random_floats(V * H, 7, -0.5f, 0.5f),
                           b = random_floats(V, 8, -1, 1);
  std::vector<std::int64_t> labels(N);
  for (std::int64_t i = 0; i < N; ++i) labels[i] = (i * 13) % V;
  labels[5] = -100;
  const ProcessResult r =
      run({"eval", "--device", "cpu", "--loss", "linear_cross_entropy", "--input", save_f32("h.npy", {N, H}, h),
           "--target", save_i64("y.npy", {N}, labels), "--linear-weight", save_f32("w.npy", {V, H}, w), "--bias",
           save_f32("b.npy", {V}, b), "--param", "label_smoothing=0.1", "--param", "z_loss=1e-4", "--out",
           path("out")});
  ASSERT_EQ(r.status, 0) << r.err;
  fusedloss::LinearCrossEntropyProblem p;
  p.rows = N;
  p.hidden_size = H;
  p.classes = V;
  p.hidden = h.data();
  p.weight = w.data();
  p.bias = b.data();
  p.labels = labels.data();
  p.params.label_smoothing = 0.1;
  p.params.z_loss = 1e-4;
  std::vector<float> loss(1), lse(N), gh(N * H), gw(V * H), gb(V);
  fusedloss::LinearCrossEntropyOutputs out;
  out.loss = loss.data();
  out.lse = lse.data();
  out.grad_hidden = gh.data();
  out.grad_weight = gw.data();
  out.grad_bias = gb.data();
  fusedloss::ExecutionConfig cfg;
  cfg.backend = fusedloss::Backend::CPU;
  ASSERT_EQ(fusedloss::compute(p, out, cfg), fusedloss::Status::Success);
  expect_same(read_f32(path("out/loss.npy")), loss, "loss");
  expect_same(read_f32(path("out/lse.npy")), lse, "lse");
  expect_same(read_f32(path("out/grad_hidden.npy")), gh, "grad_hidden");
  expect_same(read_f32(path("out/grad_weight.npy")), gw, "grad_weight");
  expect_same(read_f32(path("out/grad_bias.npy")), gb, "grad_bias");
  EXPECT_EQ(read_npy(path("out/grad_weight.npy")).shape, (std::vector<std::int64_t>{V, H}));
  // A weight whose H differs from hidden's is one clear line and exit 2, nothing written.
  const ProcessResult bad =
      run({"eval", "--device", "cpu", "--loss", "linear_cross_entropy", "--input", path("h.npy"), "--target",
           path("y.npy"), "--linear-weight", save_f32("w2.npy", {V, H + 1}, random_floats(V * (H + 1), 9, -1, 1)),
           "--out", path("out2")});
  EXPECT_EQ(bad.status, 2);
  EXPECT_NE(bad.err.find("--linear-weight must be [V, H]"), std::string::npos) << bad.err;
  EXPECT_FALSE(fs::exists(path("out2")));
}

TEST_F(Cli, EvalRowwiseLossesMatchTheLibrary) {
  const std::int64_t N = 9, C = 17;
  const std::vector<float> a = random_floats(N * C, 6, -3, 3), b = random_floats(N * C, 7, -3, 3);
  // Soft targets / probabilities: rows of a softmax.
  std::vector<float> probs(N * C);
  for (std::int64_t n = 0; n < N; ++n) {
    double s = 0;
    for (std::int64_t c = 0; c < C; ++c) s += std::exp(b[n * C + c]);
    for (std::int64_t c = 0; c < C; ++c) probs[n * C + c] = static_cast<float>(std::exp(b[n * C + c]) / s);
  }
  std::vector<std::int64_t> labels(N);
  for (std::int64_t i = 0; i < N; ++i) labels[i] = (i * 5 + 1) % C;
  struct Case {
    Loss loss;
    std::vector<std::string> extra;
    const void* target;
    bool sparse;
    Reduction reduction;
    fusedloss::RowwiseParams params;
  };
  fusedloss::RowwiseParams log_target;
  log_target.log_target = true;
  fusedloss::RowwiseParams temperature;
  temperature.temperature = 2.0;
  const std::vector<Case> cases = {
      {Loss::CrossEntropy, {"--reduction", "sum"}, probs.data(), false, Reduction::Sum, {}},
      {Loss::NLL, {"--reduction", "none"}, labels.data(), true, Reduction::None, {}},
      {Loss::KLDiv, {"--reduction", "batchmean", "--param", "log_target=true"}, b.data(), false, Reduction::BatchMean,
       log_target},
      {Loss::KLDivLogits, {"--param", "temperature=2"}, b.data(), false, Reduction::Default, temperature},
  };
  save_f32("a.npy", {N, C}, a);
  save_f32("probs.npy", {N, C}, probs);
  save_f32("b.npy", {N, C}, b);
  save_i64("labels.npy", {N}, labels);
  for (const Case& c : cases) {
    SCOPED_TRACE(fusedloss::loss_name(c.loss));
    const std::string target = c.sparse ? path("labels.npy") : c.target == probs.data() ? path("probs.npy") : path("b.npy");
    std::vector<std::string> args = {"eval", "--device", "cpu", "--loss", fusedloss::loss_name(c.loss), "--input",
                                     path("a.npy"), "--target", target, "--out", path("out")};
    args.insert(args.end(), c.extra.begin(), c.extra.end());
    const ProcessResult r = run(args);
    ASSERT_EQ(r.status, 0) << r.err;

    fusedloss::RowwiseProblem p;
    p.loss = c.loss;
    p.rows = N;
    p.classes = C;
    p.input = a.data();
    if (c.sparse) p.labels = labels.data();
    else p.target = c.target;
    p.reduction = c.reduction;
    p.params = c.params;
    const std::size_t loss_count = c.reduction == Reduction::None ? (c.loss == Loss::KLDiv ? N * C : N) : 1;
    std::vector<float> loss(loss_count), grad(N * C);
    fusedloss::LossOutputs out;
    out.loss = loss.data();
    out.grad = grad.data();
    fusedloss::ExecutionConfig cfg;
    cfg.backend = fusedloss::Backend::CPU;
    ASSERT_EQ(fusedloss::compute_sync(p, out, cfg), fusedloss::Status::Success);
    expect_same(read_f32(path("out/loss.npy")), loss, "loss");
    expect_same(read_f32(path("out/grad.npy")), grad, "grad");
    fs::remove_all(path("out"));
  }
}

TEST_F(Cli, EvalPerColumnPosWeightMatchesTheLibrary) {
  const std::int64_t N = 6, C = 4;
  const std::vector<float> x = random_floats(N * C, 13, -3, 3), y = random_floats(N * C, 14, 0, 1),
                           pw = {0.5f, 1.0f, 2.0f, 4.0f};
  const ProcessResult r = run({"eval", "-d", "cpu", "-l", "bce_with_logits", "-i", save_f32("x.npy", {N, C}, x), "-t",
                               save_f32("y.npy", {N, C}, y), "--pos-weight", save_f32("pw.npy", {C}, pw), "-r", "none",
                               "-o", path("out")});
  ASSERT_EQ(r.status, 0) << r.err;
  fusedloss::ElementwiseProblem p;
  p.loss = Loss::BCEWithLogits;
  p.n = N * C;
  p.input = x.data();
  p.target = y.data();
  p.reduction = Reduction::None;
  p.params.pos_weight_per_column = pw.data();
  p.params.columns = C;
  std::vector<float> loss(N * C), grad(N * C);
  fusedloss::LossOutputs out;
  out.loss = loss.data();
  out.grad = grad.data();
  fusedloss::ExecutionConfig cfg;
  cfg.backend = fusedloss::Backend::CPU;
  ASSERT_EQ(fusedloss::compute_sync(p, out, cfg), fusedloss::Status::Success);
  EXPECT_EQ(read_npy(path("out/loss.npy")).shape, (std::vector<std::int64_t>{N, C}));
  expect_same(read_f32(path("out/loss.npy")), loss, "loss");
  expect_same(read_f32(path("out/grad.npy")), grad, "grad");
  // A pos_weight whose length is not the input's last dimension is a user error.
  save_f32("pw3.npy", {3}, {1, 1, 1});
  const ProcessResult bad = run({"eval", "-d", "cpu", "-l", "bce_with_logits", "-i", path("x.npy"), "-t", path("y.npy"),
                                 "--pos-weight", path("pw3.npy"), "-o", path("out2")});
  EXPECT_EQ(bad.status, 2);
  EXPECT_EQ(bad.err_lines(), 1) << bad.err;
}

TEST_F(Cli, EvalBfloat16RoundsOnLoadAndWritesWidenedFloats) {
  const std::int64_t n = 257;
  const std::vector<float> x = random_floats(n, 8, -2, 2), y = random_floats(n, 9, -2, 2);
  const ProcessResult r = run({"eval", "--device", "cpu", "--loss", "huber", "--dtype", "bf16", "--input", save_f32("x.npy", {n}, x),
                     "--target", save_f32("y.npy", {n}, y), "--out", path("out")});
  ASSERT_EQ(r.status, 0) << r.err;
  std::vector<fusedloss::bfloat16_t> xb(n), yb(n), gb(n);
  for (std::int64_t i = 0; i < n; ++i) {
    xb[i] = fusedloss::to_bfloat16(x[i]);
    yb[i] = fusedloss::to_bfloat16(y[i]);
  }
  fusedloss::ElementwiseProblem p;
  p.loss = Loss::Huber;
  p.dtype = DType::BFloat16;
  p.n = n;
  p.input = xb.data();
  p.target = yb.data();
  float loss = 0;
  fusedloss::LossOutputs out;
  out.loss = &loss;
  out.grad = gb.data();
  fusedloss::ExecutionConfig cfg;
  cfg.backend = fusedloss::Backend::CPU;
  ASSERT_EQ(fusedloss::compute_sync(p, out, cfg), fusedloss::Status::Success);
  expect_same(read_f32(path("out/loss.npy")), {loss}, "loss");
  std::vector<float> widened(n);
  for (std::int64_t i = 0; i < n; ++i) widened[i] = fusedloss::to_float(gb[i]);
  expect_same(read_f32(path("out/grad.npy")), widened, "grad");
}

// ---- .npy dtypes through the program ---------------------------------------------------------

TEST_F(Cli, EveryInputDtypeIsReadAndOutputsReadBack) {
  const std::int64_t n = 64;
  const std::vector<float> xf = random_floats(n, 10, -2, 2), yf = random_floats(n, 11, -2, 2);
  // f2 input: the gradient comes back as f2 (default dtype of a half file).
  std::vector<std::uint16_t> xh(n), yh(n);
  std::vector<double> xd(n), yd(n);
  std::vector<std::int32_t> xi(n), yi(n);
  std::vector<std::int64_t> xl(n), yl(n);
  for (std::int64_t i = 0; i < n; ++i) {
    xh[i] = fusedloss::to_half(xf[i]).bits;
    yh[i] = fusedloss::to_half(yf[i]).bits;
    xd[i] = xf[i];
    yd[i] = yf[i];
    xi[i] = static_cast<std::int32_t>(i % 5) - 2;
    yi[i] = static_cast<std::int32_t>(i % 3);
    xl[i] = xi[i];
    yl[i] = yi[i];
  }
  write_npy(path("xh.npy"), NpyType::F2, {n}, xh.data());
  write_npy(path("yh.npy"), NpyType::F2, {n}, yh.data());
  write_npy(path("xd.npy"), NpyType::F8, {n}, xd.data());
  write_npy(path("yd.npy"), NpyType::F8, {n}, yd.data());
  write_npy(path("xi.npy"), NpyType::I4, {n}, xi.data());
  write_npy(path("yi.npy"), NpyType::I4, {n}, yi.data());
  write_npy(path("xl.npy"), NpyType::I8, {n}, xl.data());
  write_npy(path("yl.npy"), NpyType::I8, {n}, yl.data());
  save_f32("xf.npy", {n}, xf);
  save_f32("yf.npy", {n}, yf);

  const ProcessResult half = run({"eval", "-d", "cpu", "-l", "mse", "-i", path("xh.npy"), "-t", path("yh.npy"), "-o", path("h")});
  ASSERT_EQ(half.status, 0) << half.err;
  EXPECT_EQ(read_npy(path("h/grad.npy")).type, NpyType::F2);
  EXPECT_EQ(read_npy(path("h/loss.npy")).type, NpyType::F4);

  // f8 data converted to float32 gives exactly the float32 file's results (values were floats).
  const ProcessResult dbl = run({"eval", "-d", "cpu", "-l", "mse", "-i", path("xd.npy"), "-t", path("yd.npy"), "-o", path("d")});
  const ProcessResult flt = run({"eval", "-d", "cpu", "-l", "mse", "-i", path("xf.npy"), "-t", path("yf.npy"), "-o", path("f")});
  ASSERT_EQ(dbl.status, 0) << dbl.err;
  ASSERT_EQ(flt.status, 0) << flt.err;
  expect_same(read_f32(path("d/grad.npy")), read_f32(path("f/grad.npy")), "f8 vs f4 grad");
  expect_same(read_f32(path("d/loss.npy")), read_f32(path("f/loss.npy")), "f8 vs f4 loss");

  // Integer arrays as values (converted) and as labels.
  const ProcessResult ints = run({"eval", "-d", "cpu", "-l", "hinge", "-i", path("xi.npy"), "-t", path("yl.npy"), "-o", path("i")});
  ASSERT_EQ(ints.status, 0) << ints.err;
  const ProcessResult f16_from_i8 =
      run({"eval", "-d", "cpu", "-l", "mae", "--dtype", "f16", "-i", path("xl.npy"), "-t", path("yi.npy"), "-o", path("l")});
  ASSERT_EQ(f16_from_i8.status, 0) << f16_from_i8.err;
  EXPECT_EQ(read_npy(path("l/grad.npy")).type, NpyType::F2);

  std::vector<float> logits(4 * 3, 0.5f);
  save_f32("z.npy", {4, 3}, logits);
  const std::vector<std::int32_t> labels32 = {0, 1, 2, 1};
  write_npy(path("y32.npy"), NpyType::I4, {4}, labels32.data());
  const ProcessResult i32 = run({"eval", "-d", "cpu", "-l", "nll", "-i", path("z.npy"), "-t", path("y32.npy"), "-o", path("n")});
  ASSERT_EQ(i32.status, 0) << i32.err;
  expect_same(read_f32(path("n/loss.npy")), {-0.5f}, "nll of constant log-probs");
}

TEST_F(Cli, NoGradWritesOnlyTheLoss) {
  const std::vector<float> x = {1, 2, 3}, y = {1, 1, 1};
  const ProcessResult r = run({"eval", "-d", "cpu", "-l", "mae", "-i", save_f32("x.npy", {3}, x), "-t", save_f32("y.npy", {3}, y),
                     "-o", path("out"), "--no-grad", "--quiet"});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_TRUE(r.out.empty()) << r.out;
  EXPECT_TRUE(fs::exists(path("out/loss.npy")));
  EXPECT_FALSE(fs::exists(path("out/grad.npy")));
  expect_same(read_f32(path("out/loss.npy")), {1.0f}, "mae");
}

TEST_F(Cli, InvalidDataIsAnErrorUnlessAllowed) {
  const std::vector<float> z(3 * 4, 0.0f);
  save_f32("z.npy", {3, 4}, z);
  save_i64("y.npy", {3}, {0, 7, 1});  // 7 is outside [0, 4)
  const ProcessResult strict = run({"eval", "-d", "cpu", "-l", "cross_entropy", "-i", path("z.npy"), "-t", path("y.npy"), "-o",
                          path("out")});
  EXPECT_EQ(strict.status, 2);
  EXPECT_EQ(strict.err_lines(), 1) << strict.err;
  EXPECT_NE(strict.err.find("1 invalid"), std::string::npos) << strict.err;
  EXPECT_FALSE(fs::exists(path("out")));
  const ProcessResult allowed = run({"eval", "-d", "cpu", "-l", "cross_entropy", "-i", path("z.npy"), "-t", path("y.npy"), "-o",
                           path("out"), "-r", "none", "--allow-invalid"});
  ASSERT_EQ(allowed.status, 0) << allowed.err;
  const std::vector<float> loss = read_f32(path("out/loss.npy"));
  ASSERT_EQ(loss.size(), 3u);
  EXPECT_TRUE(std::isnan(loss[1]));
  EXPECT_FLOAT_EQ(loss[0], std::log(4.0f));
}

// ---- malformed inputs and bad options: exit 2, one line, nothing written -------------------------

struct BadInvocation {
  const char* name;
  std::vector<std::string> args;  ///< {X} {Y} {Z} {L} {W} {OUT} {DIR} are replaced by paths
  const char* message = nullptr;  ///< when set: the one stderr line must contain it
};

void PrintTo(const BadInvocation& b, std::ostream* os) { *os << b.name; }

class CliUserError : public Cli, public ::testing::WithParamInterface<BadInvocation> {
 protected:
  void write_fixtures() {
    const std::vector<float> x = {0.5f, -1, 2, 0.25f, 1, -2}, y = {0, 1, 0, 1, 1, 0};
    save_f32("x.npy", {6}, x);
    save_f32("y.npy", {6}, y);
    save_f32("y5.npy", {5}, {1, 2, 3, 4, 5});
    save_f32("z.npy", {2, 3}, x);
    save_i64("labels.npy", {2}, {0, 2});
    save_i64("labels3.npy", {3}, {0, 2, 1});
    save_f32("cw2.npy", {2}, {1, 1});
    save_f32("p.npy", {6}, {0.5f, 1.5f, 0.2f, 0.1f, 0.3f, 0.9f});
    save_f32("pw3.npy", {3}, {1, 2, 3});
    save_f32("labels_f4.npy", {2}, {0, 2});  // class indices saved as float
    const std::vector<unsigned char> good = serialize_npy(NpyType::F4, {6}, x.data());
    std::vector<unsigned char> truncated = good;
    truncated.resize(truncated.size() - 5);
    save_bytes("truncated.npy", truncated);
    std::vector<unsigned char> magic = good;
    magic[0] = 'X';
    save_bytes("magic.npy", magic);
    save_bytes("empty.npy", {});
    save_bytes("text.npy", {'h', 'e', 'l', 'l', 'o', '\n', 'w', 'o', 'r', 'l', 'd', '\n'});
    auto with_header = [&](const std::string& name, std::string header, std::size_t data_bytes) {
      std::size_t total = 10 + header.size() + 1;
      if (total % 64) header.append(64 - total % 64, ' ');
      header += '\n';
      std::vector<unsigned char> b = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0,
                                      static_cast<unsigned char>(header.size() & 0xff),
                                      static_cast<unsigned char>(header.size() >> 8)};
      b.insert(b.end(), header.begin(), header.end());
      b.resize(b.size() + data_bytes, 0);
      save_bytes(name, b);
    };
    with_header("complex.npy", "{'descr': '<c8', 'fortran_order': False, 'shape': (6,), }", 48);
    with_header("bigendian.npy", "{'descr': '>f4', 'fortran_order': False, 'shape': (6,), }", 24);
    with_header("fortran.npy", "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }", 24);
    with_header("trailing.npy", "{'descr': '<f4', 'fortran_order': False, 'shape': (6,), }", 28);
    save_bytes("afile", {'x'});
  }
  std::vector<std::string> expand(std::vector<std::string> args) {
    for (std::string& a : args) {
      if (a.size() > 2 && a.front() == '{' && a.back() == '}') {
        const std::string key = a.substr(1, a.size() - 2);
        if (key == "OUT") a = path("out");
        else if (key == "DIR") a = dir_;
        else a = path(key);
      }
    }
    return args;
  }
};

TEST_P(CliUserError, ExitsTwoWithOneLineAndWritesNothing) {
  write_fixtures();
  const ProcessResult r = run(expand(GetParam().args));
  EXPECT_EQ(r.status, 2) << "stdout: " << r.out << "\nstderr: " << r.err;
  EXPECT_EQ(r.err_lines(), 1) << r.err;
  EXPECT_NE(r.err.find("error"), std::string::npos) << r.err;
  if (GetParam().message != nullptr) {
    EXPECT_NE(r.err.find(GetParam().message), std::string::npos) << r.err;
  }
  EXPECT_FALSE(fs::exists(path("out"))) << "an output directory was created";
  // No temporary files left in the fixture directory either.
  for (const auto& entry : fs::directory_iterator(dir_))
    EXPECT_EQ(entry.path().filename().string().find(".tmp"), std::string::npos) << entry.path();
}

#define EVAL "eval", "-d", "cpu"
INSTANTIATE_TEST_SUITE_P(
    Invocations, CliUserError,
    ::testing::Values(
        BadInvocation{"TruncatedFile", {EVAL, "-l", "mse", "-i", "{truncated.npy}", "-t", "{y.npy}", "-o", "{OUT}"}},
        BadInvocation{"WrongMagic", {EVAL, "-l", "mse", "-i", "{magic.npy}", "-t", "{y.npy}", "-o", "{OUT}"}},
        BadInvocation{"EmptyFile", {EVAL, "-l", "mse", "-i", "{x.npy}", "-t", "{empty.npy}", "-o", "{OUT}"}},
        BadInvocation{"TextFile", {EVAL, "-l", "mse", "-i", "{text.npy}", "-t", "{y.npy}", "-o", "{OUT}"}},
        BadInvocation{"UnsupportedDtype", {EVAL, "-l", "mse", "-i", "{complex.npy}", "-t", "{y.npy}", "-o", "{OUT}"}},
        BadInvocation{"BigEndian", {EVAL, "-l", "mse", "-i", "{bigendian.npy}", "-t", "{y.npy}", "-o", "{OUT}"}},
        BadInvocation{"FortranOrder", {EVAL, "-l", "kl_div", "-i", "{fortran.npy}", "-t", "{z.npy}", "-o", "{OUT}"}},
        BadInvocation{"TrailingBytes", {EVAL, "-l", "mse", "-i", "{trailing.npy}", "-t", "{y.npy}", "-o", "{OUT}"}},
        BadInvocation{"ShapeMismatch", {EVAL, "-l", "mse", "-i", "{x.npy}", "-t", "{y5.npy}", "-o", "{OUT}"}},
        BadInvocation{"WeightShapeMismatch",
                      {EVAL, "-l", "mse", "-i", "{x.npy}", "-t", "{y.npy}", "-w", "{y5.npy}", "-o", "{OUT}"}},
        BadInvocation{"MissingFile", {EVAL, "-l", "mse", "-i", "{nope.npy}", "-t", "{y.npy}", "-o", "{OUT}"}},
        BadInvocation{"DirectoryAsFile", {EVAL, "-l", "mse", "-i", "{DIR}", "-t", "{y.npy}", "-o", "{OUT}"}},
        BadInvocation{"UnknownLoss", {EVAL, "-l", "focal", "-i", "{x.npy}", "-t", "{y.npy}", "-o", "{OUT}"}},
        BadInvocation{"BadParamValue", {EVAL, "-l", "huber", "-i", "{x.npy}", "-t", "{y.npy}", "-p", "delta=abc", "-o", "{OUT}"}},
        BadInvocation{"ParamOutOfRange",
                      {EVAL, "-l", "huber", "-i", "{x.npy}", "-t", "{y.npy}", "-p", "delta=-1", "-o", "{OUT}"}},
        BadInvocation{"UnknownParamKey", {EVAL, "-l", "mse", "-i", "{x.npy}", "-t", "{y.npy}", "-p", "alpha=1", "-o", "{OUT}"}},
        BadInvocation{"ParamNotForThisLoss",
                      {EVAL, "-l", "mse", "-i", "{x.npy}", "-t", "{y.npy}", "-p", "label_smoothing=0.1", "-o", "{OUT}"}},
        BadInvocation{"ParamWithoutValue", {EVAL, "-l", "huber", "-i", "{x.npy}", "-t", "{y.npy}", "-p", "delta", "-o", "{OUT}"}},
        BadInvocation{"ParamTwice",
                      {EVAL, "-l", "huber", "-i", "{x.npy}", "-t", "{y.npy}", "-p", "delta=1", "-p", "delta=2", "-o", "{OUT}"}},
        BadInvocation{"NonFiniteParam",
                      {EVAL, "-l", "mse", "-i", "{x.npy}", "-t", "{y.npy}", "-p", "grad_scale=inf", "-o", "{OUT}"}},
        BadInvocation{"BadLogTarget",
                      {EVAL, "-l", "kl_div", "-i", "{z.npy}", "-t", "{z.npy}", "-p", "log_target=maybe", "-o", "{OUT}"}},
        BadInvocation{"UnknownReduction", {EVAL, "-l", "mse", "-i", "{x.npy}", "-t", "{y.npy}", "-r", "max", "-o", "{OUT}"}},
        BadInvocation{"BatchmeanForMse", {EVAL, "-l", "mse", "-i", "{x.npy}", "-t", "{y.npy}", "-r", "batchmean", "-o", "{OUT}"}},
        BadInvocation{"RmseWithSum", {EVAL, "-l", "rmse", "-i", "{x.npy}", "-t", "{y.npy}", "-r", "sum", "-o", "{OUT}"}},
        BadInvocation{"UnknownDtype", {EVAL, "-l", "mse", "-i", "{x.npy}", "-t", "{y.npy}", "--dtype", "f64", "-o", "{OUT}"}},
        BadInvocation{"RowwiseInputNot2D", {EVAL, "-l", "cross_entropy", "-i", "{x.npy}", "-t", "{labels.npy}", "-o", "{OUT}"}},
        BadInvocation{"LabelsWrongLength",
                      {EVAL, "-l", "cross_entropy", "-i", "{z.npy}", "-t", "{labels3.npy}", "-o", "{OUT}"}},
        BadInvocation{"NllFloatTarget", {EVAL, "-l", "nll", "-i", "{z.npy}", "-t", "{z.npy}", "-o", "{OUT}"}},
        // pos_weight twice: neither may silently win.
        BadInvocation{"PosWeightParamAndFile",
                      {EVAL, "-l", "bce_with_logits", "-i", "{z.npy}", "-t", "{z.npy}", "-p", "pos_weight=2",
                       "--pos-weight", "{pw3.npy}", "-o", "{OUT}"},
                      "--param pos_weight and --pos-weight"},
        BadInvocation{"FloatLabelsForCrossEntropy",
                      {EVAL, "-l", "cross_entropy", "-i", "{z.npy}", "-t", "{labels_f4.npy}", "-o", "{OUT}"},
                      "class-index labels must be int32 or int64 (got <f4); soft targets must have shape [N, C] = [2, 3]"},
        BadInvocation{"GradScaleBelowFloatMin",
                      {EVAL, "-l", "mse", "-i", "{x.npy}", "-t", "{y.npy}", "-p", "grad_scale=1e-40", "-o", "{OUT}"},
                      "grad_scale"},
        BadInvocation{"GradScaleAboveFloatMax",
                      {EVAL, "-l", "mse", "-i", "{x.npy}", "-t", "{y.npy}", "-p", "grad_scale=-3.5e38", "-o", "{OUT}"},
                      "grad_scale must be 0 (loss only) or have a magnitude in [FLT_MIN, FLT_MAX]"},
        BadInvocation{"ClassWeightWrongLength",
                      {EVAL, "-l", "cross_entropy", "-i", "{z.npy}", "-t", "{labels.npy}", "-w", "{cw2.npy}", "-o", "{OUT}"}},
        BadInvocation{"WeightForKl", {EVAL, "-l", "kl_div", "-i", "{z.npy}", "-t", "{z.npy}", "-w", "{cw2.npy}", "-o", "{OUT}"}},
        BadInvocation{"BadProbability", {EVAL, "-l", "bce", "-i", "{p.npy}", "-t", "{y.npy}", "-o", "{OUT}"}},
        BadInvocation{"MissingOut", {EVAL, "-l", "mse", "-i", "{x.npy}", "-t", "{y.npy}"}},
        BadInvocation{"OutIsAFile", {EVAL, "-l", "mse", "-i", "{x.npy}", "-t", "{y.npy}", "-o", "{afile}"}},
        BadInvocation{"UnknownOption", {EVAL, "-l", "mse", "-i", "{x.npy}", "-t", "{y.npy}", "-o", "{OUT}", "--fast"}},
        BadInvocation{"UnknownDevice", {"eval", "-d", "tpu", "-l", "mse", "-i", "{x.npy}", "-t", "{y.npy}", "-o", "{OUT}"}},
        BadInvocation{"BadThreads", {EVAL, "-l", "mse", "-i", "{x.npy}", "-t", "{y.npy}", "-o", "{OUT}", "--threads", "two"}},
        BadInvocation{"NoCommand", {}},
        BadInvocation{"UnknownCommand", {"train"}},
        BadInvocation{"ValidateUnknownLoss", {"validate", "-l", "focal"}},
        BadInvocation{"ValidateTargetWithoutInput", {"validate", "-l", "mse", "-t", "{y.npy}"}},
        BadInvocation{"ValidateBadShape", {"validate", "-l", "mse", "--shape", "12xq"}},
        BadInvocation{"BenchBadSize", {"bench", "-d", "cpu", "--sizes", "abc"}},
        BadInvocation{"BenchBadShape", {"bench", "-d", "cpu", "-l", "cross_entropy", "--shapes", "100"}},
        BadInvocation{"BenchUnknownLoss", {"bench", "-d", "cpu", "-l", "mse,focal"}},
        BadInvocation{"BenchJsonInMissingDir", {"bench", "-d", "cpu", "--json", "{nodir/x.json}"}}),
    [](const ::testing::TestParamInfo<BadInvocation>& info) { return std::string(info.param.name); });
#undef EVAL

// ---- validate ---------------------------------------------------------------------------------

TEST_F(Cli, ValidateExitStatusReflectsTheGpu) {
  const ProcessResult r = run({"validate", "--loss", "huber", "--shape", "10007"});
  if (!fusedloss::cuda_available()) {
    EXPECT_EQ(r.status, 3) << r.err;
    EXPECT_EQ(r.err_lines(), 1) << r.err;
    EXPECT_NE(r.err.find("GPU"), std::string::npos) << r.err;
    // The line says what to run instead.
    EXPECT_NE(r.err.find("instead: `fusedloss eval --device cpu ...`"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("the emulated build (README: Running without a GPU)"), std::string::npos) << r.err;
  } else {
    EXPECT_EQ(r.status, 0) << r.out << r.err;
    EXPECT_NE(r.out.find("PASS"), std::string::npos) << r.out;
  }
}

TEST_F(Cli, ValidateFromFilesExitStatusReflectsTheGpu) {
  const std::int64_t N = 16, C = 33;
  save_f32("z.npy", {N, C}, random_floats(N * C, 12, -4, 4));
  std::vector<std::int64_t> labels(N);
  for (std::int64_t i = 0; i < N; ++i) labels[i] = (i * 3) % C;
  save_i64("y.npy", {N}, labels);
  const ProcessResult r = run({"validate", "-l", "cross_entropy", "-i", path("z.npy"), "-t", path("y.npy"), "--dtype", "bf16"});
  EXPECT_EQ(r.status, fusedloss::cuda_available() ? 0 : 3) << r.out << r.err;
}

TEST_F(Cli, DeviceCudaWithoutGpuExitsThree) {
  if (fusedloss::cuda_available()) GTEST_SKIP() << "a GPU is usable here";
  save_f32("x.npy", {2}, {1, 2});
  const ProcessResult r = run({"eval", "-d", "cuda", "-l", "mse", "-i", path("x.npy"), "-t", path("x.npy"), "-o", path("out")});
  EXPECT_EQ(r.status, 3) << r.err;
  EXPECT_EQ(r.err_lines(), 1) << r.err;
  EXPECT_NE(r.err.find("instead: `--device cpu`"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("the emulated build (README: Running without a GPU)"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(path("out")));
}

// ---- what a reduced loss of NaN means, and grad_scale's edges ------------------------------------

TEST_F(Cli, EmptyMeanPrintsNanAndTheReason) {
  save_f32("x0.npy", {0}, {});
  const ProcessResult empty =
      run({"eval", "-d", "cpu", "-l", "mse", "-i", path("x0.npy"), "-t", path("x0.npy"), "-o", path("out0")});
  ASSERT_EQ(empty.status, 0) << empty.err;
  EXPECT_EQ(empty.out.rfind("loss = nan (mean of no elements)  (mse", 0), 0u) << empty.out;

  save_f32("z.npy", {3, 4}, random_floats(12, 5, -2, 2));
  save_i64("ignored.npy", {3}, {-100, -100, -100});
  const ProcessResult ignored =
      run({"eval", "-d", "cpu", "-l", "cross_entropy", "-i", path("z.npy"), "-t", path("ignored.npy"), "-o", path("out1")});
  ASSERT_EQ(ignored.status, 0) << ignored.err;
  EXPECT_EQ(ignored.out.rfind("loss = nan (every row is ignored: all labels are ignore_index -100)  (cross_entropy", 0), 0u)
      << ignored.out;
  EXPECT_TRUE(std::isnan(read_f32(path("out1/loss.npy")).at(0)));

  // A NaN that comes from the data is printed as nan too, without an empty-mean reason.
  save_f32("xn.npy", {2}, {std::nanf(""), 1});
  const ProcessResult data_nan =
      run({"eval", "-d", "cpu", "-l", "mse", "-i", path("xn.npy"), "-t", path("xn.npy"), "-o", path("out2")});
  ASSERT_EQ(data_nan.status, 0) << data_nan.err;
  EXPECT_EQ(data_nan.out.rfind("loss = nan  (mse", 0), 0u) << data_nan.out;
}

TEST_F(Cli, GradScaleZeroAndTheFloatEdgesAreAccepted) {
  save_f32("x.npy", {4}, {0.5f, -1, 2, 0.25f});
  save_f32("y.npy", {4}, {0, 1, -3, 1});
  for (const char* scale : {"0", "1.1754943508222875e-38", "-3.4028234663852886e38"}) {
    SCOPED_TRACE(scale);
    const std::string out = path(std::string("out") + scale);
    const ProcessResult r = run({"eval", "-d", "cpu", "-l", "mse", "-i", path("x.npy"), "-t", path("y.npy"), "-p",
                                 std::string("grad_scale=") + scale, "-o", out});
    ASSERT_EQ(r.status, 0) << r.err;
    const std::vector<float> grad = read_f32(out + "/grad.npy");
    ASSERT_EQ(grad.size(), 4u);
    if (std::string(scale) == "0") {
      for (float g : grad) EXPECT_EQ(g, 0.0f) << "grad_scale 0: the gradient is exactly zero";
      EXPECT_GT(read_f32(out + "/loss.npy").at(0), 0.0f) << "grad_scale 0 still computes the loss";
    }
  }
}

// ---- bench ------------------------------------------------------------------------------------

TEST_F(Cli, BenchOnTheCpuWritesTableAndJson) {
  const ProcessResult r = run({"bench", "--device", "cpu", "--loss", "mse,bce_with_logits,cross_entropy,nll,kl_div_logits",
                     "--dtype", "f32,bf16", "--sizes", "4096,2^12", "--shapes", "8x100", "--repeats", "3", "--warmup",
                     "0", "--json", path("bench.json"), "--commit", "abc123", "--no-peers"});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("copy GB/s"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("moved/min"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("cross_entropy"), std::string::npos) << r.out;
  EXPECT_NE(r.err.find("[1/"), std::string::npos) << r.err;  // progress lines
  const nlohmann::json doc = nlohmann::json::parse(slurp(path("bench.json")));
  EXPECT_EQ(doc["schema"], "fusedloss-bench/1");
  EXPECT_EQ(doc["commit"], "abc123");
  EXPECT_EQ(doc["device"]["backend"], "cpu");
  EXPECT_FALSE(doc["date"].get<std::string>().empty());
  EXPECT_NE(doc["command"].get<std::string>().find("bench"), std::string::npos);
  int fused = 0, unfused = 0, copy = 0;
  for (const auto& rec : doc["results"]) {
    const std::string impl = rec["impl"];
    fused += impl == "fused";
    unfused += impl == "unfused";
    copy += impl == "copy";
    EXPECT_GT(rec["median_ms"].get<double>(), 0.0);
    EXPECT_GT(rec["bytes"].get<double>(), 0.0);
    EXPECT_GE(rec["bandwidth_gbps"].get<double>(), 0.0);
    if (impl != "copy") {
      EXPECT_TRUE(rec.contains("copy_bandwidth_gbps"));
    }
    if (impl == "fused") {  // the CPU counts no accesses: bytes moved is the model, the minimum
      EXPECT_EQ(rec["bytes_moved"].get<double>(), rec["bytes"].get<double>());
      EXPECT_EQ(rec["bytes_moved_to_minimum"].get<double>(), 1.0);
      EXPECT_EQ(rec["bytes_moved_source"].get<std::string>().rfind("model", 0), 0u) << rec.dump();
    }
  }
  // 2 elementwise losses × 2 dtypes × 2 sizes + 3 row-wise × 2 dtypes × 1 shape.
  EXPECT_EQ(fused, 14);
  EXPECT_EQ(copy, 14);
  EXPECT_EQ(unfused, 12);  // no unfused baseline for kl_div_logits
  EXPECT_EQ(doc["results"][0]["bytes"].get<double>(), 3.0 * 4096 * 4);  // x + y read, gradient written
}

TEST_F(Cli, BenchOnTheCpuAddsThePyTorchColumn) {
  if (std::system("python3 -c 'import torch' >/dev/null 2>&1") != 0) GTEST_SKIP() << "python3 has no torch";
  const ProcessResult r = run({"bench", "--device", "cpu", "--loss", "mse,cross_entropy", "--dtype", "f32", "--sizes",
                               "4096", "--shapes", "8x100", "--repeats", "3", "--warmup", "0", "--threads", "1",
                               "--no-baseline", "--json", path("bench.json")});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("torch ms"), std::string::npos) << r.out;
  const nlohmann::json doc = nlohmann::json::parse(slurp(path("bench.json")));
  int peers = 0;
  for (const auto& rec : doc["results"]) {
    if (rec["impl"] != "torch_eager") continue;
    ++peers;
    EXPECT_GT(rec["median_ms"].get<double>(), 0.0);
    EXPECT_GT(rec["fused_speedup"].get<double>(), 0.0);
    EXPECT_FALSE(rec.contains("device"));  // a result record, not the script's whole document
    EXPECT_GT(rec["bytes"].get<double>(), 0.0);
  }
  EXPECT_EQ(peers, 2);
}

TEST_F(Cli, BenchWithoutTorchSaysSoAndStillRuns) {
  ::setenv("FUSEDLOSS_PYTHON", "/nonexistent/python3", 1);
  const ProcessResult r = run({"bench", "--device", "cpu", "--loss", "mse", "--dtype", "f32", "--sizes", "4096,8192",
                               "--repeats", "3", "--warmup", "0", "--no-baseline"});
  ::unsetenv("FUSEDLOSS_PYTHON");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.err.find("no PyTorch column"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("no PyTorch column"), r.err.rfind("no PyTorch column")) << "said once: " << r.err;
  EXPECT_NE(r.out.find("8192"), std::string::npos) << r.out;
}

TEST_F(Cli, HelpAndVersionExitZero) {
  const ProcessResult help = run({"--help"});
  EXPECT_EQ(help.status, 0);
  EXPECT_NE(help.out.find("eval"), std::string::npos);
  const ProcessResult sub = run({"bench", "--help"});
  EXPECT_EQ(sub.status, 0);
  EXPECT_NE(sub.out.find("--sizes"), std::string::npos);
  const ProcessResult version = run({"--version"});
  EXPECT_EQ(version.status, 0);
}

}  // namespace
}  // namespace fusedloss_cli
