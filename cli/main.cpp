// fusedloss — the command-line program: eval, validate, traffic and bench.
//
// Exit status: 0 success, 1 validate found a difference outside the tolerance, 2 a user error
// (bad option, unreadable or malformed file, shape mismatch; one line on stderr, nothing
// written), 3 a GPU is needed and none is usable, 4 a runtime failure (CUDA error, out of memory).
#include <CLI/CLI.hpp>
#include <cstdio>
#include <exception>
#include <new>
#include <string>

#include "cli/commands.hpp"
#include "cli/common.hpp"
#include "cli/npy.hpp"

#ifndef FUSEDLOSS_CLI_VERSION
#define FUSEDLOSS_CLI_VERSION "unknown"
#endif

namespace {

using namespace fusedloss_cli;

const char* kLossHelp =
    "loss name: mse, mae (l1), rmse, msle, huber, smooth_l1, pseudo_huber, log_cosh, hinge, squared_hinge, bce, "
    "bce_with_logits, cross_entropy, nll, kl_div, kl_div_logits, linear_cross_entropy (eval, validate, bench)";
const char* kParamHelp =
    "loss option KEY=VALUE (repeatable): delta, beta, pos_weight, ignore_index, label_smoothing, z_loss, softcap, "
    "log_target (true/false), temperature, grad_scale";

void add_loss_options(CLI::App* cmd, CommonLossOptions& o, bool inputs_required) {
  cmd->add_option("--loss,-l", o.loss, kLossHelp)->required();
  auto* input = cmd->add_option("--input,-i", o.files.input,
                                "prediction / logits .npy (row-wise losses: 2-D [N, C])");
  auto* target = cmd->add_option("--target,-t", o.files.target,
                                 "target .npy: same shape as the input; integer labels [N] for cross_entropy/nll");
  if (inputs_required) {
    input->required();
    target->required();
  }
  cmd->add_option("--weight,-w", o.files.weight,
                  "per-element weights (elementwise losses) or class weights [C] (cross_entropy, nll)");
  cmd->add_option("--pos-weight", o.files.pos_weight, "bce_with_logits: per-column pos_weight [C] (last input dim)");
  cmd->add_option("--linear-weight", o.files.linear_weight,
                  "linear_cross_entropy: the head's weight .npy [V, H] (--input is hidden [N, H], --target labels [N])");
  cmd->add_option("--bias", o.files.bias, "linear_cross_entropy: the head's bias .npy [V]");
  cmd->add_option("--reduction,-r", o.reduction, "none, mean, sum or batchmean (default: the loss's default)");
  cmd->add_option("--dtype", o.dtype,
                  "compute dtype f32, f16 or bf16 (default: the input file's: f2 -> f16, else f32); float data is "
                  "rounded once to it; a bf16 gradient is written as float32 (exact: NumPy has no bfloat16)");
  cmd->add_option("--param,-p", o.params, kParamHelp);
  cmd->add_option("--threads", o.threads, "CPU path threads (0 = all cores)");
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"fusedloss: fused loss + gradient kernels (CUDA) with a CPU reference path.\n"
               "Exit status: 0 ok, 1 validate FAIL, 2 usage/input error, 3 no GPU, 4 runtime failure.",
               "fusedloss"};
  app.set_version_flag("--version", FUSEDLOSS_CLI_VERSION);
  app.require_subcommand(1);

  EvalOptions eval_options;
  CLI::App* eval = app.add_subcommand(
      "eval", "compute a loss and its gradient from .npy files; writes DIR/loss.npy, DIR/grad.npy (, DIR/lse.npy)");
  add_loss_options(eval, eval_options, true);
  eval->add_option("--out,-o", eval_options.out, "output directory (created if missing)")->required();
  eval->add_option("--device,-d", eval_options.device, "cpu or cuda (default: cuda when a GPU is usable, else cpu)");
  eval->add_flag("--no-grad", eval_options.no_grad, "compute the loss only (no grad.npy)");
  eval->add_flag("--allow-invalid", eval_options.allow_invalid,
                 "write the results even when data values are invalid (bad labels / probabilities)");
  eval->add_flag("--quiet,-q", eval_options.quiet, "print nothing on success");

  ValidateOptions validate_options;
  CLI::App* validate = app.add_subcommand(
      "validate", "run the CUDA path and the CPU reference on the same data and compare them (needs a GPU)");
  add_loss_options(validate, validate_options, false);
  validate->add_option("--shape", validate_options.shape,
                       "shape of generated data when --input is absent: N (elementwise), NxC (row-wise) or NxHxV (linear_cross_entropy)");
  validate->add_option("--seed", validate_options.seed, "seed of the generated data");
  validate->add_flag("--soft", validate_options.soft, "generated cross_entropy data uses soft targets");
  validate->add_flag("--weighted", validate_options.weighted, "generated data has per-element / class weights");

