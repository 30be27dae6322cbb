// The GPU tests' one comparison rule: a result against its reference (the CPU path's, or the float64
// oracle's rounded once to the output's dtype) under the tolerance of `fusedloss validate`, defined in
// cli/compare.hpp and nowhere else. These helpers only turn the tests' host copies into HostTensors and
// the verdict into a gtest assertion that names the worst element.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "cli/compare.hpp"

namespace validate_tolerance {

using fusedloss::DType;
using fusedloss_cli::CompareKind;
using fusedloss_cli::HostTensor;

/// float32 values (a loss or lse output) as a tensor.
inline HostTensor f32_tensor(const std::vector<float>& v) {
  HostTensor t(DType::Float32, {static_cast<std::int64_t>(v.size())});
  if (!v.empty()) std::memcpy(t.bytes.data(), v.data(), v.size() * 4);
  return t;
}

/// `count` elements of `dtype` exactly as stored at `bytes` (a gradient as a path wrote it).
inline HostTensor raw_tensor(DType dtype, const void* bytes, std::int64_t count) {
  HostTensor t(dtype, {count});
  if (count > 0) std::memcpy(t.bytes.data(), bytes, t.bytes.size());
  return t;
}

/// Exact values (the oracle's) rounded once into `dtype`: what a correctly rounded reference holds.
inline HostTensor rounded_tensor(DType dtype, const std::vector<double>& v) {
  HostTensor t(dtype, {static_cast<std::int64_t>(v.size())});
  for (std::size_t i = 0; i < v.size(); ++i) fusedloss_cli::set_value(t, static_cast<std::int64_t>(i), v[i]);
  return t;
}

/// `got` against `ref` under cli/compare.hpp's rule for a problem of `problem_dtype`. term_scale: T of
/// that rule (gradients of row-wise losses; fusedloss_cli::rowwise_term_scale).
inline ::testing::AssertionResult within_tolerance(const HostTensor& got, const HostTensor& ref, CompareKind kind,
                                                   DType problem_dtype, double term_scale = 0.0,
                                                   const std::string& what = "") {
  const std::string name = what.empty() ? (kind == CompareKind::Loss ? "loss" : "grad") : what;
  if (got.numel() != ref.numel() || got.dtype != ref.dtype)
    return ::testing::AssertionFailure() << name << ": " << got.numel() << " values vs " << ref.numel()
                                         << " expected (or dtypes differ)";
  const fusedloss_cli::Tolerance tol = fusedloss_cli::tolerance_for(problem_dtype);
  const fusedloss_cli::Comparison c = fusedloss_cli::compare(got, ref, kind, tol, term_scale);
  if (c.pass()) return ::testing::AssertionSuccess();
  const std::string rule =
      fusedloss_cli::tolerance_text(tol, kind == CompareKind::Grad ? "grad" : (name == "lse" ? "lse" : "loss"), got.dtype);
  return ::testing::AssertionFailure() << name << ": " << c.failures << " of " << c.count << " outside " << rule
                                       << " (T = " << term_scale << "); worst [" << c.worst << "] got "
                                       << c.worst_got << ", expected " << c.worst_ref << "; max abs " << c.max_abs
                                       << ", max rel " << c.max_rel << ", max ulp " << c.max_ulp;
}

}  // namespace validate_tolerance
