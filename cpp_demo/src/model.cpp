// LibTorch side of ocp_deploy::Model. The only translation unit of the core
// library that includes torch headers.
#include "ocp_deploy/model.hpp"

// The LibTorch headers this file uses, not <torch/script.h>: parsing torch's
// headers is most of the time it takes to compile (and of the whole build).
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/from_blob.h>
#include <torch/csrc/jit/serialization/import.h>
#include <torch/cuda.h>

#include <cmath>
#include <fstream>
#include <sstream>

#include "ocp_deploy/elements.hpp"

namespace ocp_deploy {
namespace {

// Longest message we pass on from a c10::Error (TorchScript errors embed the
// whole interpreter traceback).
constexpr std::size_t kMaxMessageLength = 400;

// A one-line message out of a (multi-line) c10::Error text: the Python-side
// exception line of a TorchScript traceback ("builtins.ValueError: ...") when
// present, else the first non-empty line.
std::string one_line(const std::string& text) {
  std::istringstream lines(text);
  std::string line, first, raised;
  while (std::getline(lines, line)) {
    auto begin = line.find_first_not_of(" \t");
    if (begin == std::string::npos) continue;
    line = line.substr(begin);
    if (first.empty()) first = line;
    if (line.rfind("builtins.", 0) == 0) raised = line.substr(std::string("builtins.").size());
    else if (line.find("RuntimeError: ") == 0) raised = line;
  }
  std::string result = raised.empty() ? first : raised;
  if (result.size() > kMaxMessageLength) result = result.substr(0, kMaxMessageLength) + "...";
  return result;
}

at::Tensor as_tensor(const std::vector<double>& values, std::vector<int64_t> shape) {
  if (values.empty()) return at::empty(shape, at::kDouble);
  return at::from_blob(const_cast<double*>(values.data()), shape, at::kDouble).clone();
}

at::Tensor as_tensor(const std::vector<std::int64_t>& values, std::vector<int64_t> shape) {
  if (values.empty()) return at::empty(shape, at::kLong);
  return at::from_blob(const_cast<std::int64_t*>(values.data()), shape, at::kLong).clone();
}

double determinant(const std::array<double, 9>& m) {
  return m[0] * (m[4] * m[8] - m[5] * m[7]) - m[1] * (m[3] * m[8] - m[5] * m[6]) +
         m[2] * (m[3] * m[7] - m[4] * m[6]);
}

}  // namespace

Device parse_device(const std::string& name) {
  if (name == "cpu") return Device::CPU;
  if (name == "cuda") return Device::CUDA;
  throw Error("unknown device '" + name + "' (expected cpu or cuda)");
}

void set_num_threads(int threads) {
  if (threads > 0) at::set_num_threads(threads);
}

struct Model::Impl {
  torch::jit::Module module;
  Metadata metadata;
  c10::Device device{at::kCPU};
  c10::ScalarType dtype = at::kFloat;
  bool has_candidates = false;

  std::vector<c10::IValue> inputs(const Frame& frame) const {
    const auto n = static_cast<int64_t>(frame.size());
    auto float_options = at::TensorOptions().dtype(dtype).device(device);
    at::Tensor positions = as_tensor(frame.positions, {n, 3}).to(float_options);
    at::Tensor numbers = as_tensor(frame.atomic_numbers, {n}).to(device);
    at::Tensor tags = as_tensor(frame.tags, {n}).to(device);
    std::vector<double> cell_values(frame.cell.begin(), frame.cell.end());
    at::Tensor cell = as_tensor(cell_values, {3, 3}).to(float_options);
    bool pbc_values[3] = {frame.pbc[0], frame.pbc[1], frame.pbc[2]};
    at::Tensor pbc = at::from_blob(pbc_values, {3}, at::kBool).clone().to(device);
    return {positions, numbers, cell, pbc, tags};
  }

