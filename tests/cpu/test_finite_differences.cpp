// Central finite differences: the CPU path's gradient is the derivative of its own loss.
//
// Part A — in double, on the math the CPU path evaluates (the shared functors of include/fusedloss/detail,
// instantiated with T = double exactly as cpu/ does): step 1e-6·max(1,|x|), tolerance 1e-7·(1 + |g|) plus the
// double rounding noise of the difference quotient.
//
// Part B — through the public API (fusedloss::compute on the CPU path), every loss and option, every reduction.
// The loss comes back in float32, so the difference quotient carries a rounding noise of up to
// (ulp(ℓ₊) + ulp(ℓ₋)) / (x₊ − x₋); steps are larger (1e-2 · max(1,|x|); 1e-3 for bce) and the truncation error is
// estimated from the quotients at h and 2h (Richardson). The tolerance per entry is
//     noise(h) + noise(2h) + |fd(h) − fd(2h)| + 1e-5·|g| + 1e-7,
// and every test also checks that this tolerance is < 1% of |g| for most entries, i.e. that the comparison
// would catch a gradient that is off by 1% (it cannot pass trivially). Points stay away from kinks.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <ostream>
#include <string>
#include <tuple>
#include <vector>

#include "common/test_util.hpp"
#include "fusedloss/detail/elementwise_ops.hpp"
#include "fusedloss/detail/rowwise_ops.hpp"

namespace {

using namespace tu;
namespace fl = ::fusedloss;
namespace fd = ::fusedloss::detail;

// =========================================================================================================
// Data away from the kinks
// =========================================================================================================

struct ElemOpts {
  double delta = 1, beta = 1, pos_weight = 1;
};

/// True when (x, y) is at least `m` away (in x) from a kink of the loss, with the loss's domain respected.
bool away_from_kinks(Loss loss, const ElemOpts& o, double x, double y, double m) {
  const double r = x - y, t = y > 0 ? 1.0 : -1.0;
  switch (loss) {
    case Loss::MAE:
    case Loss::RMSE: return std::fabs(r) > m;
    case Loss::MSLE: return std::fabs(x) > m && x > -0.5;
    case Loss::Huber: return std::fabs(std::fabs(r) - o.delta) > m;
    case Loss::SmoothL1: return std::fabs(std::fabs(r) - o.beta) > m && std::fabs(r) > m;
    case Loss::Hinge:
    case Loss::SquaredHinge: return std::fabs(t * x - 1) > m;
    case Loss::BCE: return x > 0.05 && x < 0.95;
    default: return true;
  }
}

void kink_free_data(Rng& rng, Loss loss, const ElemOpts& o, std::size_t n, Vec& x, Vec& y) {
  x.resize(n);
  y.resize(n);
  for (std::size_t i = 0; i < n; ++i) {
    Vec xi, yi;
    for (;;) {
      elementwise_data(rng, loss, 1, xi, yi);
      xi[0] = static_cast<float>(xi[0]);
      yi[0] = static_cast<float>(yi[0]);
      if (!away_from_kinks(loss, o, xi[0], yi[0], 0.1 * std::max(1.0, std::fabs(xi[0])))) continue;
      // The hinges: every other point inside the margin, so that some gradients are non-zero.
      const bool hinge = loss == Loss::Hinge || loss == Loss::SquaredHinge;
      if (hinge && i % 2 == 0 && (yi[0] > 0 ? xi[0] : -xi[0]) > 0.5) continue;
      break;
    }
    x[i] = xi[0];
    y[i] = yi[0];
  }
}

// =========================================================================================================
// Part A: double precision, on the functors the CPU path instantiates with T = double
// =========================================================================================================

template <Loss L>
void fd_functor_in_double(Rng& rng, const ElemOpts& o) {
  fd::ElementwiseOpParams<double> p;
  p.delta = o.delta;
  p.beta = o.beta;
  p.pos_weight = o.pos_weight;
  Vec xs, ys;
  kink_free_data(rng, L, o, 300, xs, ys);
  for (std::size_t i = 0; i < xs.size(); ++i) {
    const double x = xs[i], y = ys[i];
    double l, g, lp, gp, lm, gm;
    fd::ElementwiseOp<L>::eval(x, y, p, l, g);
    const double h0 = 1e-6 * std::max(1.0, std::fabs(x));
    const double xp = x + h0, xm = x - h0;
    fd::ElementwiseOp<L>::eval(xp, y, p, lp, gp);
    fd::ElementwiseOp<L>::eval(xm, y, p, lm, gm);
    const double num = (lp - lm) / (xp - xm);
    const double noise = 4 * 2.3e-16 * std::max({std::fabs(lp), std::fabs(lm), 1.0}) / (xp - xm);
    EXPECT_NEAR(num, g, 1e-7 * (1 + std::fabs(g)) + noise)
        << fl::loss_name(L) << " at x=" << x << " y=" << y << " (δ=" << o.delta << ", β=" << o.beta
        << ", pw=" << o.pos_weight << ")";
  }
}

TEST(CpuFiniteDifferencesDouble, ElementwiseFunctorsEveryLossAndOption) {
  FL_SEEDED_RNG(rng);
  fd_functor_in_double<Loss::MSE>(rng, {});
  fd_functor_in_double<Loss::MAE>(rng, {});
  fd_functor_in_double<Loss::RMSE>(rng, {});
  fd_functor_in_double<Loss::MSLE>(rng, {});
  for (double d : {1.0, 0.4, 3.0}) fd_functor_in_double<Loss::Huber>(rng, {d, 1, 1});
  for (double b : {1.0, 0.3, 0.0}) fd_functor_in_double<Loss::SmoothL1>(rng, {1, b, 1});
  for (double d : {1.0, 0.25, 2.5}) fd_functor_in_double<Loss::PseudoHuber>(rng, {d, 1, 1});
  fd_functor_in_double<Loss::LogCosh>(rng, {});
  fd_functor_in_double<Loss::Hinge>(rng, {});
  fd_functor_in_double<Loss::SquaredHinge>(rng, {});
  fd_functor_in_double<Loss::BCE>(rng, {});
  for (double pw : {1.0, 2.5, 0.3}) fd_functor_in_double<Loss::BCEWithLogits>(rng, {1, 1, pw});
}

/// Sparse cross_entropy row loss from the shared algebra (rowwise_ops.hpp) in double, as cpu/ composes it:
/// softcap → lse → sparse_ce_row_loss; gradient from sparse_ce_grad_coeffs × softcap_derivative.
struct CeRowAlgebra {
  Vec w;  // class weights
  std::int64_t y = 0;
  double eps = 0, zl = 0, cap = 0;

