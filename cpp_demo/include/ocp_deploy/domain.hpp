// ocp_deploy/domain.hpp - one MPI rank's share of an exact domain-decomposed
// evaluation of a message-passing artifact (PaiNN), layer by layer.
//
// Like model.hpp this header exposes no torch type: buffers are plain
// row-major doubles / int64s that an MPI host (LAMMPS's forward and reverse
// communication) packs and unpacks in place, while the torch tensors that
// live between calls (edges, each layer's inputs) stay inside.
//
// A rank holds N = n owned atoms (rows [0, n)) followed by ghost atoms (rows
// [n, N)): periodic images and atoms owned by other ranks, out to at least
// the model cutoff around the rank's domain. One force evaluation:
//
//   domain.set_atoms(...)                       // positions, global IDs, elements, box
//   domain.cap()                                // owned rows of capped_keys()
//   [host: forward communication of capped_keys() rows, cap_width() int64 per atom]
//   domain.build()                              // edges, edge features, embedding: features()
//   for k in 0 .. num_layers()-1:
//     domain.layer(k)                           // owned rows of features()
//     [host: forward communication of features() rows, feature_width() per atom]
//   domain.readout(total_atoms, energies, forces)   // owned per-atom energies (+ direct forces)
//   if gradient_forces():
//     domain.readout_backward()                 // owned rows of gradients()
//     for k in num_layers()-1 .. 0:
//       domain.layer_backward(k)                // all rows of gradients()
//       [host, k > 0: reverse communication of gradients() ghost rows, summed into owners]
//     domain.gradient_forces_on(forces)         // forces on all N rows (ghost rows too)
//
// The host skips the forward communication after the last layer (the readout
// needs owned rows only) and the reverse communication after layer 0 (the
// embedding does not depend on positions). Which pairs become edges under
// the max-neighbour cap is decided by global atom IDs inside the artifact,
// so the local atom order does not matter.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "ocp_deploy/model.hpp"

namespace ocp_deploy {

class Domain {
 public:
  // Reads domain_layout() and domain_force_convention() (a package: its
  // metadata record's "domain", and loads its domain programs). Throws Error
  // when the artifact has no domain methods or programs (Model::has_domain()).
  // The model must outlive the Domain.
  explicit Domain(Model& model);
  ~Domain();
  Domain(Domain&&) noexcept;
  Domain& operator=(Domain&&) noexcept;
  Domain(const Domain&) = delete;
  Domain& operator=(const Domain&) = delete;

  int num_layers() const;
  int hidden_channels() const;
  // Values per atom in capped_keys(): the artifact's max_neighbors (0: no cap,
  // nothing to communicate).
  int cap_width() const;
  // Values per atom in features() and gradients(): x (H), then vec (3H, the
  // (3, H) block row-major).
  int feature_width() const;
  // Forces from the backward pass (metadata forces "conservative" or
  // "gradient"); otherwise readout() returns direct forces on owned atoms.
  bool gradient_forces() const;

  // This rank's atoms, rows [0, num_local) owned: positions (num_total x 3,
  // Angstrom, unwrapped images as the host holds them), global atom IDs
  // (positive, equal on every copy of an atom), atomic numbers, the box
  // (rows a, b, c) and its periodicity. Candidate pairs: centre[p] an owned
  // row, neighbour[p] any row, a superset of all pairs within the cutoff with
  // no duplicates, any order. Drops the tensors of the previous evaluation.
  void set_atoms(std::size_t num_local, std::size_t num_total, const double* positions,
                 std::vector<std::int64_t> ids, std::vector<std::int64_t> atomic_numbers,
                 const std::array<double, 9>& cell, const std::array<bool, 3>& pbc,
                 std::vector<std::int64_t> centre, std::vector<std::int64_t> neighbour);
  std::size_t num_local() const;
  std::size_t num_total() const;

  // domain_cap(): fills the owned rows of capped_keys() (num_total x
  // cap_width(), padded with -1); the host copies each owner's row into its
  // ghosts' rows before build(). Keys are below 2^53, so doubles carry them
  // exactly.
  void cap();
  std::int64_t* capped_keys();

  // domain_graph(), domain_geometry(), domain_embed(): the edges (targets
  // owned, sources any row) and the initial features. From here on the
  // artifact sees the "active" rows only: the owned rows and the ghost rows
  // that are the source of an edge (the others cannot change an owned
  // atom's result). Host buffers keep all rows; rows that are not active
  // read as zero in features() after build() and in gradients().
  void build();
  std::size_t num_edges() const;
  std::size_t num_active() const;

  // num_total x feature_width(): the current layer's input features.
  double* features();
  // domain_layer(k): reads all rows of features() (ghost rows as the host
  // refreshed them), writes the owned rows with the layer's output.
  void layer(int k);

  // domain_readout() of the last layer's output: per-atom energies of the
  // owned atoms (eV, physical: summed over all ranks they give the total
  // energy; total_atoms is the whole system's atom count) and, for
  // direct-force artifacts, their forces (num_local x 3, eV/Angstrom; empty
  // for gradient-force artifacts).
  void readout(std::int64_t total_atoms, std::vector<double>& energies, std::vector<double>& forces);

  // Backward pass (gradient_forces() only). num_total x feature_width():
  // d(energy)/d(features) of the current layer's output.
  double* gradients();
  // domain_readout_backward(): owned rows of gradients(); ghost rows zero.
  void readout_backward();
  // domain_layer_backward(k): reads the owned rows of gradients() (the
  // gradient of layer k's output, ghost contributions already summed in),
  // writes all rows with the gradient of its input (zero on rows that are
  // not active); the host then adds the ghost rows into their owners' rows
  // (not needed after layer 0).
  void layer_backward(int k);
  // domain_geometry_backward() and domain_force_convention(): forces on all
  // num_total rows (num_total x 3, eV/Angstrom). Ghost rows are
  // contributions the host adds to the owning atoms (LAMMPS: reverse
  // communication of forces, newton_pair on); the constant offset is on the
  // owned rows only.
  void gradient_forces_on(std::vector<double>& forces);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ocp_deploy
