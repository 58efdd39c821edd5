// model_impl.hpp - the LibTorch side of ocp_deploy::Model, shared by the
// core's two LibTorch translation units (model.cpp, domain.cpp). Private to
// the core: never installed, never included by hosts.
#pragma once

// The LibTorch headers used, not <torch/script.h>: parsing torch's headers is
// most of the time it takes to compile (and of the whole build).
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/from_blob.h>
#include <torch/csrc/jit/serialization/import.h>
#include <torch/cuda.h>

#include <memory>
#include <sstream>
#include <string>
#include <unordered_map>
#include <vector>

#include "ocp_deploy/model.hpp"

// Held by pointer only: its header (and the AOTInductor runner's) stays out
// of domain.cpp, which shares this Impl.
namespace torch::inductor {
class AOTIModelPackageLoader;
}  // namespace torch::inductor

namespace ocp_deploy {
namespace detail {

// Longest message we pass on from a c10::Error (TorchScript errors embed the
// whole interpreter traceback).
inline constexpr std::size_t kMaxMessageLength = 400;

// A one-line message out of a (multi-line) c10::Error text: the Python-side
// exception line of a TorchScript traceback ("builtins.ValueError: ...") when
// present, else the first non-empty line.
inline std::string one_line(const std::string& text) {
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

inline at::Tensor as_tensor(const std::vector<double>& values, std::vector<int64_t> shape) {
  if (values.empty()) return at::empty(shape, at::kDouble);
  return at::from_blob(const_cast<double*>(values.data()), shape, at::kDouble).clone();
}

inline at::Tensor as_tensor(const std::vector<std::int64_t>& values, std::vector<int64_t> shape) {
  if (values.empty()) return at::empty(shape, at::kLong);
  return at::from_blob(const_cast<std::int64_t*>(values.data()), shape, at::kLong).clone();
}

}  // namespace detail

struct Model::Impl {
  ArtifactFormat format = ArtifactFormat::TorchScript;
  torch::jit::Module module;  // TorchScript artifacts
  // AOTInductor packages. shared_ptr: its deleter is bound where it is made
  // (model.cpp), so the loader's type may stay incomplete here.
  std::shared_ptr<torch::inductor::AOTIModelPackageLoader> package;
  Metadata metadata;
  c10::Device device{at::kCPU};
  c10::ScalarType dtype = at::kFloat;
  bool has_domain = false;  // domain_layout() and the other domain_* methods, or a package's domain programs
  // AOTInductor packages: the file, and the domain programs loaded so far, by name.
  std::string path;
  std::unordered_map<std::string, std::shared_ptr<torch::inductor::AOTIModelPackageLoader>> programs;

  // Defined in model.cpp (the only translation unit with the AOTInductor
  // loader's header): load either format, run a package.
  void load_torchscript(const std::string& path);
  void load_package(const std::string& path);
  Result run_package(const Frame& frame);
  // A named program of the package (loaded on first use; load_program loads
  // it now), run on tensors; errors as one-line Errors.
  void load_program(const std::string& name);
  std::vector<at::Tensor> run_program(const std::string& name, const std::vector<at::Tensor>& inputs);

  std::vector<c10::IValue> inputs(const Frame& frame) const {
    const auto n = static_cast<int64_t>(frame.size());
    auto float_options = at::TensorOptions().dtype(dtype).device(device);
    at::Tensor positions = detail::as_tensor(frame.positions, {n, 3}).to(float_options);
    at::Tensor numbers = detail::as_tensor(frame.atomic_numbers, {n}).to(device);
    at::Tensor tags = detail::as_tensor(frame.tags, {n}).to(device);
    std::vector<double> cell_values(frame.cell.begin(), frame.cell.end());
    at::Tensor cell = detail::as_tensor(cell_values, {3, 3}).to(float_options);
    bool pbc_values[3] = {frame.pbc[0], frame.pbc[1], frame.pbc[2]};
    at::Tensor pbc = at::from_blob(pbc_values, {3}, at::kBool).clone().to(device);
    return {positions, numbers, cell, pbc, tags};
  }

  Result run(const std::string& method, std::vector<c10::IValue> arguments, std::size_t n) {
    c10::IValue output;
    try {
      output = module.get_method(method)(std::move(arguments));
    } catch (const c10::Error& e) {
      throw Error("artifact " + method + "() failed: " + detail::one_line(e.what_without_backtrace()));
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

}  // namespace ocp_deploy
