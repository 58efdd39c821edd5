// LibTorch side of ocp_deploy::Model (its Impl: model_impl.hpp). One of the
// core's two LibTorch translation units, with domain.cpp.
#include "ocp_deploy/model.hpp"

#include <cmath>
#include <fstream>
#include <sstream>

#include "model_impl.hpp"
#include "ocp_deploy/elements.hpp"

namespace ocp_deploy {
namespace {

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
                detail::one_line(e.what_without_backtrace()));
  }
  impl_->module.eval();
  impl_->metadata = parse_metadata(extra[kMetadataFile]);
  impl_->dtype = impl_->metadata.dtype == "float64" ? at::kDouble : at::kFloat;
  impl_->has_candidates = impl_->module.find_method("forward_candidates").has_value();
  impl_->has_domain = impl_->module.find_method("domain_layout").has_value();
}

Model::~Model() = default;
Model::Model(Model&&) noexcept = default;
Model& Model::operator=(Model&&) noexcept = default;

const Metadata& Model::metadata() const { return impl_->metadata; }
bool Model::has_forward_candidates() const { return impl_->has_candidates; }
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
  arguments.push_back(detail::as_tensor(edge_index, {2, e}).to(impl_->device));
  arguments.push_back(detail::as_tensor(candidates.offsets, {e, 3}).to(impl_->device));
  return impl_->run("forward_candidates", std::move(arguments), frame.size());
}

}  // namespace ocp_deploy