  TrafficOptions traffic_options;
  CLI::App* traffic = app.add_subcommand(
      "traffic", "memory traffic of one call per kernel: bytes vs the minimum, sector efficiency, a bandwidth model "
                 "(needs the emulated build)");
  add_loss_options(traffic, traffic_options, false);
  traffic->add_option("--shape", traffic_options.shape,
                      "shape of generated data when --input is absent: N (elementwise) or NxC (row-wise)");
  traffic->add_option("--seed", traffic_options.seed, "seed of the generated data");
  traffic->add_flag("--soft", traffic_options.soft, "generated cross_entropy data uses soft targets");
  traffic->add_flag("--weighted", traffic_options.weighted, "generated data has per-element / class weights");
  traffic->add_option("--sample-rows", traffic_options.sample_rows,
                      "row-wise: rows emulated, the traffic scaled to N (default 16)");
  traffic->add_option("--bandwidth", traffic_options.bandwidth_tbs, "the model's bandwidth in TB/s (default 3.0)");
  traffic->add_flag("--json", traffic_options.json, "print JSON instead of the table");

  BenchOptions bench_options;
  CLI::App* bench = app.add_subcommand(
      "bench", "time the fused loss+gradient against the copy bandwidth and an unfused baseline");
  bench->add_option("--loss,-l", bench_options.losses,
                    "comma list of losses or 'all' (default: mse,huber,bce_with_logits,cross_entropy)");
  bench->add_option("--dtype", bench_options.dtypes, "comma list of f32, f16, bf16 (default: f32,bf16)");
  bench->add_option("--sizes", bench_options.sizes,
                    "elementwise sizes, comma list: 1048576, 2^20, 1M (default GPU 2^20..2^28, CPU 2^16..2^22)");
  bench->add_option("--shapes", bench_options.shapes,
                    "row-wise N x C shapes, comma list, e.g. 16384x128256 (default GPU: 32768x4096, 32768x32768, "
                    "16384x128256, 8192x262144; CPU: 256x4096, 64x32000)");
  bench->add_option("--device,-d", bench_options.device, "cpu or cuda (default: cuda when a GPU is usable, else cpu)");
  bench->add_option("--reduction,-r", bench_options.reduction, "reduction (default: each loss's default)");
  bench->add_option("--json", bench_options.json, "write the results as JSON to this file");
  bench->add_option("--commit", bench_options.commit,
                    "commit id recorded in the JSON (default: $FUSEDLOSS_COMMIT, $GIT_COMMIT or $GITHUB_SHA)");
  bench->add_option("--repeats", bench_options.repeats, "timed calls per measurement (default GPU 50, CPU 15)");
  bench->add_option("--warmup", bench_options.warmup, "untimed calls first (default GPU 5, CPU 1)");
  bench->add_option("--max-time", bench_options.max_case_seconds,
                    "stop sampling a measurement after this many seconds, once 3 samples exist (default GPU 2, CPU 0.4)");
  bench->add_option("--threads", bench_options.threads, "CPU threads for the fused call, copy and baseline (0 = all)");
  bench->add_flag("--weighted", bench_options.weighted, "elementwise losses with per-element weights");
  bench->add_flag("--inplace", bench_options.inplace, "write the gradient over the input");
  bench->add_flag("--soft", bench_options.soft, "cross_entropy with soft (dense) targets");
  bench->add_flag("--no-baseline", bench_options.no_baseline, "skip the unfused baseline");
  bench->add_flag("--no-peers", bench_options.no_peers,
                  "CPU: skip the PyTorch eager column (bench/peers/torch_peers.py, run when python3 has torch)");

  std::string command_line;
  for (int i = 0; i < argc; ++i) command_line += (i ? " " : "") + quote_arg(argv[i]);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help, --version
    std::string where = "fusedloss";
    for (const CLI::App* sub : app.get_subcommands()) where += std::string(" ") + sub->get_name();
    std::string message = e.what();
    if (dynamic_cast<const CLI::RequiredError*>(&e) != nullptr && app.get_subcommands().empty()) {
      message = argc > 1 && argv[1][0] != '-'
                    ? "unknown command '" + std::string(argv[1]) + "' (use eval, validate, traffic or bench; see fusedloss --help)"
                    : "a command is required: eval, validate, traffic or bench (see fusedloss --help)";
    }
    std::fprintf(stderr, "%s: error: %s\n", where.c_str(), one_line(message).c_str());
    return kExitUsage;
  }

  const std::string name = app.get_subcommands().front()->get_name();
  const std::string prefix = "fusedloss " + name;
  try {
    if (name == "eval") return run_eval(eval_options);
    if (name == "validate") return run_validate(validate_options);
    if (name == "traffic") return run_traffic(traffic_options);
    return run_bench(bench_options, command_line);
  } catch (const UsageError& e) {
    std::fprintf(stderr, "%s: error: %s\n", prefix.c_str(), one_line(e.what()).c_str());
    return kExitUsage;
  } catch (const NpyError& e) {
    std::fprintf(stderr, "%s: error: %s\n", prefix.c_str(), one_line(e.what()).c_str());
    return kExitUsage;
  } catch (const NoGpuError& e) {
    std::fprintf(stderr, "%s: %s; %s\n", prefix.c_str(), one_line(e.what()).c_str(), no_gpu_advice(name).c_str());
    return kExitNoGpu;
  } catch (const RuntimeFailure& e) {
    std::fprintf(stderr, "%s: failed: %s\n", prefix.c_str(), one_line(e.what()).c_str());
    return kExitRuntime;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "%s: failed: out of host memory\n", prefix.c_str());
    return kExitRuntime;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: failed: %s\n", prefix.c_str(), one_line(e.what()).c_str());
    return kExitRuntime;
  }
}
