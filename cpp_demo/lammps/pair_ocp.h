// pair_ocp.h - LAMMPS pair style "ocp" evaluating an ocp-deploy TorchScript
// artifact, registered at run time (the Debian LAMMPS has no PLUGIN package).
//
//   units metal
//   atom_modify map array            # ghosts are mapped to their owners
//   read_data ...
//   pair_style ocp ARTIFACT [cutoff RC] [device cpu|cuda] [threads T]
//   pair_coeff * * El1 El2 ... ElN   # one element symbol per atom type;
//                                    # El:TAG also sets the OCP tag of that type
//                                    # (0 subsurface, 1 surface, 2 adsorbate;
//                                    # default 0), e.g. Cu:0 Cu:1 O:2
//
// Design (single MPI rank):
// * A FULL neighbour list is requested. For every owned atom i and every
//   neighbour j within the model cutoff, j (owned or ghost) is mapped to its
//   owner via atom->map(tag[j]); the integer image shift is recovered from
//   x[j] - x[owner] and the box. The list (owner j, i, shift) is the
//   candidate superset the artifact's forward_candidates() expects; artifacts
//   without it fall back to forward(), which builds its own graph.
// * The artifact returns the total energy and the forces on all owned atoms
//   (periodic images included), so no force is written to ghost atoms. This
//   is correct for both `newton on` and `newton off`: with newton on, the
//   reverse communication adds the (zero) ghost forces.
// * The global virial comes from the artifact's stress (conservative
//   artifacts, fully periodic box): virial = -V * stress. Per-atom energies
//   and virials are not available.
// * All failures (artifact, metadata, input) become LAMMPS errors in one
//   place, PairOCP::guarded(), via error->all.
//
// This translation unit includes LAMMPS headers only; LibTorch is behind
// ocp_deploy/model.hpp (no torch types), so torch's fmt never meets LAMMPS's.
#pragma once

#include <memory>
#include <string>
#include <vector>

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

  static Pair* creator(class LAMMPS* lmp);

 private:
  template <typename Body>
  void guarded(const char* where, Body&& body);

  void allocate();
  void request_full_list();
  void build_frame();
  void build_candidates();
  void check_list_is_full() const;
  void apply(const ocp_deploy::Result& result);

  std::unique_ptr<ocp_deploy::Model> model_;
  std::string artifact_;
  double cutoff_ = 0.0;
  std::vector<int> type_to_z_;    // index: LAMMPS type (1..ntypes)
  std::vector<int> type_to_tag_;  // OCP tag per type
  ocp_deploy::Frame frame_;
  ocp_deploy::Candidates candidates_;
  bool warned_virial_ = false;
};

// Makes `pair_style ocp` available in this LAMMPS instance.
void register_pair_ocp(class LAMMPS* lmp);

}  // namespace LAMMPS_NS
