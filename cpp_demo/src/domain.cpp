// LibTorch side of ocp_deploy::Domain (see ocp_deploy/domain.hpp): calls the
// artifact's domain_* methods and keeps the tensors that live between them.
//
// Active rows: once the edges are known (domain_graph), the geometry, the
// embedding and the layers run on the owned rows plus the ghost rows that
// are the source of an edge ("active" rows, owned first), not on every ghost
// row the host holds. A layer's output on the owned rows reads no other row,
// so the result is the same; with a cap (PaiNN h512: the 50 nearest of ~600
// neighbours within 12 A) the edge sources lie much closer than the cutoff,
// and most of the ghost shell never enters a layer. The host buffers
// (features, gradients, capped keys) keep all rows in the host's order, for
// its communication; rows are gathered from and scattered to them here.
//
// Two kinds of artifact: a TorchScript artifact's domain_* methods, or the
// domain programs of an AOTInductor package (exporter/domain_aoti.py:
// domain_cap, domain_build = domain_graph + the active rows + geometry +
// embedding, domain_layer, domain_readout with the readout's backward for
// gradient forces, domain_layer_backward with the layer's position
// gradients), which take tensors only (scalars as 0-d int64 tensors).
#include "ocp_deploy/domain.hpp"

#include <ATen/ops/arange.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/full.h>
#include <ATen/ops/scalar_tensor.h>
#include <ATen/ops/zeros.h>
#include <c10/core/GradMode.h>

#include <string>
#include <utility>

#include "model_impl.hpp"

namespace ocp_deploy {
namespace {

constexpr std::size_t kLayoutEntries = 3;  // [num_layers, hidden_channels, cap_width]
constexpr int kFeatureBlocks = 4;          // x (H) + vec (3H)
// A package's domain programs (names as exporter/domain_aoti.py writes them).
constexpr const char* kCapProgram = "domain_cap";
constexpr const char* kBuildProgram = "domain_build";
constexpr const char* kLayerProgram = "domain_layer";
constexpr const char* kReadoutProgram = "domain_readout";
constexpr const char* kLayerBackwardProgram = "domain_layer_backward";

at::Tensor long_tensor(std::vector<std::int64_t> values) {
  return detail::as_tensor(values, {static_cast<std::int64_t>(values.size())});
}

std::vector<double> to_doubles(const at::Tensor& tensor) {
  at::Tensor values = tensor.detach().to(at::kCPU, at::kDouble).contiguous();
  return std::vector<double>(values.data_ptr<double>(), values.data_ptr<double>() + values.numel());
}

std::string shape_of(const at::Tensor& tensor) {
  std::string text = "(";
  for (std::int64_t d = 0; d < tensor.dim(); ++d) text += (d ? ", " : "") + std::to_string(tensor.size(d));
  return text + ")";
}

}  // namespace

struct Domain::Impl {
  Model::Impl* model = nullptr;
  bool package = false;  // an AOTInductor package's domain programs (else TorchScript methods)
  int num_layers = 0;
  int hidden = 0;
  int cap_width = 0;
  bool gradient = false;
  double force_scale = 1.0;
  double force_offset = 0.0;

  // Per evaluation.
  std::int64_t n = 0;  // owned rows
  std::int64_t total = 0;  // owned + ghost rows
  at::Tensor positions;  // (N, 3) float64 on the model's device
  at::Tensor ids, numbers, cell, pbc, centre, neighbour;
  at::Tensor keys;       // (N, M) int64, CPU (host buffer)
  at::Tensor rows;         // (A,) int64, CPU: host rows of the active rows, owned first
  at::Tensor active_positions;  // (A, 3) float64 on the model's device
  at::Tensor edge_index, edge_rbf, edge_unit;  // edge_index in active rows
  at::Tensor features;   // (N, 4H) float64, CPU (host buffer)
  at::Tensor gradients;  // (N, 4H) float64, CPU (host buffer)
  at::Tensor last_x, last_vec;  // the last layer's output (n, H), (n, 3, H)
  std::vector<std::pair<at::Tensor, at::Tensor>> layer_inputs;  // per layer (gradient artifacts)
  at::Tensor grad_rbf, grad_unit;  // summed over layers
  at::Tensor readout_grad_x, readout_grad_vec;  // packages: from domain_readout
  at::Tensor grad_positions;  // packages: (A, 3) float64, summed over layers
  bool built = false;

  at::TensorOptions model_options() const {
    return at::TensorOptions().dtype(model->dtype).device(model->device);
  }

