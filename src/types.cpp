// Names and sizes of the public enums.
#include <cstring>

#include "fusedloss/types.hpp"

namespace fusedloss {

const char* status_string(Status status) noexcept {
  switch (status) {
    case Status::Success: return "success";
    case Status::InvalidArgument: return "invalid argument";
    case Status::InvalidValue: return "invalid data value (bad label or probability)";
    case Status::WorkspaceTooSmall: return "workspace too small";
    case Status::NotSupported: return "not supported (backend unavailable)";
    case Status::CudaError: return "CUDA runtime error";
    case Status::OutOfMemory: return "out of memory";
  }
  return "unknown status";
}

std::size_t dtype_size(DType dtype) noexcept {
  switch (dtype) {
    case DType::Float32: return 4;
    case DType::Float16: return 2;
    case DType::BFloat16: return 2;
    case DType::Int32: return 4;
    case DType::Int64: return 8;
  }
  return 0;
}

const char* dtype_name(DType dtype) noexcept {
  switch (dtype) {
    case DType::Float32: return "f32";
    case DType::Float16: return "f16";
    case DType::BFloat16: return "bf16";
    case DType::Int32: return "i32";
    case DType::Int64: return "i64";
  }
  return "unknown";
}

namespace {
struct LossName {
  const char* name;
  Loss loss;
};
// Canonical names first: loss_name() returns the first match.
constexpr LossName kLossNames[] = {
    {"mse", Loss::MSE},
    {"mae", Loss::MAE},
    {"rmse", Loss::RMSE},
    {"msle", Loss::MSLE},
    {"huber", Loss::Huber},
    {"smooth_l1", Loss::SmoothL1},
    {"pseudo_huber", Loss::PseudoHuber},
    {"log_cosh", Loss::LogCosh},
    {"hinge", Loss::Hinge},
    {"squared_hinge", Loss::SquaredHinge},
    {"bce", Loss::BCE},
    {"bce_with_logits", Loss::BCEWithLogits},
    {"cross_entropy", Loss::CrossEntropy},
    {"nll", Loss::NLL},
    {"kl_div", Loss::KLDiv},
    {"kl_div_logits", Loss::KLDivLogits},
    {"l1", Loss::L1},
};
}  // namespace

const char* loss_name(Loss loss) noexcept {
  for (const LossName& entry : kLossNames)
    if (entry.loss == loss) return entry.name;
  return "unknown";
}

bool parse_loss(const char* name, Loss* out) noexcept {
  if (name == nullptr || out == nullptr) return false;
  for (const LossName& entry : kLossNames) {
    if (std::strcmp(entry.name, name) == 0) {
      *out = entry.loss;
      return true;
    }
  }
  return false;
}

bool is_elementwise(Loss loss) noexcept {
  const int v = static_cast<int>(loss);
  return v >= static_cast<int>(Loss::MSE) && v <= static_cast<int>(Loss::BCEWithLogits);
}

const char* backend_name(Backend backend) noexcept {
  switch (backend) {
    case Backend::Auto: return "auto";
    case Backend::CPU: return "cpu";
    case Backend::CUDA: return "cuda";
  }
  return "unknown";
}

}  // namespace fusedloss