  double loss(const Vec& z) const {
    const std::size_t C = z.size();
    Vec zc(C);
    for (std::size_t c = 0; c < C; ++c) zc[c] = fd::softcap_value(z[c], cap);
    double m = -kInf, s = 0, W = 0, swz = 0;
    for (double v : zc) m = std::max(m, v);
    for (double v : zc) s += std::exp(v - m);
    for (std::size_t c = 0; c < C; ++c) {
      W += w[c];
      swz += w[c] * zc[c];
    }
    const double lse = m + std::log(s);
    return fd::sparse_ce_row_loss(lse, zc[y], w[y], W, swz, eps, 1.0 / double(C), zl);
  }
  Vec grad(const Vec& z) const {
    const std::size_t C = z.size();
    Vec zc(C), g(C);
    for (std::size_t c = 0; c < C; ++c) zc[c] = fd::softcap_value(z[c], cap);
    double m = -kInf, s = 0, W = 0;
    for (double v : zc) m = std::max(m, v);
    for (double v : zc) s += std::exp(v - m);
    for (double v : w) W += v;
    const double lse = m + std::log(s);
    const auto k = fd::sparse_ce_grad_coeffs(w[y], W, eps, 1.0 / double(C), zl, lse);
    for (std::size_t c = 0; c < C; ++c) {
      const double p = std::exp(zc[c] - lse);
      g[c] = (p * k.a - (std::int64_t(c) == y ? k.b : 0.0) - k.e * w[c]) * fd::softcap_derivative(zc[c], cap);
    }
    return g;
  }
};

TEST(CpuFiniteDifferencesDouble, CrossEntropyRowAlgebraEveryOption) {
  FL_SEEDED_RNG(rng);
  const std::size_t C = 7;
  struct Opt {
    bool weights;
    double eps, zl, cap;
  };
  for (const Opt& o : {Opt{false, 0, 0, 0}, Opt{true, 0, 0, 0}, Opt{false, 0.2, 0, 0}, Opt{true, 0.2, 0, 0},
                       Opt{false, 0, 0.05, 0}, Opt{false, 0, 0, 2.5}, Opt{true, 0.1, 0.01, 4}, Opt{false, 1, 0, 0}}) {
    for (int trial = 0; trial < 20; ++trial) {
      CeRowAlgebra a;
      a.w.assign(C, 1.0);
      if (o.weights)
        for (double& v : a.w) v = rng.uniform(0.2, 3);
      a.y = rng.integer(0, C - 1);
      a.eps = o.eps;
      a.zl = o.zl;
      a.cap = o.cap;
      const Vec z = rng.normal_vec(C, 0, 3);
      const Vec g = a.grad(z);
      for (std::size_t c = 0; c < C; ++c) {
        const double h = 1e-6 * std::max(1.0, std::fabs(z[c]));
        Vec zp = z, zm = z;
        zp[c] += h;
        zm[c] -= h;
        const double lp = a.loss(zp), lm = a.loss(zm);
        const double num = (lp - lm) / (zp[c] - zm[c]);
        const double noise = 8 * 2.3e-16 * std::max({std::fabs(lp), 1.0}) / (zp[c] - zm[c]);
        EXPECT_NEAR(num, g[c], 1e-7 * (1 + std::fabs(g[c])) + noise)
            << "class " << c << " label " << a.y << " ε=" << o.eps << " z_loss=" << o.zl << " softcap=" << o.cap;
      }
    }
  }
}

TEST(CpuFiniteDifferencesDouble, KlDivElement) {
  FL_SEEDED_RNG(rng);
  for (bool log_target : {false, true}) {
    for (int i = 0; i < 300; ++i) {
      const double q = rng.uniform(-8, 0);
      const double t = log_target ? rng.uniform(-8, 0) : rng.uniform(0, 1);
      double dq, dp, dm;
      fd::kl_div_element(q, t, log_target, dq);
      const double h = 1e-6 * std::max(1.0, std::fabs(q));
      const double lp = fd::kl_div_element(q + h, t, log_target, dp);
      const double lm = fd::kl_div_element(q - h, t, log_target, dm);
      EXPECT_NEAR((lp - lm) / (2 * h), dq, 1e-7 * (1 + std::fabs(dq)) + 1e-9) << "q=" << q << " t=" << t;
    }
  }
}

// =========================================================================================================
// Part B: through the public API (float32 loss output)
// =========================================================================================================

fl::ExecutionConfig cpu() {
  fl::ExecutionConfig c;
  c.backend = fl::Backend::CPU;
  return c;
}

double ulp32(double v) { return ulp(DType::Float32, v); }

/// Collects FD comparisons for one reduction; check() fails on every entry out of tolerance and adds to the
/// "non-trivial" statistic, which `Sharpness` asserts once per test over all reductions.
struct Sharpness {
  std::size_t significant = 0, sharp = 0;
  void expect_meaningful() const {
    ASSERT_GT(significant, 0u) << "no entry with a significant gradient: the test checks nothing";
    EXPECT_GE(double(sharp), 0.8 * double(significant))
        << "the FD tolerance is not below 1% of |g| for most entries (" << sharp << " of " << significant
        << "): the comparison would not catch a 1% error";
  }
};

struct FdChecker {
  double gmax = 0;
  struct Entry {
    double g, fd_h, fd_2h, noise;
    std::string where;
  };
  std::vector<Entry> entries;