  c10::IValue call(const char* method, std::vector<c10::IValue> arguments) {
    try {
      return model->module.get_method(method)(std::move(arguments));
    } catch (const c10::Error& e) {
      throw Error(std::string("artifact ") + method + "() failed: " + detail::one_line(e.what_without_backtrace()));
    }
  }

  // Forward-pass calls need no autograd graph: the backward methods rebuild
  // what they differentiate from the inputs kept here.
  c10::IValue call_no_grad(const char* method, std::vector<c10::IValue> arguments) {
    c10::NoGradGuard no_grad;
    return call(method, std::move(arguments));
  }

  at::Tensor scalar(std::int64_t value) const {
    return at::scalar_tensor(static_cast<double>(value), at::TensorOptions().dtype(at::kLong)).to(model->device);
  }

  // A package program's outputs, checked for their count.
  std::vector<at::Tensor> run(const char* program, const std::vector<at::Tensor>& inputs, std::size_t count) {
    std::vector<at::Tensor> outputs = model->run_program(program, inputs);
    if (outputs.size() != count)
      throw Error(std::string("package program ") + program + " returned " + std::to_string(outputs.size()) +
                  " values, expected " + std::to_string(count));
    return outputs;
  }

  std::vector<at::Tensor> graph_tensors() const { return {positions, ids, scalar(n), cell, pbc, centre, neighbour}; }

  static std::vector<at::Tensor> tensors(const c10::IValue& output, const char* method, std::size_t count) {
    if (!output.isTuple()) throw Error(std::string("artifact ") + method + "() did not return a tuple");
    const auto& elements = output.toTupleRef().elements();
    if (elements.size() != count)
      throw Error(std::string("artifact ") + method + "() returned " + std::to_string(elements.size()) +
                  " values, expected " + std::to_string(count));
    std::vector<at::Tensor> result;
    for (const auto& element : elements) result.push_back(element.toTensor());
    return result;
  }

  void expect_shape(const at::Tensor& tensor, std::vector<std::int64_t> shape, const char* what) const {
    if (tensor.sizes() != at::IntArrayRef(shape)) {
      std::string expected = "(";
      for (std::size_t d = 0; d < shape.size(); ++d) expected += (d ? ", " : "") + std::to_string(shape[d]);
      throw Error(std::string("artifact ") + what + " has shape " + shape_of(tensor) + ", expected " + expected + ")");
    }
  }

  std::vector<c10::IValue> graph_arguments() const {
    return {positions, ids, c10::IValue(n), cell, pbc, centre, neighbour};
  }

  std::int64_t active() const { return rows.defined() ? rows.size(0) : 0; }

  // A (count, 4H) block of host rows as model tensors (count, H), (count, 3, H).
  std::pair<at::Tensor, at::Tensor> split(const at::Tensor& block) const {
    const std::int64_t count = block.size(0);
    at::Tensor values = block.to(model_options(), false, true);
    at::Tensor x = values.narrow(1, 0, hidden).contiguous();
    at::Tensor vec = values.narrow(1, hidden, 3 * hidden).contiguous().view({count, 3, hidden});
    return {x, vec};
  }
  // The owned rows of a host buffer.
  std::pair<at::Tensor, at::Tensor> split_owned(const at::Tensor& buffer) const {
    return split(buffer.narrow(0, 0, n));
  }
  // The active rows of a host buffer.
  std::pair<at::Tensor, at::Tensor> split_active(const at::Tensor& buffer) const {
    return split(buffer.index_select(0, rows));
  }

  // x (count, H) and vec (count, 3, H) as one (count, 4H) float64 CPU block.
  at::Tensor block_of(const at::Tensor& x, const at::Tensor& vec, std::int64_t count, const char* what) const {
    expect_shape(x, {count, hidden}, what);
    expect_shape(vec, {count, 3, hidden}, what);
    at::Tensor block = at::empty({count, kFeatureBlocks * static_cast<std::int64_t>(hidden)}, at::kDouble);
    block.narrow(1, 0, hidden).copy_(x.detach());
    block.narrow(1, hidden, 3 * hidden).copy_(vec.detach().reshape({count, 3 * hidden}));
    return block;
  }
  // Writes x, vec (n rows) into the owned rows of a host buffer.
  void join_owned(at::Tensor& buffer, const at::Tensor& x, const at::Tensor& vec, const char* what) const {
    buffer.narrow(0, 0, n).copy_(block_of(x, vec, n, what));
  }
  // Writes x, vec (active rows) into their host rows; the other rows become zero.
  void join_active(at::Tensor& buffer, const at::Tensor& x, const at::Tensor& vec, const char* what) const {
    buffer.zero_();
    buffer.index_copy_(0, rows, block_of(x, vec, active(), what));
  }

