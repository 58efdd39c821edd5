// pair_ocp.cpp - see pair_ocp.h. LAMMPS headers only (plus the torch-free
// ocp_deploy/model.hpp). Every LAMMPS message is passed as std::string so that
// only the non-template Error / utils overloads are used (see fmt_shim).
#include "pair_ocp.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <sstream>

#include "atom.h"
#include "comm.h"
#include "domain.h"
#include "error.h"
#include "force.h"
#include "full_list_request.h"
#include "memory.h"
#include "neigh_list.h"
#include "neighbor.h"
#include "ocp_deploy/elements.hpp"
#include "pointers.h"
#include "update.h"
#include "utils.h"

namespace LAMMPS_NS {
namespace {

constexpr const char* kRequiredUnits = "metal";  // eV, Angstrom, ps, amu, K
// Ghost-minus-owner displacements are exact lattice vectors up to round-off;
// a fractional part larger than this means the ghost is not an image.
constexpr double kShiftTolerance = 1.0e-4;
// Relative tolerance of the optional `cutoff` keyword against the metadata.
constexpr double kCutoffTolerance = 1.0e-6;
// Longest OCP tag accepted in pair_coeff El:TAG (tags are 0, 1, 2 in OC20).
constexpr std::size_t kMaxTagDigits = 6;
// Atom::map_style value meaning "no atom map" (0 in every release).
constexpr int kMapNone = 0;

std::string str(const char* text) { return std::string(text); }

// Why this artifact cannot be split across MPI ranks, by model kind.
std::string single_rank_reason(const std::string& model_kind) {
  if (model_kind == "painn")
    return "PaiNN passes node features along edges in every message-passing layer, so a rank "
           "would need its ghost atoms' features exchanged after each layer (and their "
           "gradients exchanged back), and the artifact is one call with no per-layer entry point";
  if (model_kind == "gemnet_oc")
    return "GemNet-OC's messages live on edges, triplets and quadruplets, so a rank would need "
           "edge features exchanged after every interaction block (or a ghost shell of the whole "
           "receptive field), and the artifact is one call with no per-block entry point";
  return "the artifact evaluates the whole periodic system in one call and has no entry point "
         "for exchanging intermediate features between ranks";
}

}  // namespace

PairOCP::PairOCP(LAMMPS* lmp) : Pair(lmp) {
  single_enable = 0;
  restartinfo = 0;
  one_coeff = 1;
  manybody_flag = 1;
  no_virial_fdotr_compute = 1;  // virial from the artifact's stress
  centroidstressflag = CENTROID_NOTAVAIL;
}

PairOCP::~PairOCP() {
  if (allocated) {
    memory->destroy(setflag);
    memory->destroy(cutsq);
  }
}

Pair* PairOCP::creator(LAMMPS* lmp) { return new PairOCP(lmp); }

void register_pair_ocp(LAMMPS* lmp) { (*lmp->force->pair_map)["ocp"] = &PairOCP::creator; }

// The one place where exceptions become LAMMPS errors (error->all prints
// "ERROR: ..." and exits with status 1, no crash).
template <typename Body>
void PairOCP::guarded(const char* where, Body&& body) {
  try {
    body();
  } catch (const std::exception& e) {
    error->all(FLERR, str("pair ocp (") + where + "): " + e.what());
  }
}

void PairOCP::allocate() {
  allocated = 1;
  const int n = atom->ntypes;
  memory->create(setflag, n + 1, n + 1, "pair:setflag");
  memory->create(cutsq, n + 1, n + 1, "pair:cutsq");
  for (int i = 1; i <= n; ++i)
    for (int j = 1; j <= n; ++j) setflag[i][j] = 0;
  type_to_z_.assign(n + 1, 0);
  type_to_tag_.assign(n + 1, 0);
}

// pair_style ocp ARTIFACT [cutoff RC] [device cpu|cuda] [threads T]
void PairOCP::settings(int narg, char** arg) {
  if (narg < 1 || narg % 2 != 1)
    error->all(FLERR, str("Illegal pair_style ocp command: expected "
                          "pair_style ocp ARTIFACT [cutoff RC] [device cpu|cuda] [threads T]"));
  artifact_ = arg[0];
  double expected_cutoff = -1.0;
  std::string device = "cpu";
  int threads = 0;
  for (int k = 1; k < narg; k += 2) {
    const std::string key = arg[k];
    if (key == "cutoff") expected_cutoff = utils::numeric(FLERR, arg[k + 1], false, lmp);
    else if (key == "device") device = arg[k + 1];
    else if (key == "threads") threads = utils::inumeric(FLERR, arg[k + 1], false, lmp);
    else error->all(FLERR, "Illegal pair_style ocp keyword '" + key + "'");
  }
  guarded("loading artifact", [&]() {
    ocp_deploy::set_num_threads(threads);
    model_ = std::make_unique<ocp_deploy::Model>(artifact_, ocp_deploy::parse_device(device));
  });
  const ocp_deploy::Metadata& meta = model_->metadata();
  cutoff_ = meta.cutoff;
  if (expected_cutoff >= 0.0 &&
      std::fabs(expected_cutoff - cutoff_) > kCutoffTolerance * std::max(1.0, cutoff_)) {
    std::ostringstream message;
    message << "pair ocp: cutoff mismatch: pair_style asks for " << expected_cutoff
            << " Angstrom but the artifact's cutoff is " << cutoff_ << " Angstrom";
    error->all(FLERR, message.str());
  }
  if (comm->me == 0) {
    utils::logmesg(lmp, "pair ocp: artifact " + artifact_ + "\n" + meta.summary() + "\n" +
                            "  forward_candidates " +
                            (model_->has_forward_candidates() ? "yes (LAMMPS neighbour list)"
                                                              : "no (artifact builds its graph)") +
                            "\n");
  }
  check_single_rank();
  if (meta.forces == "direct")
    error->warning(FLERR, str("pair ocp: artifact forces are direct (not -dE/dx): NVE will not "
                              "conserve energy; export with --forces conservative for MD"));
}

// pair_coeff * * El1 El2 ... ElN
void PairOCP::coeff(int narg, char** arg) {
  if (!model_) error->all(FLERR, str("pair ocp: pair_style ocp ARTIFACT must come first"));
  if (!allocated) allocate();
  const int ntypes = atom->ntypes;
  if (narg != 2 + ntypes || std::strcmp(arg[0], "*") != 0 || std::strcmp(arg[1], "*") != 0)
    error->all(FLERR, "Incorrect args for pair coefficients: pair ocp needs pair_coeff * * "
                      "followed by one element symbol per atom type (" +
                          std::to_string(ntypes) + " types)");
  const ocp_deploy::Metadata& meta = model_->metadata();
  for (int type = 1; type <= ntypes; ++type) {
    // "El" or "El:TAG" (OCP tag of the atoms of this type: 0 subsurface,
    // 1 surface, 2 adsorbate; default 0).
    const std::string label = arg[1 + type];
    const std::size_t colon = label.find(':');
    const std::string symbol = label.substr(0, colon);
    int tag = 0;
    if (colon != std::string::npos) {
      const std::string tag_text = label.substr(colon + 1);
      if (tag_text.empty() || tag_text.size() > kMaxTagDigits ||
          tag_text.find_first_not_of("0123456789") != std::string::npos)
        error->all(FLERR, "pair ocp: bad tag in '" + label + "' (expected El or El:TAG, TAG a non-negative integer)");
      tag = std::stoi(tag_text);
    }
    const int z = ocp_deploy::atomic_number(symbol);
    if (z == 0) error->all(FLERR, "pair ocp: unknown element '" + symbol + "' for type " + std::to_string(type));
    if (z < meta.min_atomic_number || z > meta.max_atomic_number)
      error->all(FLERR, "pair ocp: element mismatch: type " + std::to_string(type) + " is " +
                            symbol + " (Z=" + std::to_string(z) +
                            ") but the artifact supports atomic numbers " +
                            std::to_string(meta.min_atomic_number) + ".." +
                            std::to_string(meta.max_atomic_number));
    type_to_z_[type] = z;
    type_to_tag_[type] = tag;
  }
  for (int i = 1; i <= ntypes; ++i)
    for (int j = i; j <= ntypes; ++j) setflag[i][j] = 1;
}

void PairOCP::init_style() {
  if (!model_) error->all(FLERR, str("pair ocp: no artifact loaded"));
  if (std::strcmp(update->unit_style, kRequiredUnits) != 0)
    error->all(FLERR, "pair ocp requires 'units metal' (the artifact works in eV and Angstrom); "
                      "this input uses 'units " + std::string(update->unit_style) + "'");
  if (atom->tag_enable == 0) error->all(FLERR, str("pair ocp requires atom IDs"));
  if (atom->map_style == kMapNone)
    error->all(FLERR, str("pair ocp requires an atom map: add 'atom_modify map array' before "
                          "read_data / create_box"));
  const int ntypes = atom->ntypes;
  for (int i = 1; i <= ntypes; ++i)
    for (int j = i; j <= ntypes; ++j)
      if (!setflag[i][j])
        error->all(FLERR, str("pair ocp: missing pair_coeff * * El1 ... ElN"));
  if (comm->me == 0)
    utils::logmesg(lmp, std::string("pair ocp: newton_pair ") + (force->newton_pair ? "on" : "off") +
                            " (both supported: all forces land on owned atoms, ghosts get none)\n");
  ocp_lammps::request_full_list(this, instance_me, neighbor, error);
}

// Exact results on several ranks need the model's intermediate features
// exchanged between ranks; refuse rather than return a silently wrong number.
void PairOCP::check_single_rank() {
  if (comm->nprocs == 1) return;
  error->all(FLERR, "pair ocp: runs on 1 MPI rank only, this run has " +
                        std::to_string(comm->nprocs) + ": " +
                        single_rank_reason(model_->metadata().model_kind) +
                        "; use 1 rank with 'pair_style ocp ... threads T' for parallelism");
}

double PairOCP::init_one(int, int) {
  // The neighbour list (and ghost cutoff) covers the model's cutoff + skin.
  return cutoff_;
}

void PairOCP::build_frame() {
  const int nlocal = atom->nlocal;
  double** x = atom->x;
  const int* type = atom->type;
  const tagint* tag = atom->tag;
  // Atom-ID order: the model's result depends on the atom order under the
  // max-neighbour cap, and LAMMPS reorders its local arrays at will.
  order_.resize(nlocal);
  std::iota(order_.begin(), order_.end(), 0);
  std::sort(order_.begin(), order_.end(), [tag](int a, int b) { return tag[a] < tag[b]; });
  slot_.resize(nlocal);
  for (int k = 0; k < nlocal; ++k) slot_[order_[k]] = k;
  frame_.positions.resize(3 * static_cast<std::size_t>(nlocal));
  frame_.atomic_numbers.resize(nlocal);
  frame_.tags.resize(nlocal);
  for (int k = 0; k < nlocal; ++k) {
    const int i = order_[k];
    for (int d = 0; d < 3; ++d) frame_.positions[3 * k + d] = x[i][d];
    frame_.atomic_numbers[k] = type_to_z_[type[i]];
    frame_.tags[k] = type_to_tag_[type[i]];
  }
  // LAMMPS box: a = (xprd, 0, 0), b = (xy, yprd, 0), c = (xz, yz, zprd).
  frame_.cell = {domain->xprd, 0.0, 0.0, domain->xy, domain->yprd, 0.0,
                 domain->xz,   domain->yz, domain->zprd};
  for (int d = 0; d < 3; ++d) frame_.pbc[d] = domain->periodicity[d] != 0;
}

void PairOCP::build_candidates() {
  candidates_.clear();
  const int nlocal = atom->nlocal;
  double** x = atom->x;
  const tagint* tag = atom->tag;
  const double cutoff_sq = cutoff_ * cutoff_;
  const double xprd = domain->xprd, yprd = domain->yprd, zprd = domain->zprd;
  const double xy = domain->xy, xz = domain->xz, yz = domain->yz;
  for (int ii = 0; ii < list->inum; ++ii) {
    const int i = list->ilist[ii];
    const int* neighbours = list->firstneigh[i];
    for (int jj = 0; jj < list->numneigh[i]; ++jj) {
      const int j = neighbours[jj] & NEIGHMASK;
      const double dx = x[j][0] - x[i][0], dy = x[j][1] - x[i][1], dz = x[j][2] - x[i][2];
      if (dx * dx + dy * dy + dz * dz > cutoff_sq) continue;
      const int owner = j < nlocal ? j : atom->map(tag[j]);
      if (owner < 0 || owner >= nlocal)
        throw ocp_deploy::Error("ghost atom " + std::to_string(tag[j]) + " has no owned copy");
      // x[j] - x[owner] = n0 a + n1 b + n2 c; solve the triangular system.
      const double gx = x[j][0] - x[owner][0], gy = x[j][1] - x[owner][1], gz = x[j][2] - x[owner][2];
      const double n2 = gz / zprd;
      const double n1 = (gy - n2 * yz) / yprd;
      const double n0 = (gx - n1 * xy - n2 * xz) / xprd;
      const double fractional[3] = {n0, n1, n2};
      for (int d = 0; d < 3; ++d) {
        const double shift = std::nearbyint(fractional[d]);
        if (std::fabs(fractional[d] - shift) > kShiftTolerance ||
            (shift != 0.0 && !domain->periodicity[d]))
          throw ocp_deploy::Error("ghost atom " + std::to_string(tag[j]) +
                                  " is not a periodic image of its owner");
        candidates_.offsets.push_back(static_cast<std::int64_t>(shift));
      }
      candidates_.neighbour.push_back(slot_[owner]);
      candidates_.centre.push_back(slot_[i]);
    }
  }
}

// A full list holds every owned-owned pair in both directions; a half list
// holds it once. Guards the full-list request (on the 2021 API, a mirror of
// NeighRequest) at run time.
void PairOCP::check_list_is_full() const {
  const int nlocal = atom->nlocal;
  long below = 0, above = 0;
  for (int ii = 0; ii < list->inum; ++ii) {
    const int i = list->ilist[ii];
    for (int jj = 0; jj < list->numneigh[i]; ++jj) {
      const int j = list->firstneigh[i][jj] & NEIGHMASK;
      if (j < nlocal) (j < i ? below : above)++;
    }
  }
  if (below != above)
    throw ocp_deploy::Error("LAMMPS returned a half neighbour list where a full one was requested");
}

void PairOCP::apply(const ocp_deploy::Result& result) {
  const int nlocal = atom->nlocal;
  double** f = atom->f;
  for (int k = 0; k < nlocal; ++k)
    for (int d = 0; d < 3; ++d) f[order_[k]][d] += result.forces[3 * k + d];
  if (eflag_global) eng_vdwl += result.energy;
  if (vflag_global) {
    if (result.has_stress) {
      // ASE stress = (1/V) dE/dstrain = -virial / V  ->  virial = -V * stress.
      const double volume = domain->xprd * domain->yprd * domain->zprd;
      const auto& s = result.stress;  // row-major 3x3
      virial[0] -= volume * s[0];     // xx
      virial[1] -= volume * s[4];     // yy
      virial[2] -= volume * s[8];     // zz
      virial[3] -= volume * s[1];     // xy
      virial[4] -= volume * s[2];     // xz
      virial[5] -= volume * s[5];     // yz
    } else if (!warned_virial_) {
      warned_virial_ = true;
      error->warning(FLERR, str("pair ocp: the artifact gives no stress (needs forces=conservative "
                                "and a fully periodic box): pressure lacks the virial"));
    }
  }
}

void PairOCP::compute(int eflag, int vflag) {
  ev_init(eflag, vflag);
  if (eflag_atom || vflag_atom)
    error->all(FLERR, str("pair ocp: per-atom energy / virial are not available"));
  guarded("compute", [&]() {
    build_frame();
    if (model_->has_forward_candidates()) {
      check_list_is_full();
      build_candidates();
      apply(model_->compute(frame_, candidates_));
    } else {
      apply(model_->compute(frame_));
    }
  });
}

}  // namespace LAMMPS_NS
