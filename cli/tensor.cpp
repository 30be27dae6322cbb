#include "cli/tensor.hpp"

#include <cmath>
#include <cstring>
#include <limits>

#include "cli/common.hpp"
#include "fusedloss/float16.hpp"

namespace fusedloss_cli {

using fusedloss::DType;

HostTensor::HostTensor(DType d, std::vector<std::int64_t> s) : dtype(d), shape(std::move(s)) {
  bytes.assign(static_cast<std::size_t>(numel()) * fusedloss::dtype_size(d), 0);
}

std::int64_t HostTensor::numel() const {
  std::int64_t n = 1;
  for (std::int64_t d : shape) n *= d;
  return n;
}

float round_to_float(double v) { return static_cast<float>(v); }

namespace {

/// double → float rounding to odd: truncate, and set the last bit when anything was dropped.
/// Rounding that result to a format with at least two fewer significand bits gives the same
/// answer as rounding the double directly, so double → half/bfloat16 is rounded only once.
float round_to_odd_float(double v) {
  if (std::isnan(v)) return static_cast<float>(v);
  float f = static_cast<float>(v);  // round to nearest
  if (std::isinf(f) && !std::isinf(v)) f = std::copysign(std::numeric_limits<float>::max(), static_cast<float>(v));
  if (static_cast<double>(f) == v) return f;
  if (std::fabs(static_cast<double>(f)) > std::fabs(v)) f = std::nextafter(f, 0.0f);  // truncate toward zero
  std::uint32_t bits;
  std::memcpy(&bits, &f, sizeof bits);
  bits |= 1u;
  std::memcpy(&f, &bits, sizeof bits);
  return f;
}

}  // namespace

std::uint16_t round_to_half_bits(double v) { return fusedloss::to_half(round_to_odd_float(v)).bits; }
std::uint16_t round_to_bfloat16_bits(double v) { return fusedloss::to_bfloat16(round_to_odd_float(v)).bits; }

double get_value(const HostTensor& t, std::int64_t i) {
  const unsigned char* p = t.bytes.data();
  switch (t.dtype) {
    case DType::Float32: {
      float v;
      std::memcpy(&v, p + 4 * i, 4);
      return v;
    }
    case DType::Float16: {
      fusedloss::half_t v;
      std::memcpy(&v.bits, p + 2 * i, 2);
      return fusedloss::to_float(v);
    }
    case DType::BFloat16: {
      fusedloss::bfloat16_t v;
      std::memcpy(&v.bits, p + 2 * i, 2);
      return fusedloss::to_float(v);
    }
    case DType::Int32: {
      std::int32_t v;
      std::memcpy(&v, p + 4 * i, 4);
      return v;
    }
    case DType::Int64: {
      std::int64_t v;
      std::memcpy(&v, p + 8 * i, 8);
      return static_cast<double>(v);
    }
  }
  return 0.0;
}

void set_value(HostTensor& t, std::int64_t i, double v) {
  unsigned char* p = t.bytes.data();
  switch (t.dtype) {
    case DType::Float32: {
      const float f = round_to_float(v);
      std::memcpy(p + 4 * i, &f, 4);
      return;
    }
    case DType::Float16: {
      const std::uint16_t b = round_to_half_bits(v);
      std::memcpy(p + 2 * i, &b, 2);
      return;
    }
    case DType::BFloat16: {
      const std::uint16_t b = round_to_bfloat16_bits(v);
      std::memcpy(p + 2 * i, &b, 2);
      return;
    }
    case DType::Int32: {
      const std::int32_t x = static_cast<std::int32_t>(v);
      std::memcpy(p + 4 * i, &x, 4);
      return;
    }
    case DType::Int64: {
      const std::int64_t x = static_cast<std::int64_t>(v);
      std::memcpy(p + 8 * i, &x, 8);
      return;
    }
  }
}

namespace {

double npy_value(const NpyArray& a, std::int64_t i) {
  const unsigned char* p = a.data.data() + static_cast<std::size_t>(i) * npy_itemsize(a.type);
  switch (a.type) {
    case NpyType::F2: {
      fusedloss::half_t h;
      std::memcpy(&h.bits, p, 2);
      return fusedloss::to_float(h);
    }
    case NpyType::F4: {
      float f;
      std::memcpy(&f, p, 4);
      return f;
    }
    case NpyType::F8: {
      double d;
      std::memcpy(&d, p, 8);
      return d;
    }
    case NpyType::I4: {
      std::int32_t v;
      std::memcpy(&v, p, 4);
      return v;
    }
    case NpyType::I8: {
      std::int64_t v;
      std::memcpy(&v, p, 8);
      return static_cast<double>(v);
    }
  }
  return 0.0;
}

}  // namespace

HostTensor to_values(const NpyArray& array, DType target, const std::string& what) {
  if (target != DType::Float32 && target != DType::Float16 && target != DType::BFloat16)
    throw UsageError(what + ": internal error: not a value dtype");
  HostTensor t(target, array.shape);
  const std::int64_t n = t.numel();
  // Fast paths that are plain copies.
  if ((array.type == NpyType::F4 && target == DType::Float32) || (array.type == NpyType::F2 && target == DType::Float16)) {
    if (n > 0) std::memcpy(t.bytes.data(), array.data.data(), t.bytes.size());
    return t;
  }
  for (std::int64_t i = 0; i < n; ++i) set_value(t, i, npy_value(array, i));
  return t;
}

HostTensor take_values(NpyArray& array, DType target, const std::string& what) {
  if ((array.type == NpyType::F4 && target == DType::Float32) || (array.type == NpyType::F2 && target == DType::Float16)) {
    HostTensor t;
    t.dtype = target;
    t.shape = array.shape;
    t.bytes = std::move(array.data);
    array.data.clear();
    return t;
  }
  return to_values(array, target, what);
}

HostTensor to_labels(const NpyArray& array, const std::string& what) {
  if (array.type != NpyType::I4 && array.type != NpyType::I8)
    throw UsageError(what + " must be an integer array (int32 or int64), got " + npy_descr(array.type));
  HostTensor t(array.type == NpyType::I4 ? DType::Int32 : DType::Int64, array.shape);
  if (!t.bytes.empty()) std::memcpy(t.bytes.data(), array.data.data(), t.bytes.size());
  return t;
}

NpyArray to_npy(const HostTensor& t) {
  NpyArray a;
  a.shape = t.shape;
  const std::int64_t n = t.numel();
  switch (t.dtype) {
    case DType::Float32: a.type = NpyType::F4; break;
    case DType::Float16: a.type = NpyType::F2; break;
    case DType::Int32: a.type = NpyType::I4; break;
    case DType::Int64: a.type = NpyType::I8; break;
    case DType::BFloat16: {
      a.type = NpyType::F4;
      a.data.resize(static_cast<std::size_t>(n) * 4);
      for (std::int64_t i = 0; i < n; ++i) {
        const float f = static_cast<float>(get_value(t, i));
        std::memcpy(a.data.data() + 4 * i, &f, 4);
      }
      return a;
    }
  }
  a.data = t.bytes;
  return a;
}

NpyArray to_npy(HostTensor&& t) {
  if (t.dtype == DType::BFloat16) return to_npy(static_cast<const HostTensor&>(t));
  NpyArray a;
  a.shape = t.shape;
  a.type = t.dtype == DType::Float32 ? NpyType::F4
           : t.dtype == DType::Float16 ? NpyType::F2
           : t.dtype == DType::Int32   ? NpyType::I4
                                       : NpyType::I8;
  a.data = std::move(t.bytes);
  t.bytes.clear();
  return a;
}

DType default_value_dtype(NpyType type) { return type == NpyType::F2 ? DType::Float16 : DType::Float32; }

DType parse_value_dtype(const std::string& raw) {
  const std::string text = lower(raw);
  if (text == "f32" || text == "fp32" || text == "float32" || text == "float") return DType::Float32;
  if (text == "f16" || text == "fp16" || text == "float16" || text == "half") return DType::Float16;
  if (text == "bf16" || text == "bfloat16") return DType::BFloat16;
  throw UsageError("--dtype: unknown dtype '" + raw + "' (use f32, f16 or bf16)");
}

}  // namespace fusedloss_cli