  void require_built(const char* what) const {
    if (!built) throw Error(std::string("Domain::") + what + "() before build()");
  }
};

Domain::Domain(Model& model) : impl_(std::make_unique<Impl>()) {
  if (!model.has_domain())
    throw Error("the artifact has no domain-decomposition methods (domain_layout, ...)");
  Impl& d = *impl_;
  d.model = model.impl_.get();
  d.gradient = model.metadata().forces_are_gradients();
  if (model.format() == ArtifactFormat::AOTInductor) {
    // Layout, force convention and program names from the package's metadata.
    const Metadata& meta = model.metadata();
    const auto& layout = meta.domain_layout;
    if (layout.size() != kLayoutEntries || layout[0] < 1 || layout[1] < 1 || layout[2] < 0)
      throw Error("package metadata domain.layout is not [num_layers >= 1, hidden_channels >= 1, cap_width >= 0]");
    if (meta.domain_force_convention.size() != 2)
      throw Error("package metadata domain.force_convention is not [scale, offset]");
    d.package = true;
    d.num_layers = static_cast<int>(layout[0]);
    d.hidden = static_cast<int>(layout[1]);
    d.cap_width = static_cast<int>(layout[2]);
    d.force_scale = meta.domain_force_convention[0];
    d.force_offset = meta.domain_force_convention[1];
    std::vector<const char*> needed = {kBuildProgram, kLayerProgram, kReadoutProgram};
    if (d.cap_width > 0) needed.push_back(kCapProgram);
    if (d.gradient) needed.push_back(kLayerBackwardProgram);
    for (const char* name : needed) d.model->load_program(name);  // fails here, not in the middle of a run
    return;
  }
  c10::IValue layout = d.call("domain_layout", {});
  if (!layout.isIntList()) throw Error("artifact domain_layout() did not return a list of ints");
  std::vector<std::int64_t> values = layout.toIntVector();
  if (values.size() != kLayoutEntries || values[0] < 1 || values[1] < 1 || values[2] < 0)
    throw Error("artifact domain_layout() is not [num_layers >= 1, hidden_channels >= 1, cap_width >= 0]");
  d.num_layers = static_cast<int>(values[0]);
  d.hidden = static_cast<int>(values[1]);
  d.cap_width = static_cast<int>(values[2]);
  if (d.gradient) {
    c10::IValue convention = d.call("domain_force_convention", {});
    if (!convention.isTuple() || convention.toTupleRef().elements().size() != 2)
      throw Error("artifact domain_force_convention() did not return (scale, offset)");
    d.force_scale = convention.toTupleRef().elements()[0].toDouble();
    d.force_offset = convention.toTupleRef().elements()[1].toDouble();
  }
}

Domain::~Domain() = default;
Domain::Domain(Domain&&) noexcept = default;
Domain& Domain::operator=(Domain&&) noexcept = default;

int Domain::num_layers() const { return impl_->num_layers; }
int Domain::hidden_channels() const { return impl_->hidden; }
int Domain::cap_width() const { return impl_->cap_width; }
int Domain::feature_width() const { return kFeatureBlocks * impl_->hidden; }
bool Domain::gradient_forces() const { return impl_->gradient; }
std::size_t Domain::num_local() const { return static_cast<std::size_t>(impl_->n); }
std::size_t Domain::num_total() const { return static_cast<std::size_t>(impl_->total); }

void Domain::set_atoms(std::size_t num_local, std::size_t num_total, const double* positions,
                       std::vector<std::int64_t> ids, std::vector<std::int64_t> atomic_numbers,
                       const std::array<double, 9>& cell, const std::array<bool, 3>& pbc,
                       std::vector<std::int64_t> centre, std::vector<std::int64_t> neighbour) {
  Impl& d = *impl_;
  if (num_local > num_total) throw Error("more owned atoms than atoms");
  if (ids.size() != num_total || atomic_numbers.size() != num_total)
    throw Error("atom IDs / atomic numbers do not have one entry per atom");
  if (centre.size() != neighbour.size()) throw Error("inconsistent candidate pair arrays");
  const auto n = static_cast<std::int64_t>(num_local);
  const auto total = static_cast<std::int64_t>(num_total);
  for (std::size_t p = 0; p < centre.size(); ++p)
    if (centre[p] < 0 || centre[p] >= n || neighbour[p] < 0 || neighbour[p] >= total)
      throw Error("candidate pair " + std::to_string(p) + " refers to a missing atom");
  d.n = n;
  d.total = total;
  const c10::Device device = d.model->device;
  at::Tensor host_positions =
      total ? at::from_blob(const_cast<double*>(positions), {total, 3}, at::kDouble).clone()
            : at::empty({0, 3}, at::kDouble);
  d.positions = host_positions.to(device);
  d.ids = long_tensor(std::move(ids)).to(device);
  d.numbers = long_tensor(std::move(atomic_numbers)).to(device);
  std::vector<double> cell_values(cell.begin(), cell.end());
  d.cell = detail::as_tensor(cell_values, {3, 3}).to(device);
  bool pbc_values[3] = {pbc[0], pbc[1], pbc[2]};
  d.pbc = at::from_blob(pbc_values, {3}, at::kBool).clone().to(device);
  d.centre = long_tensor(std::move(centre)).to(device);
  d.neighbour = long_tensor(std::move(neighbour)).to(device);
  d.keys = at::full({total, d.cap_width}, -1, at::kLong);
  d.rows = d.active_positions = at::Tensor();
  d.features = at::zeros({total, kFeatureBlocks * static_cast<std::int64_t>(d.hidden)}, at::kDouble);
  d.gradients = at::Tensor();
  d.edge_index = d.edge_rbf = d.edge_unit = at::Tensor();
  d.last_x = d.last_vec = at::Tensor();
  d.grad_rbf = d.grad_unit = at::Tensor();
  d.readout_grad_x = d.readout_grad_vec = d.grad_positions = at::Tensor();
  d.layer_inputs.clear();
  d.layer_inputs.resize(d.num_layers);
  d.built = false;
}

void Domain::cap() {
  Impl& d = *impl_;
  at::Tensor owned;
  if (d.package) {
    owned = d.run(kCapProgram, d.graph_tensors(), 1)[0];
  } else {
    auto arguments = d.graph_arguments();
    owned = d.call_no_grad("domain_cap", std::move(arguments)).toTensor();
  }
  d.expect_shape(owned, {d.n, d.cap_width}, "domain_cap() output");
  if (d.n > 0 && d.cap_width > 0) d.keys.narrow(0, 0, d.n).copy_(owned);
}

std::int64_t* Domain::capped_keys() { return impl_->keys.data_ptr<std::int64_t>(); }

void Domain::build() {
  Impl& d = *impl_;
  if (d.package) {
    std::vector<at::Tensor> inputs = d.graph_tensors();
    inputs.push_back(d.keys.to(d.model->device));
    inputs.push_back(d.numbers);
    auto outputs = d.run(kBuildProgram, inputs, 6);
    d.rows = outputs[0].to(at::kCPU, at::kLong).contiguous();
    if (d.rows.dim() != 1 || d.rows.size(0) < d.n)
      throw Error("package program domain_build returned " + shape_of(d.rows) + " active rows for " + std::to_string(d.n) +
                  " owned atoms");
    d.edge_index = outputs[1];
    if (d.edge_index.dim() != 2 || d.edge_index.size(0) != 2)
      throw Error("package program domain_build edges have shape " + shape_of(d.edge_index) + ", expected (2, E)");
    const std::int64_t edges = d.edge_index.size(1);
    d.edge_rbf = outputs[2];
    d.edge_unit = outputs[3];
    if (d.edge_rbf.dim() != 2 || d.edge_rbf.size(0) != edges)
      throw Error("package program domain_build rbf has shape " + shape_of(d.edge_rbf) + ", expected (E, R)");
    d.expect_shape(d.edge_unit, {edges, 3}, "domain_build unit vectors");
    d.active_positions = d.positions.index_select(0, d.rows.to(d.model->device));
    d.join_active(d.features, outputs[4], outputs[5], "domain_build features");
    d.built = true;
    return;
  }
  auto arguments = d.graph_arguments();
  arguments.emplace_back(d.keys.to(d.model->device));
  at::Tensor edges_in_host_rows = d.call_no_grad("domain_graph", std::move(arguments)).toTensor();
  if (edges_in_host_rows.dim() != 2 || edges_in_host_rows.size(0) != 2)
    throw Error("artifact domain_graph() output has shape " + shape_of(edges_in_host_rows) + ", expected (2, E)");
  const std::int64_t edges = edges_in_host_rows.size(1);
  // Active rows: owned rows, then the ghost rows that are edge sources, in host order.
  at::Tensor host_edges = edges_in_host_rows.to(at::kCPU, at::kLong).contiguous();
  if (edges > 0) {
    const auto [lowest, highest] = std::pair{host_edges.min().item<std::int64_t>(), host_edges.max().item<std::int64_t>()};
    const auto highest_target = host_edges[1].max().item<std::int64_t>();
    if (lowest < 0 || highest >= d.total || highest_target >= d.n)
      throw Error("artifact domain_graph() returned edges outside the atoms (targets must be owned)");
  }
  at::Tensor used = at::zeros({d.total}, at::kBool);
  used.narrow(0, 0, d.n).fill_(true);
  used.index_fill_(0, host_edges[0], true);
  d.rows = used.nonzero().view({-1});
  at::Tensor active_index = at::full({d.total}, -1, at::kLong);
  active_index.index_copy_(0, d.rows, at::arange(d.active(), at::kLong));
  d.edge_index = active_index.index_select(0, host_edges.view({-1})).view({2, edges}).to(d.model->device);
  d.active_positions = d.positions.index_select(0, d.rows.to(d.model->device));
  auto geometry = Impl::tensors(d.call_no_grad("domain_geometry", {d.active_positions, d.edge_index}),
                                "domain_geometry", 2);
  d.edge_rbf = geometry[0];
  d.edge_unit = geometry[1];
  if (d.edge_rbf.dim() != 2 || d.edge_rbf.size(0) != edges)
    throw Error("artifact domain_geometry() rbf has shape " + shape_of(d.edge_rbf) + ", expected (E, R)");
  d.expect_shape(d.edge_unit, {edges, 3}, "domain_geometry() unit vectors");
  at::Tensor active_numbers = d.numbers.index_select(0, d.rows.to(d.model->device));
  auto embedding = Impl::tensors(d.call_no_grad("domain_embed", {active_numbers}), "domain_embed", 2);
  d.join_active(d.features, embedding[0], embedding[1], "domain_embed() output");
  d.built = true;
}

std::size_t Domain::num_active() const { return static_cast<std::size_t>(impl_->active()); }

std::size_t Domain::num_edges() const {
  return impl_->edge_index.defined() ? static_cast<std::size_t>(impl_->edge_index.size(1)) : 0;
}

double* Domain::features() { return impl_->features.data_ptr<double>(); }

void Domain::layer(int k) {
  Impl& d = *impl_;
  d.require_built("layer");
  if (k < 0 || k >= d.num_layers) throw Error("layer " + std::to_string(k) + " out of range");
  auto [x, vec] = d.split_active(d.features);
  if (d.gradient) d.layer_inputs[k] = {x, vec};
  if (d.package) {
    auto output = d.run(kLayerProgram, {d.scalar(k), x, vec, d.edge_index, d.edge_rbf, d.edge_unit, d.scalar(d.n)}, 2);
    d.join_owned(d.features, output[0], output[1], "domain_layer output");
    d.last_x = output[0];
    d.last_vec = output[1];
    return;
  }
  auto output = Impl::tensors(
      d.call_no_grad("domain_layer", {c10::IValue(static_cast<std::int64_t>(k)), x, vec, d.edge_index, d.edge_rbf,
                                      d.edge_unit, c10::IValue(d.n)}),
      "domain_layer", 2);
  d.join_owned(d.features, output[0], output[1], "domain_layer() output");
  d.last_x = output[0];
  d.last_vec = output[1];
}

void Domain::readout(std::int64_t total_atoms, std::vector<double>& energies, std::vector<double>& forces) {
  Impl& d = *impl_;
  if (!d.last_x.defined()) throw Error("Domain::readout() before the layers");
  std::vector<at::Tensor> output;
  if (d.package) {
    output = d.run(kReadoutProgram, {d.last_x, d.last_vec, d.scalar(total_atoms)}, d.gradient ? 3 : 2);
    if (d.gradient) {
      d.readout_grad_x = output[1];
      d.readout_grad_vec = output[2];
    }
  } else {
    output = Impl::tensors(d.call_no_grad("domain_readout", {d.last_x, d.last_vec, c10::IValue(total_atoms)}),
                           "domain_readout", 2);
  }
  d.expect_shape(output[0], {d.n}, "domain_readout() energies");
  energies = to_doubles(output[0]);
  if (d.gradient) {
    forces.clear();
  } else {
    d.expect_shape(output[1], {d.n, 3}, "domain_readout() forces");
    forces = to_doubles(output[1]);
  }
}

double* Domain::gradients() { return impl_->gradients.data_ptr<double>(); }

void Domain::readout_backward() {
  Impl& d = *impl_;
  if (!d.gradient) throw Error("readout_backward() on a direct-force artifact");
  if (!d.last_x.defined()) throw Error("Domain::readout_backward() before the layers");
  std::vector<at::Tensor> output;
  if (d.package) {
    if (!d.readout_grad_x.defined()) throw Error("Domain::readout_backward() before readout()");
    output = {d.readout_grad_x, d.readout_grad_vec};
  } else {
    output = Impl::tensors(d.call("domain_readout_backward", {d.last_x, d.last_vec}), "domain_readout_backward", 2);
  }
  d.gradients = at::zeros_like(d.features);
  d.join_owned(d.gradients, output[0], output[1], "domain_readout_backward() output");
}

void Domain::layer_backward(int k) {
  Impl& d = *impl_;
  if (k < 0 || k >= d.num_layers || !d.layer_inputs[k].first.defined())
    throw Error("layer_backward(" + std::to_string(k) + ") without its forward layer");
  if (!d.gradients.defined()) throw Error("Domain::layer_backward() before readout_backward()");
  auto [grad_x, grad_vec] = d.split_owned(d.gradients);
  const auto& [x_in, vec_in] = d.layer_inputs[k];
  if (d.package) {
    auto output = d.run(kLayerBackwardProgram,
                        {d.scalar(k), x_in, vec_in, d.edge_index, d.active_positions, grad_x, grad_vec}, 3);
    d.join_active(d.gradients, output[0], output[1], "domain_layer_backward input gradients");
    d.expect_shape(output[2], {d.active(), 3}, "domain_layer_backward position gradients");
    if (d.grad_positions.defined()) d.grad_positions.add_(output[2]);
    else d.grad_positions = output[2].detach().to(at::kDouble).clone();
    d.layer_inputs[k] = {};
    return;
  }
  auto output = Impl::tensors(
      d.call("domain_layer_backward", {c10::IValue(static_cast<std::int64_t>(k)), x_in, vec_in, d.edge_index,
                                       d.edge_rbf, d.edge_unit, c10::IValue(d.n), grad_x, grad_vec}),
      "domain_layer_backward", 4);
  d.join_active(d.gradients, output[0], output[1], "domain_layer_backward() input gradients");
  d.expect_shape(output[2], {d.edge_rbf.size(0), d.edge_rbf.size(1)}, "domain_layer_backward() grad_rbf");
  d.expect_shape(output[3], {d.edge_unit.size(0), 3}, "domain_layer_backward() grad_unit");
  if (d.grad_rbf.defined()) {
    d.grad_rbf.add_(output[2]);
    d.grad_unit.add_(output[3]);
  } else {
    d.grad_rbf = output[2].detach().clone();
    d.grad_unit = output[3].detach().clone();
  }
  d.layer_inputs[k] = {};  // no longer needed
}

void Domain::gradient_forces_on(std::vector<double>& forces) {
  Impl& d = *impl_;
  at::Tensor grad_positions;
  if (d.package) {
    if (!d.grad_positions.defined()) throw Error("Domain::gradient_forces_on() before layer_backward()");
    grad_positions = d.grad_positions;
  } else {
    if (!d.grad_rbf.defined()) throw Error("Domain::gradient_forces_on() before layer_backward()");
    grad_positions =
        d.call("domain_geometry_backward", {d.active_positions, d.edge_index, d.grad_rbf, d.grad_unit}).toTensor();
  }
  d.expect_shape(grad_positions, {d.active(), 3}, "domain_geometry_backward() output");
  at::Tensor all_rows = at::zeros({d.total, 3}, at::kDouble);
  all_rows.index_copy_(0, d.rows, grad_positions.detach().to(at::kCPU, at::kDouble));
  forces = to_doubles(all_rows);
  for (double& f : forces) f *= -d.force_scale;
  if (d.force_offset != 0.0)
    for (std::size_t i = 0; i < 3 * static_cast<std::size_t>(d.n); ++i) forces[i] += d.force_offset;
}

}  // namespace ocp_deploy
