// pair_ocp.h - LAMMPS pair style "ocp" evaluating an ocp-deploy artifact: a
// TorchScript artifact (.pt) or an AOTInductor package (.pt2), told apart
// from the file's contents by the core (ocp_deploy/model.hpp).
//
//   units metal
//   atom_modify map array            # ghosts are mapped to their owners
//   read_data ...
//   pair_style ocp ARTIFACT [cutoff RC] [device cpu|cuda] [threads T]
//                           [decomposition auto|whole|domain]
//   pair_coeff * * El1 El2 ... ElN   # one element symbol per atom type;
//                                    # El:TAG also sets the OCP tag of that type
//                                    # (0 subsurface, 1 surface, 2 adsorbate;
//                                    # default 0), e.g. Cu:0 Cu:1 O:2
//
// Two paths (`decomposition`): "whole" evaluates the whole periodic system
// in one artifact call on one MPI rank; "domain" splits it over the MPI
// ranks (LAMMPS's spatial decomposition) with the artifact's per-layer
// domain_* methods (PaiNN TorchScript artifacts) or domain programs (PaiNN
// AOTInductor packages exported with --domain). "auto" (default): whole on
// 1 rank, domain on more. GemNet-OC (no domain methods) and packages without
// domain programs (the whole-system program only) on several ranks are
// LAMMPS errors.
//
// Whole path (one MPI rank):
// * The artifact always sees the atoms in atom-ID order (the data file's
//   order), whatever LAMMPS did to its local arrays (spatial sort at setup and
//   every `atom_modify sort` steps). Under the max-neighbour cap PaiNN and
//   GemNet-OC depend on the atom order (symmetrization keeps the
//   source < target direction of each capped pair), so this is what makes
//   LAMMPS equal the Python runtime on the same structure in file order.
// * The artifact (TorchScript forward(), or an AOTInductor package's
//   program) gets the owned atoms, the box and its periodicity and builds its
//   own neighbour graph, so this path requests no LAMMPS neighbour list.
// * The artifact returns the total energy and the forces on all owned atoms
//   (periodic images included), so no force is written to ghost atoms. This
//   is correct for both `newton on` and `newton off`: with newton on, the
//   reverse communication adds the (zero) ghost forces.
// * The global virial comes from the artifact's stress (conservative
//   artifacts, fully periodic box): virial = -V * stress. Per-atom energies
//   and virials are not available.
//
// Domain path (any number of ranks; exact, see ocp_deploy/domain.hpp):
// * Each rank hands the artifact its owned atoms followed by its ghost atoms
//   (out to the model cutoff + skin), their global IDs (atom->tag) and the
//   candidate pairs (owned centre, owned or ghost neighbour) of a FULL
//   neighbour list, requested for this path only (full_list_request.h:
//   modern or 2021 API, chosen at configure time). Edge selection under the
//   max-neighbour cap is decided by IDs inside the artifact, so the local
//   order does not matter.
// * Per evaluation: the owned atoms' capped neighbour keys are forward-
//   communicated to their ghosts (cap width int64s per atom, as doubles:
//   exact below 2^53), then after every message-passing layer but the last
//   the owned atoms' node features (4 H values: x, then vec) are forward-
//   communicated. Energies are per atom (eatom: compute pe/atom works).
// * Gradient forces (conservative / gradient artifacts): backward layer by
//   layer; after every layer but the first, the ghost rows of the feature
//   gradients are reverse-communicated (summed into the owners). The forces
//   on ghost atoms are written to atom->f and LAMMPS's own reverse
//   communication adds them to the owners, hence `newton on` is required;
//   the virial is F.r over owned and ghost atoms (virial_fdotr_compute).
//   Direct-force artifacts: forces on owned atoms only, no virial.
// * All failures (artifact, metadata, input) become LAMMPS errors in one
//   place, PairOCP::guarded(), via error->all.
//
// Built three ways: into lmp_ocp (Debian LAMMPS, run-time registration via
// register_pair_ocp), as a LAMMPS plugin (ocp_plugin.cpp), and compiled into
// a LAMMPS source tree (the PairStyle line below; see patch_lammps.sh).
//
// This translation unit includes LAMMPS headers only; LibTorch is behind
// ocp_deploy/model.hpp (no torch types), so torch's fmt never meets LAMMPS's.
#ifdef PAIR_CLASS
// clang-format off
PairStyle(ocp,PairOCP);
// clang-format on
#else

// An include guard, not #pragma once: LAMMPS includes its style headers
// twice, with and without PAIR_CLASS.
#ifndef OCP_DEPLOY_PAIR_OCP_H
#define OCP_DEPLOY_PAIR_OCP_H

#include <memory>
#include <string>
#include <vector>

#include "ocp_deploy/domain.hpp"
#include "ocp_deploy/model.hpp"
#include "pair.h"

namespace LAMMPS_NS {

class PairOCP : public Pair {
 public:
  explicit PairOCP(class LAMMPS* lmp);
  ~PairOCP() override;

  void compute(int eflag, int vflag) override;
  void settings(int narg, char** arg) override;
  void coeff(int narg, char** arg) override;
  void init_style() override;
  double init_one(int i, int j) override;
  int pack_forward_comm(int n, int* list, double* buf, int pbc_flag, int* pbc) override;
  void unpack_forward_comm(int n, int first, double* buf) override;
  int pack_reverse_comm(int n, int first, double* buf) override;
  void unpack_reverse_comm(int n, int* list, double* buf) override;

  static Pair* creator(class LAMMPS* lmp);

 private:
  template <typename Body>
  void guarded(const char* where, Body&& body);

  // What `decomposition` asked for; which path runs is use_domain_.
  enum class Decomposition { Auto, Whole, Domain };
  // What the pack / unpack calls move: capped neighbour keys (forward),
  // node features (forward), node-feature gradients (reverse).
  enum class CommMode { Keys, Features, Gradients };

  void allocate();
  void choose_decomposition(Decomposition requested);
  [[noreturn]] void refuse_several_ranks(const std::string& why);
  void build_frame();
  void apply(const ocp_deploy::Result& result);
  void compute_domain();
  void build_domain_candidates();
  void domain_forward_comm(CommMode mode);
  void domain_reverse_comm();

  std::unique_ptr<ocp_deploy::Model> model_;
  std::string artifact_;
  double cutoff_ = 0.0;
  std::vector<int> type_to_z_;    // index: LAMMPS type (1..ntypes)
  std::vector<int> type_to_tag_;  // OCP tag per type
  // order_[k]: local index of the atom with the k-th smallest ID (the
  // artifact's atom k); slot_[i]: the artifact's index of local atom i.
  std::vector<int> order_;
  std::vector<int> slot_;
  ocp_deploy::Frame frame_;
  bool warned_virial_ = false;

  // Domain path.
  bool use_domain_ = false;
  std::unique_ptr<ocp_deploy::Domain> domain_;
  CommMode comm_mode_ = CommMode::Features;
  bool logged_sizes_ = false;  // the setup's atom and edge counts, logged once per run
  std::vector<std::int64_t> domain_centre_;     // owned row i
  std::vector<std::int64_t> domain_neighbour_;  // owned or ghost row j
  std::vector<double> domain_energies_;         // per owned atom
  std::vector<double> domain_forces_;           // owned (direct) or all rows (gradient)
};

// Makes `pair_style ocp` available in this LAMMPS instance.
void register_pair_ocp(class LAMMPS* lmp);

}  // namespace LAMMPS_NS

#endif  // OCP_DEPLOY_PAIR_OCP_H
#endif  // PAIR_CLASS