  Result run(const std::string& method, std::vector<c10::IValue> arguments, std::size_t n) {
    c10::IValue output;
    try {
      output = module.get_method(method)(std::move(arguments));
    } catch (const c10::Error& e) {
      throw Error("artifact " + method + "() failed: " + one_line(e.what_without_backtrace()));
    }
    if (!output.isGenericDict()) throw Error("artifact " + method + "() did not return a dict");
    auto dict = output.toGenericDict();
    Result result;
    auto get = [&](const char* key) -> at::Tensor {
      if (!dict.contains(key)) throw Error(std::string("artifact output lacks \"") + key + "\"");
      return dict.at(key).toTensor().detach().to(at::kCPU, at::kDouble).contiguous();
    };
    at::Tensor energy = get("energy");
    if (energy.numel() != 1) throw Error("artifact energy is not a scalar");
    result.energy = energy.item<double>();
    at::Tensor forces = get("forces");
    if (forces.dim() != 2 || forces.size(0) != static_cast<int64_t>(n) || forces.size(1) != 3)
      throw Error("artifact forces have shape " + std::to_string(forces.numel()) +
                  " values, expected (" + std::to_string(n) + ", 3)");
    result.forces.assign(forces.data_ptr<double>(), forces.data_ptr<double>() + forces.numel());
    if (dict.contains("stress")) {
      at::Tensor stress = get("stress");
      if (stress.numel() != 9) throw Error("artifact stress is not 3x3");
      std::copy(stress.data_ptr<double>(), stress.data_ptr<double>() + 9, result.stress.begin());
      result.has_stress = true;
    }
    return result;
  }
};

Model::Model(const std::string& path, Device device) : impl_(std::make_unique<Impl>()) {
  if (!std::ifstream(path).good()) throw Error("cannot open artifact '" + path + "'");
  if (device == Device::CUDA) {
    if (!torch::cuda::is_available())
      throw Error("--device cuda requested but CUDA is not available (CPU-only LibTorch or no GPU)");
    impl_->device = c10::Device(at::kCUDA, 0);
  }
  torch::jit::ExtraFilesMap extra{{kMetadataFile, ""}};
  try {
    impl_->module = torch::jit::load(path, impl_->device, extra);
  } catch (const c10::Error& e) {
    throw Error("'" + path + "' is not a loadable TorchScript file: " +
                one_line(e.what_without_backtrace()));
  }
  impl_->module.eval();
  impl_->metadata = parse_metadata(extra[kMetadataFile]);
  impl_->dtype = impl_->metadata.dtype == "float64" ? at::kDouble : at::kFloat;
  impl_->has_candidates = impl_->module.find_method("forward_candidates").has_value();
}

Model::~Model() = default;
Model::Model(Model&&) noexcept = default;
Model& Model::operator=(Model&&) noexcept = default;

const Metadata& Model::metadata() const { return impl_->metadata; }
bool Model::has_forward_candidates() const { return impl_->has_candidates; }

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
  return impl_->run("forward", impl_->inputs(frame), frame.size());
}

Result Model::compute(const Frame& frame, const Candidates& candidates) {
  if (!impl_->has_candidates) return compute(frame);
  validate(frame);
  const std::size_t edges = candidates.size();
  if (candidates.neighbour.size() != edges || candidates.offsets.size() != 3 * edges)
    throw Error("inconsistent candidate neighbour arrays");
  const auto n = static_cast<std::int64_t>(frame.size());
  for (std::size_t e = 0; e < edges; ++e)
    if (candidates.centre[e] < 0 || candidates.centre[e] >= n || candidates.neighbour[e] < 0 ||
        candidates.neighbour[e] >= n)
      throw Error("candidate edge " + std::to_string(e) + " refers to a missing atom");
  auto arguments = impl_->inputs(frame);
  const auto e = static_cast<int64_t>(edges);
  std::vector<std::int64_t> edge_index(candidates.neighbour);
  edge_index.insert(edge_index.end(), candidates.centre.begin(), candidates.centre.end());
  arguments.push_back(as_tensor(edge_index, {2, e}).to(impl_->device));
  arguments.push_back(as_tensor(candidates.offsets, {e, 3}).to(impl_->device));
  return impl_->run("forward_candidates", std::move(arguments), frame.size());
}

}  // namespace ocp_deploy