  void add(double g, double fd_h, double fd_2h, double noise, std::string where) {
    entries.push_back({g, fd_h, fd_2h, noise, std::move(where)});
    gmax = std::max(gmax, std::fabs(g));
  }
  void check(Sharpness& stats) const {
    std::size_t failures = 0;
    for (const Entry& e : entries) {
      const double tol = e.noise + std::fabs(e.fd_h - e.fd_2h) + 1e-5 * std::fabs(e.g) + 1e-7;
      if (!(std::fabs(e.fd_h - e.g) <= tol)) {
        if (failures++ < 10)
          ADD_FAILURE() << e.where << ": library gradient " << e.g << " vs central difference " << e.fd_h
                        << " (at 2h: " << e.fd_2h << ", tolerance " << tol << ")";
      }
      if (gmax > 0 && std::fabs(e.g) >= 0.05 * gmax) {
        ++stats.significant;
        if (tol < 0.01 * std::fabs(e.g)) ++stats.sharp;
      }
    }
    EXPECT_EQ(failures, 0u) << failures << " of " << entries.size() << " entries failed";
  }
};

// ---- elementwise ------------------------------------------------------------------------------------------

struct ElemFdCase {
  Loss loss;
  ElemOpts opts;
  bool weighted = false;
  bool per_column = false;
  std::string tag;
  friend void PrintTo(const ElemFdCase& c, std::ostream* os) { *os << fl::loss_name(c.loss) << " " << c.tag; }
};

std::vector<ElemFdCase> elem_fd_cases() {
  std::vector<ElemFdCase> v;
  for (Loss l : elementwise_losses()) {
    v.push_back({l, {}, false, false, "defaults"});
    v.push_back({l, {}, true, false, "weighted"});
  }
  v.push_back({Loss::Huber, {0.4, 1, 1}, true, false, "delta0_4"});
  v.push_back({Loss::Huber, {3.0, 1, 1}, false, false, "delta3"});
  v.push_back({Loss::SmoothL1, {1, 0.3, 1}, true, false, "beta0_3"});
  v.push_back({Loss::SmoothL1, {1, 0.0, 1}, false, false, "beta0"});
  v.push_back({Loss::PseudoHuber, {2.5, 1, 1}, true, false, "delta2_5"});
  v.push_back({Loss::PseudoHuber, {0.25, 1, 1}, false, false, "delta0_25"});
  v.push_back({Loss::BCEWithLogits, {1, 1, 2.5}, true, false, "pos_weight2_5"});
  v.push_back({Loss::BCEWithLogits, {1, 1, 1}, true, true, "pos_weight_per_column"});
  return v;
}

class CpuFiniteDifferencesElementwise : public ::testing::TestWithParam<ElemFdCase> {};

TEST_P(CpuFiniteDifferencesElementwise, GradientMatchesLossForEveryReduction) {
  const ElemFdCase& k = GetParam();
  FL_SEEDED_RNG(rng);
  const std::size_t n = 24;
  Vec x, y, w;
  kink_free_data(rng, k.loss, k.opts, n, x, y);
  if (k.weighted) w = round_to(DType::Float32, rng.uniform_vec(n, 0.25, 2));
  std::vector<float> pw_col;
  if (k.per_column) {
    pw_col = {0.5f, 1.0f, 2.0f, 3.5f};
  }
  const double scale = -1.75;  // the library returns grad × grad_scale; divide it back out
  // Relative step 1e-2 (the points are >= 0.1·max(1,|x|) away from every kink, 5× the largest step), 1e-3
  // for bce whose third derivative grows like 1/p³.
  const double rel_step = k.loss == Loss::BCE ? 1e-3 : 1e-2;

  // A reduced loss grows with n while one element's derivative does not (sum) or shrinks like 1/n (mean):
  // the reductions use the first 8 elements only, which keeps the float32 noise of the quotient small.
  const std::size_t n_reduced = 8;
  auto problem = [&](const Buffer& bx, const Buffer& by, const Buffer& bw, Reduction red) {
    fl::ElementwiseProblem p;
    p.loss = k.loss;
    p.n = static_cast<std::int64_t>(red == Reduction::None ? n : n_reduced);
    p.input = bx.data();
    p.target = by.data();
    p.weight = w.empty() ? nullptr : bw.data();
    p.reduction = red;
    p.grad_scale = scale;
    p.params.delta = k.opts.delta;
    p.params.beta = k.opts.beta;
    p.params.pos_weight = k.opts.pos_weight;
    if (k.per_column) {
      p.params.pos_weight_per_column = pw_col.data();
      p.params.columns = static_cast<std::int64_t>(pw_col.size());
    }
    return p;
  };
  const Buffer by = Buffer::from(DType::Float32, y), bw = Buffer::from(DType::Float32, w);
  // x shifted by s·h_i in every element (rounded to float); returns the shifted values.
  auto shifted = [&](double s) {
    Vec xs(n);
    for (std::size_t i = 0; i < n; ++i) xs[i] = static_cast<float>(x[i] + s * rel_step * std::max(1.0, std::fabs(x[i])));
    return xs;
  };

  const std::vector<Reduction> reds =
      k.loss == Loss::RMSE ? std::vector<Reduction>{Reduction::Mean}
                           : std::vector<Reduction>{Reduction::None, Reduction::Sum, Reduction::Mean};
  Sharpness stats;
  for (Reduction red : reds) {
    SCOPED_TRACE(std::string(fl::loss_name(k.loss)) + " " + k.tag + " " + red_name(red));
    const Buffer bx = Buffer::from(DType::Float32, x);
    const RunResult base = run(problem(bx, by, bw, red), true, cpu());
    ASSERT_EQ(base.status, Status::Success);
    FdChecker check;
    if (red == Reduction::None) {
      // Elements are independent: shift all of them at once, read each element's own loss.
      const Vec xp = shifted(1), xm = shifted(-1), xp2 = shifted(2), xm2 = shifted(-2);
      const Buffer bp = Buffer::from(DType::Float32, xp), bm = Buffer::from(DType::Float32, xm),
                   bp2 = Buffer::from(DType::Float32, xp2), bm2 = Buffer::from(DType::Float32, xm2);
      const RunResult rp = run(problem(bp, by, bw, red), false, cpu()), rm = run(problem(bm, by, bw, red), false, cpu()),
                      rp2 = run(problem(bp2, by, bw, red), false, cpu()),
                      rm2 = run(problem(bm2, by, bw, red), false, cpu());
      for (std::size_t i = 0; i < n; ++i) {
        const double d1 = xp[i] - xm[i], d2 = xp2[i] - xm2[i];
        const double f1 = (rp.loss[i] - rm.loss[i]) / d1, f2 = (rp2.loss[i] - rm2.loss[i]) / d2;
        const double noise = (ulp32(rp.loss[i]) + ulp32(rm.loss[i])) / d1 + (ulp32(rp2.loss[i]) + ulp32(rm2.loss[i])) / d2;
        check.add(base.grad_dense[i] / scale, f1, f2, noise,
                  "element " + std::to_string(i) + " x=" + std::to_string(x[i]) + " y=" + std::to_string(y[i]));
      }
    } else {
      // A reduced loss: one element at a time.
      for (std::size_t i = 0; i < n_reduced; ++i) {
        double f[2], noise = 0;
        for (int s = 1; s <= 2; ++s) {
          Vec xp = x, xm = x;
          xp[i] = static_cast<float>(x[i] + s * rel_step * std::max(1.0, std::fabs(x[i])));
          xm[i] = static_cast<float>(x[i] - s * rel_step * std::max(1.0, std::fabs(x[i])));
          const Buffer bp = Buffer::from(DType::Float32, xp), bm = Buffer::from(DType::Float32, xm);
          const RunResult rp = run(problem(bp, by, bw, red), false, cpu()), rm = run(problem(bm, by, bw, red), false, cpu());
          ASSERT_EQ(rp.status, Status::Success);
          const double d = xp[i] - xm[i];
          f[s - 1] = (rp.loss[0] - rm.loss[0]) / d;
          noise += (ulp32(rp.loss[0]) + ulp32(rm.loss[0])) / d;
        }
        check.add(base.grad_dense[i] / scale, f[0], f[1], noise, "element " + std::to_string(i));
      }
    }
    check.check(stats);
  }
  stats.expect_meaningful();
}

INSTANTIATE_TEST_SUITE_P(EveryLossAndOption, CpuFiniteDifferencesElementwise, ::testing::ValuesIn(elem_fd_cases()),
                         [](const ::testing::TestParamInfo<ElemFdCase>& i) {
                           return std::string(fl::loss_name(i.param.loss)) + "_" + ident(i.param.tag);
                         });

// ---- row-wise ---------------------------------------------------------------------------------------------

struct RowFdCase {
  Loss loss;
  bool soft = false;  // cross_entropy with a dense target
  bool weights = false;
  bool ignore_some = false;
  double eps = 0, zl = 0, cap = 0, temperature = 1;
  bool log_target = false;
  std::string tag;
  friend void PrintTo(const RowFdCase& c, std::ostream* os) { *os << c.tag; }
};

std::vector<RowFdCase> row_fd_cases() {
  std::vector<RowFdCase> v;
  auto ce = [&](std::string tag, bool w, double eps, double zl, double cap, bool ign) {
    RowFdCase c;
    c.loss = Loss::CrossEntropy;
    c.weights = w;
    c.eps = eps;
    c.zl = zl;
    c.cap = cap;
    c.ignore_some = ign;
    c.tag = std::move(tag);
    v.push_back(c);
  };
  ce("plain", false, 0, 0, 0, false);
  ce("class_weight", true, 0, 0, 0, false);
  ce("ignore_index", false, 0, 0, 0, true);
  ce("label_smoothing", false, 0.2, 0, 0, false);
  ce("label_smoothing_weighted", true, 0.2, 0, 0, true);
  ce("z_loss", false, 0, 0.05, 0, false);
  ce("softcap", false, 0, 0, 2.5, false);
  ce("everything", true, 0.1, 0.02, 3, true);
  for (auto [tag, w, eps, zl, cap] : {std::tuple<const char*, bool, double, double, double>{"soft_plain", false, 0, 0, 0},
                                      {"soft_weighted_smoothing", true, 0.25, 0, 0},
                                      {"soft_z_loss_softcap", false, 0, 0.05, 2.5},
                                      {"soft_everything", true, 0.1, 0.02, 3}}) {
    RowFdCase c;
    c.loss = Loss::CrossEntropy;
    c.soft = true;
    c.weights = w;
    c.eps = eps;
    c.zl = zl;
    c.cap = cap;
    c.tag = tag;
    v.push_back(c);
  }
  {
    RowFdCase c;
    c.loss = Loss::NLL;
    c.tag = "nll_plain";
    v.push_back(c);
    c.weights = true;
    c.ignore_some = true;
    c.tag = "nll_weighted_ignore";
    v.push_back(c);
  }
  {
    RowFdCase c;
    c.loss = Loss::KLDiv;
    c.tag = "kl_div_probabilities";
    v.push_back(c);
    c.log_target = true;
    c.tag = "kl_div_log_target";
    v.push_back(c);
  }
  for (double T : {1.0, 2.5, 0.5}) {
    RowFdCase c;
    c.loss = Loss::KLDivLogits;
    c.temperature = T;
    c.tag = "kl_div_logits_T" + std::to_string(T);
    v.push_back(c);
  }
  return v;
}

class CpuFiniteDifferencesRowwise : public ::testing::TestWithParam<RowFdCase> {};

TEST_P(CpuFiniteDifferencesRowwise, GradientMatchesLossForEveryReduction) {
  const RowFdCase& k = GetParam();
  FL_SEEDED_RNG(rng);
  const std::int64_t N = 4, C = 5;
  const std::size_t NC = static_cast<std::size_t>(N * C);
  Vec z, target;
  std::vector<std::int64_t> labels;
  std::vector<float> cw;
  const bool sparse = (k.loss == Loss::CrossEntropy && !k.soft) || k.loss == Loss::NLL;
  if (k.loss == Loss::NLL || k.loss == Loss::KLDiv)
    z = log_softmax_rows(rng.normal_vec(NC, 0, 1.5), N, C);
  else
    z = rng.normal_vec(NC, 0, 2);
  z = round_to(DType::Float32, z);
  if (sparse) {
    labels.resize(N);
    for (auto& l : labels) l = rng.integer(0, C - 1);
    if (k.ignore_some) labels[1] = -100;
  }
  if (k.soft) target = softmax_rows(rng.normal_vec(NC, 0, 1.5), N, C);
  if (k.loss == Loss::KLDiv)
    target = k.log_target ? log_softmax_rows(rng.normal_vec(NC, 0, 1.5), N, C)
                          : softmax_rows(rng.normal_vec(NC, 0, 1.5), N, C);
  if (k.loss == Loss::KLDivLogits) target = rng.normal_vec(NC, 0, 2);
  if (k.weights) {
    cw.resize(C);
    for (float& v : cw) v = static_cast<float>(rng.uniform(0.3, 2.5));
  }
  const Buffer bt = Buffer::from(DType::Float32, target), bl = Buffer::labels(DType::Int64, labels);
  const double scale = 0.625;

  // The reductions use the first 2 rows only (see the elementwise test for why).
  const std::int64_t N_reduced = 2;
  auto problem = [&](const Buffer& bz, Reduction red) {
    fl::RowwiseProblem p;
    p.loss = k.loss;
    p.rows = red == Reduction::None ? N : N_reduced;
    p.classes = C;
    p.input = bz.data();
    p.labels = labels.empty() ? nullptr : bl.data();
    p.target = target.empty() ? nullptr : bt.data();
    p.class_weight = cw.empty() ? nullptr : cw.data();
    p.reduction = red;
    p.grad_scale = scale;
    p.params.label_smoothing = k.eps;
    p.params.z_loss = k.zl;
    p.params.softcap = k.cap;
    p.params.log_target = k.log_target;
    p.params.temperature = k.temperature;
    return p;
  };
  auto step = [&](std::size_t i, int s) {
    return static_cast<float>(z[i] + s * 1e-2 * std::max(1.0, std::fabs(z[i])));
  };

  std::vector<Reduction> reds = {Reduction::None, Reduction::Sum, Reduction::Mean};
  if (k.loss == Loss::KLDiv || k.loss == Loss::KLDivLogits) reds.push_back(Reduction::BatchMean);
  Sharpness stats;
  for (Reduction red : reds) {
    SCOPED_TRACE(k.tag + " " + red_name(red));
    const Buffer bz = Buffer::from(DType::Float32, z);
    const RunResult base = run(problem(bz, red), true, false, cpu());
    ASSERT_EQ(base.status, Status::Success) << fl::status_string(base.status);
    FdChecker check;
    if (red == Reduction::None) {
      // Rows (kl_div: elements) are independent: shift column c of every row at once.
      for (std::int64_t c = 0; c < C; ++c) {
        Vec zs[4];
        RunResult rs[4];
        const int steps[4] = {1, -1, 2, -2};
        for (int j = 0; j < 4; ++j) {
          zs[j] = z;
          for (std::int64_t n = 0; n < N; ++n) zs[j][n * C + c] = step(n * C + c, steps[j]);
          const Buffer b = Buffer::from(DType::Float32, zs[j]);
          rs[j] = run(problem(b, red), false, false, cpu());
          ASSERT_EQ(rs[j].status, Status::Success);
        }
        for (std::int64_t n = 0; n < N; ++n) {
          const std::size_t i = n * C + c;
          const std::size_t li = k.loss == Loss::KLDiv ? i : static_cast<std::size_t>(n);
          const double d1 = zs[0][i] - zs[1][i], d2 = zs[2][i] - zs[3][i];
          const double f1 = (rs[0].loss[li] - rs[1].loss[li]) / d1, f2 = (rs[2].loss[li] - rs[3].loss[li]) / d2;
          const double noise = (ulp32(rs[0].loss[li]) + ulp32(rs[1].loss[li])) / d1 +
                               (ulp32(rs[2].loss[li]) + ulp32(rs[3].loss[li])) / d2;
          check.add(base.grad_dense[i] / scale, f1, f2, noise,
                    "row " + std::to_string(n) + " class " + std::to_string(c));
        }
      }
    } else {
      for (std::size_t i = 0; i < static_cast<std::size_t>(N_reduced * C); ++i) {
        double f[2], noise = 0;
        for (int s = 1; s <= 2; ++s) {
          Vec zp = z, zm = z;
          zp[i] = step(i, s);
          zm[i] = step(i, -s);
          const Buffer bp = Buffer::from(DType::Float32, zp), bm = Buffer::from(DType::Float32, zm);
          const RunResult rp = run(problem(bp, red), false, false, cpu()), rm = run(problem(bm, red), false, false, cpu());
          ASSERT_EQ(rp.status, Status::Success);
          const double d = zp[i] - zm[i];
          f[s - 1] = (rp.loss[0] - rm.loss[0]) / d;
          noise += (ulp32(rp.loss[0]) + ulp32(rm.loss[0])) / d;
        }
        check.add(base.grad_dense[i] / scale, f[0], f[1], noise,
                  "row " + std::to_string(i / C) + " class " + std::to_string(i % C));
      }
    }
    check.check(stats);
  }
  stats.expect_meaningful();
}

INSTANTIATE_TEST_SUITE_P(EveryLossAndOption, CpuFiniteDifferencesRowwise, ::testing::ValuesIn(row_fd_cases()),
                         [](const ::testing::TestParamInfo<RowFdCase>& i) {
                           return ident(i.param.tag);
                         });

}  // namespace
