// LibTorch side of ocp_deploy::Model (its Impl: model_impl.hpp). One of the
// core's two LibTorch translation units, with domain.cpp. The one place that
// knows TorchScript artifacts from AOTInductor packages.
#include "ocp_deploy/model.hpp"

#include <caffe2/serialize/inline_container.h>
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <fstream>
#include <sstream>
#include <unordered_map>

#include "model_impl.hpp"
#include "ocp_deploy/elements.hpp"

namespace ocp_deploy {
namespace {

// Zip members (relative to the archive's top folder) that tell the formats
// apart: every torch.package-style .pt2 has "archive_format" and keeps
// AOTInductor's compiled model under data/aotinductor/; TorchScript
// archives have constants.pkl next to data.pkl and their code/ folder.
constexpr const char* kPt2FormatMember = "archive_format";
constexpr const char* kAotiMemberPrefix = "data/aotinductor/";
constexpr const char* kTorchScriptMember = "constants.pkl";
constexpr const char* kTorchScriptCodePrefix = "code/";
constexpr const char* kTorchSavePickle = "data.pkl";
// The AOTInductor model name inside a package (export-model writes one model).
constexpr const char* kPackageModelName = "model";
// The package program's inputs, in order (metadata "inputs").
const std::vector<std::string> kProgramInputs = {"positions", "atomic_numbers", "cell", "pbc", "tags", "natoms"};
// Devices an AOTInductor package can be compiled for (metadata "compiled_for").
constexpr const char* kCompiledForCpu = "cpu";
constexpr const char* kCompiledForCuda = "cuda";

double determinant(const std::array<double, 9>& m) {
  return m[0] * (m[4] * m[8] - m[5] * m[7]) - m[1] * (m[3] * m[8] - m[5] * m[6]) +
         m[2] * (m[3] * m[7] - m[4] * m[6]);
}

bool starts_with(const std::string& text, const char* prefix) { return text.rfind(prefix, 0) == 0; }

// Exit status of a run ended by an error inside a package's compiled code.
constexpr int kFatalExitStatus = 1;
std::string fatal_error_prefix = "ocp_deploy: error: ";  // set_fatal_error_prefix()

// std::terminate handler while a package runs: the error that escaped the
// compiled code's parallel region, as one line, then exit.
[[noreturn]] void package_failed() {
  std::string reason = "unknown error";
  if (std::exception_ptr error = std::current_exception()) {
    try {
      std::rethrow_exception(error);
    } catch (const c10::Error& e) {
      reason = detail::one_line(e.what_without_backtrace());
    } catch (const std::exception& e) {
      reason = detail::one_line(e.what());
    } catch (...) {
    }
  }
  std::fprintf(stderr, "%sAOTInductor package failed inside its compiled code: %s\n", fatal_error_prefix.c_str(),
               reason.c_str());
  std::fflush(stdout);
  std::fflush(stderr);
  std::_Exit(kFatalExitStatus);
}

// Installs package_failed() for the lifetime of a package call.
class TerminateGuard {
 public:
  TerminateGuard() : previous_(std::set_terminate(&package_failed)) {}
  ~TerminateGuard() { std::set_terminate(previous_); }
  TerminateGuard(const TerminateGuard&) = delete;
  TerminateGuard& operator=(const TerminateGuard&) = delete;

 private:
  std::terminate_handler previous_;
};

// TorchScript or AOTInductor package, from the zip's member names (read by
// LibTorch's own zip reader; nothing is loaded).
ArtifactFormat sniff_format(const std::string& path) {
  std::vector<std::string> records;
  try {
    caffe2::serialize::PyTorchStreamReader reader(path);
    records = reader.getAllRecords();
  } catch (const c10::Error&) {
    throw Error("'" + path + "' is not an ocp-deploy artifact: not a zip archive (a TorchScript artifact .pt "
                "or an AOTInductor package .pt2 from export-model is one)");
  }
  bool torchscript = false, pickle = false;
  for (const std::string& name : records) {
    if (name == kPt2FormatMember || starts_with(name, kAotiMemberPrefix)) return ArtifactFormat::AOTInductor;
    if (name == kTorchScriptMember || starts_with(name, kTorchScriptCodePrefix)) torchscript = true;
    if (name == kTorchSavePickle) pickle = true;
  }
  if (torchscript) return ArtifactFormat::TorchScript;
  if (pickle)
    throw Error("'" + path + "' is a torch.save file (a checkpoint?), not an artifact: export it with "
                "export-model CKPT --format torchscript (or --format aoti)");
  throw Error("'" + path + "' is a zip archive that is neither a TorchScript artifact (.pt) nor an "
              "AOTInductor package (.pt2)");
}

}  // namespace

void Model::Impl::load_torchscript(const std::string& path) {
  Impl& impl = *this;
  torch::jit::ExtraFilesMap extra{{kMetadataFile, ""}};
  try {
    impl.module = torch::jit::load(path, impl.device, extra);
  } catch (const c10::Error& e) {
    throw Error("'" + path + "' is not a loadable TorchScript file: " +
                detail::one_line(e.what_without_backtrace()));
  }
  impl.module.eval();
  impl.metadata = parse_metadata(extra[kMetadataFile]);
  impl.has_domain = impl.module.find_method("domain_layout").has_value();
}

// The package's metadata record is checked (ours, same format, compiled for
// this run's device, the structures-in program) before its compiled code is
// loaded: a CUDA package's library cannot even be opened on a CPU-only host.
void Model::Impl::load_package(const std::string& path) {
  Impl& impl = *this;
  using torch::inductor::AOTIModelPackageLoader;
  std::unordered_map<std::string, std::string> raw;
  try {
    raw = AOTIModelPackageLoader::load_metadata_from_package(path, kPackageModelName);
  } catch (const c10::Error& e) {
    throw Error("'" + path + "' is not a readable AOTInductor package: " +
                detail::one_line(e.what_without_backtrace()));
  }
  const auto record = raw.find(kPackageMetadataKey);
  if (record == raw.end() || record->second.empty())
    throw Error("'" + path + "': AOTInductor package has no " + kPackageMetadataKey +
                "; not exported by ocp-deploy");
  impl.metadata = parse_metadata(record->second);
  const Metadata& meta = impl.metadata;
  const std::string running_on = impl.device.is_cuda() ? kCompiledForCuda : kCompiledForCpu;
  if (meta.compiled_for != running_on)
    throw Error("'" + path + "' was compiled for " + (meta.compiled_for.empty() ? "?" : meta.compiled_for) +
                " and runs only there, this run is on " + running_on + ": export it again with "
                "export-model CKPT --format aoti --device " + running_on);
  if (meta.inputs != kProgramInputs)
    throw Error("'" + path + "': this AOTInductor package takes prepared graph tensors, not the structures; "
                "export it again with the current export-model (the program builds its neighbour graph itself)");
  impl.path = path;
  impl.has_domain = !meta.domain_programs.empty();
  try {
    impl.package = std::make_shared<AOTIModelPackageLoader>(
        path, kPackageModelName, /*run_single_threaded=*/false, /*num_runners=*/1,
        static_cast<c10::DeviceIndex>(impl.device.is_cuda() ? impl.device.index() : -1));
  } catch (const c10::Error& e) {
    throw Error("'" + path + "' is not a loadable AOTInductor package (" +
                detail::one_line(e.what_without_backtrace()) + "); export it again with the installed torch");
  }
}

void Model::Impl::load_program(const std::string& name) {
  Impl& impl = *this;
  if (impl.programs.count(name)) return;
  const auto& listed = impl.metadata.domain_programs;
  if (std::find(listed.begin(), listed.end(), name) == listed.end())
    throw Error("'" + impl.path + "' has no program " + name + " (its metadata lists the programs it holds)");
  try {
    impl.programs.emplace(name, std::make_shared<torch::inductor::AOTIModelPackageLoader>(
                                    impl.path, name, /*run_single_threaded=*/false, /*num_runners=*/1,
                                    static_cast<c10::DeviceIndex>(impl.device.is_cuda() ? impl.device.index() : -1)));
  } catch (const c10::Error& e) {
    throw Error("'" + impl.path + "': cannot load its program " + name + " (" +
                detail::one_line(e.what_without_backtrace()) + "); export it again with the installed torch");
  }
}

std::vector<at::Tensor> Model::Impl::run_program(const std::string& name, const std::vector<at::Tensor>& inputs) {
  load_program(name);
  try {
    TerminateGuard guard;
    return programs.at(name)->run(inputs);
  } catch (const c10::Error& e) {
    throw Error("AOTInductor program " + name + " failed: " + detail::one_line(e.what_without_backtrace()));
  }
}

// One structure through the package's batched program (B = 1).
Result Model::Impl::run_package(const Frame& frame) {
  Impl& impl = *this;
  const auto n = static_cast<int64_t>(frame.size());
  const auto float_options = at::TensorOptions().dtype(impl.dtype).device(impl.device);
  std::vector<double> cell_values(frame.cell.begin(), frame.cell.end());
  bool pbc_values[3] = {frame.pbc[0], frame.pbc[1], frame.pbc[2]};
  std::vector<std::int64_t> natoms = {n};
  // Input order: kProgramInputs.
  std::vector<at::Tensor> inputs = {
      detail::as_tensor(frame.positions, {n, 3}).to(float_options),
      detail::as_tensor(frame.atomic_numbers, {n}).to(impl.device),
      detail::as_tensor(cell_values, {1, 3, 3}).to(float_options),
      at::from_blob(pbc_values, {1, 3}, at::kBool).clone().to(impl.device),
      detail::as_tensor(frame.tags, {n}).to(impl.device),
      detail::as_tensor(natoms, {1}).to(impl.device),
  };
  std::vector<at::Tensor> outputs;
  try {
    TerminateGuard guard;
    outputs = impl.package->run(inputs);
  } catch (const c10::Error& e) {
    throw Error("AOTInductor package failed: " + detail::one_line(e.what_without_backtrace()));
  }
  const std::vector<std::string>& names = impl.metadata.outputs;
  if (outputs.size() != names.size())
    throw Error("AOTInductor package returned " + std::to_string(outputs.size()) + " outputs, its metadata names " +
                std::to_string(names.size()));
  Result result;
  bool has_energy = false, has_forces = false;
  for (std::size_t k = 0; k < names.size(); ++k) {
    at::Tensor value = outputs[k].detach().to(at::kCPU, at::kDouble).contiguous();
    if (names[k] == "energy") {
      if (value.numel() != 1) throw Error("AOTInductor package energy has " + std::to_string(value.numel()) + " values, expected 1");
      result.energy = value.item<double>();
      has_energy = true;
    } else if (names[k] == "forces") {
      if (value.numel() != 3 * n)
        throw Error("AOTInductor package forces have " + std::to_string(value.numel()) + " values, expected " +
                    std::to_string(n) + " x 3");
      result.forces.assign(value.data_ptr<double>(), value.data_ptr<double>() + value.numel());
      has_forces = true;
    } else if (names[k] == "stress") {
      if (value.numel() != 9) throw Error("AOTInductor package stress is not 3x3");
      std::copy(value.data_ptr<double>(), value.data_ptr<double>() + 9, result.stress.begin());
      result.has_stress = true;
    }
  }
  if (!has_energy || !has_forces) throw Error("AOTInductor package outputs lack energy or forces");
  return result;
}

const char* format_name(ArtifactFormat format) {
  return format == ArtifactFormat::AOTInductor ? "aoti" : "torchscript";
}

Device parse_device(const std::string& name) {
  if (name == "cpu") return Device::CPU;
  if (name == "cuda") return Device::CUDA;
  throw Error("unknown device '" + name + "' (expected cpu or cuda)");
}

void set_fatal_error_prefix(const std::string& prefix) { fatal_error_prefix = prefix; }

void set_num_threads(int threads) {
  if (threads > 0) at::set_num_threads(threads);
}

Model::Model(const std::string& path, Device device) : impl_(std::make_unique<Impl>()) {
  if (!std::ifstream(path).good()) throw Error("cannot open artifact '" + path + "'");
  if (device == Device::CUDA) {
    if (!torch::cuda::is_available())
      throw Error("--device cuda requested but CUDA is not available (CPU-only LibTorch or no GPU)");
    impl_->device = c10::Device(at::kCUDA, 0);
  }
  impl_->format = sniff_format(path);
  if (impl_->format == ArtifactFormat::AOTInductor) impl_->load_package(path);
  else impl_->load_torchscript(path);
  impl_->dtype = impl_->metadata.dtype == "float64" ? at::kDouble : at::kFloat;
}

Model::~Model() = default;
Model::Model(Model&&) noexcept = default;
Model& Model::operator=(Model&&) noexcept = default;

const Metadata& Model::metadata() const { return impl_->metadata; }
ArtifactFormat Model::format() const { return impl_->format; }
bool Model::has_domain() const { return impl_->has_domain; }

void Model::validate(const Frame& frame) const {
  const std::size_t n = frame.size();
  if (n == 0) throw Error("structure has no atoms");
  if (frame.positions.size() != 3 * n)
    throw Error("positions have " + std::to_string(frame.positions.size()) +
                " values, expected 3 x " + std::to_string(n) + " atoms");
  if (frame.tags.size() != n)
    throw Error("tags have " + std::to_string(frame.tags.size()) + " values, expected " +
                std::to_string(n));
  const Metadata& meta = impl_->metadata;
  for (std::size_t k = 0; k < n; ++k) {
    const std::int64_t z = frame.atomic_numbers[k];
    if (z < meta.min_atomic_number || z > meta.max_atomic_number)
      throw Error("atom " + std::to_string(k) + " is " + element_symbol(static_cast<int>(z)) +
                  " (Z=" + std::to_string(z) + "), outside the model's range " +
                  std::to_string(meta.min_atomic_number) + ".." +
                  std::to_string(meta.max_atomic_number));
  }
  for (double x : frame.positions)
    if (!std::isfinite(x)) throw Error("positions contain NaN or Inf");
  for (double x : frame.cell)
    if (!std::isfinite(x)) throw Error("cell contains NaN or Inf");
  if ((frame.pbc[0] || frame.pbc[1] || frame.pbc[2]) && determinant(frame.cell) == 0.0)
    throw Error("periodic structure with a singular cell");
}

Result Model::compute(const Frame& frame) {
  validate(frame);
  if (impl_->format == ArtifactFormat::AOTInductor) return impl_->run_package(frame);
  return impl_->run("forward", impl_->inputs(frame), frame.size());
}

}  // namespace ocp_deploy
