// pair_ocp.cpp - see pair_ocp.h. LAMMPS headers only (plus the torch-free
// ocp_deploy/model.hpp). Every LAMMPS message is passed as std::string so that
// only the non-template Error / utils overloads are used (see fmt_shim).
#include "pair_ocp.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstdlib>
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
// Relative tolerance of the optional `cutoff` keyword against the metadata.
constexpr double kCutoffTolerance = 1.0e-6;
// Longest OCP tag accepted in pair_coeff El:TAG (tags are 0, 1, 2 in OC20).
constexpr std::size_t kMaxTagDigits = 6;
// Atom::map_style value meaning "no atom map" (0 in every release).
constexpr int kMapNone = 0;
// Domain path: candidate pairs are the neighbour-list pairs within the model
// cutoff plus this margin (A), a superset for the artifact's own test.
constexpr double kCandidateMargin = 1.0e-3;

std::string str(const char* text) { return std::string(text); }

// Why this artifact (it has no domain_* methods) cannot be split across MPI
// ranks, by model kind.
std::string single_rank_reason(const std::string& model_kind) {
  if (model_kind == "painn")
    return "PaiNN passes node features along edges in every message-passing layer, so a rank "
           "needs its ghost atoms' features exchanged after each layer, and this artifact has no "
           "per-layer entry points (domain_layout, ...); re-export it with the current "
           "export-model to run PaiNN on several ranks";
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
//                         [decomposition auto|whole|domain]
void PairOCP::settings(int narg, char** arg) {
  if (narg < 1 || narg % 2 != 1)
    error->all(FLERR, str("Illegal pair_style ocp command: expected pair_style ocp ARTIFACT "
                          "[cutoff RC] [device cpu|cuda] [threads T] [decomposition auto|whole|domain]"));
  domain_.reset();  // holds the previous artifact's module
  artifact_ = arg[0];
  double expected_cutoff = -1.0;
  std::string device = "cpu";
  int threads = 0;
  Decomposition decomposition = Decomposition::Auto;
  for (int k = 1; k < narg; k += 2) {
    const std::string key = arg[k];
    const std::string value = arg[k + 1];
    if (key == "cutoff") expected_cutoff = utils::numeric(FLERR, arg[k + 1], false, lmp);
    else if (key == "device") device = value;
    else if (key == "threads") threads = utils::inumeric(FLERR, arg[k + 1], false, lmp);
    else if (key == "decomposition") {
      if (value == "auto") decomposition = Decomposition::Auto;
      else if (value == "whole") decomposition = Decomposition::Whole;
      else if (value == "domain") decomposition = Decomposition::Domain;
      else error->all(FLERR, "Illegal pair_style ocp decomposition '" + value + "' (expected auto, whole or domain)");
    } else error->all(FLERR, "Illegal pair_style ocp keyword '" + key + "'");
  }
  guarded("loading artifact", [&]() {
    ocp_deploy::set_num_threads(threads);
    // LAMMPS's error line for a failure inside a package's compiled code.
    ocp_deploy::set_fatal_error_prefix("ERROR: pair ocp (compute): ");
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
                            "  artifact format   " + ocp_deploy::format_name(model_->format()) + "\n");
  }
  choose_decomposition(decomposition);
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
  logged_sizes_ = false;
  if (use_domain_) {
    // Forces on ghost atoms reach their owners only through LAMMPS's reverse
    // communication of forces, which newton_pair off does not do.
    if (!force->newton_pair)
      error->all(FLERR, str("pair ocp: the domain decomposition (several MPI ranks or 'decomposition "
                            "domain') requires 'newton on': ghost atoms carry force contributions "
                            "that LAMMPS adds to their owners; this input has newton_pair off"));
    if (comm->me == 0) utils::logmesg(lmp, str("pair ocp: newton_pair on (ghost forces summed into owners)\n"));
    // Only the domain path reads a neighbour list (its candidate pairs); the
    // whole-system call builds its graph inside the artifact.
    ocp_lammps::request_full_list(this, instance_me, neighbor, error);
  } else if (comm->me == 0) {
    utils::logmesg(lmp, std::string("pair ocp: newton_pair ") + (force->newton_pair ? "on" : "off") +
                            " (both supported: all forces land on owned atoms, ghosts get none)\n");
  }
}

// Whole system on 1 rank, or the artifact's domain_* methods on any number
// of ranks (see pair_ocp.h). Exact results on several ranks need the model's
// intermediate features exchanged between ranks: an artifact without the
// domain methods is refused rather than returning a silently wrong number.
void PairOCP::choose_decomposition(Decomposition requested) {
  const int ranks = comm->nprocs;
  use_domain_ = requested == Decomposition::Domain || (requested == Decomposition::Auto && ranks > 1);
  domain_.reset();
  no_virial_fdotr_compute = 1;  // whole path: virial from the artifact's stress
  comm_forward = comm_reverse = 0;
  if (!use_domain_) {
    if (ranks > 1)  // decomposition whole
      refuse_several_ranks("'decomposition whole' evaluates the whole periodic system in one call on one rank");
    return;
  }
  const std::string& kind = model_->metadata().model_kind;
  if (!model_->has_domain() && kind == "painn" && model_->format() == ocp_deploy::ArtifactFormat::AOTInductor)
    error->all(FLERR, "pair ocp: " + artifact_ + " is an AOTInductor package without the domain-decomposition "
                      "programs (it holds the whole-system program only), so it runs on 1 MPI rank without "
                      "'decomposition domain' (this run: " + std::to_string(ranks) + " rank(s)); to run on "
                      "several ranks, export it again with them (export-model CKPT --format aoti --domain) or "
                      "use the TorchScript artifact (export-model CKPT --format torchscript)");
  if (!model_->has_domain()) {
    if (ranks > 1) refuse_several_ranks(single_rank_reason(kind));
    error->all(FLERR, "pair ocp: 'decomposition domain' needs an artifact with domain-decomposition "
                      "methods (PaiNN exported by the current export-model); this " + kind +
                      " artifact has none: " + single_rank_reason(kind));
  }
  guarded("domain decomposition", [&]() { domain_ = std::make_unique<ocp_deploy::Domain>(*model_); });
  const int keys = domain_->cap_width();
  const int features = domain_->feature_width();
  comm_forward = std::max(keys, features);
  comm_reverse = features;
  // Gradient forces include ghost atoms' contributions: the virial is F.r
  // over owned and ghost atoms. Direct forces: no virial (warning).
  no_virial_fdotr_compute = domain_->gradient_forces() ? 0 : 1;
  if (comm->me == 0) {
    std::ostringstream message;
    message << "pair ocp: domain decomposition on " << ranks << " MPI rank(s): " << domain_->num_layers()
            << " message-passing layers, " << domain_->hidden_channels() << " channels, neighbour cap "
            << keys << "; per evaluation: forward communication of " << keys << " keys + "
            << domain_->num_layers() - 1 << " x " << features << " features per ghost atom";
    if (domain_->gradient_forces())
      message << ", reverse communication of " << domain_->num_layers() - 1 << " x " << features
              << " feature gradients";
    message << "\n";
    utils::logmesg(lmp, message.str());
  }
}

void PairOCP::refuse_several_ranks(const std::string& why) {
  error->all(FLERR, "pair ocp: runs on 1 MPI rank only, this run has " + std::to_string(comm->nprocs) +
                        ": " + why + "; use 1 rank with 'pair_style ocp ... threads T' for parallelism");
  std::abort();  // not reached: error->all exits (or throws in library use)
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
  if (use_domain_) {
    if (vflag_atom) error->all(FLERR, str("pair ocp: per-atom virial is not available"));
    try {
      compute_domain();
    } catch (const std::exception& e) {
      // A failure may hit one rank only while the others wait in a
      // communication: error->one aborts all of them.
      error->one(FLERR, str("pair ocp (compute, domain decomposition): ") + e.what());
    }
    return;
  }
  if (eflag_atom || vflag_atom)
    error->all(FLERR, str("pair ocp: per-atom energy / virial are not available with the whole-system "
                          "evaluation (per-atom energy: 'decomposition domain', PaiNN)"));
  guarded("compute", [&]() {
    build_frame();
    apply(model_->compute(frame_));
  });
}

// Candidate pairs of the domain path: owned centre i, neighbour j (owned or
// ghost row) within the cutoff (+ margin), straight from the full list.
void PairOCP::build_domain_candidates() {
  domain_centre_.clear();
  domain_neighbour_.clear();
  double** x = atom->x;
  const double reach = cutoff_ + kCandidateMargin;
  const double reach_sq = reach * reach;
  for (int ii = 0; ii < list->inum; ++ii) {
    const int i = list->ilist[ii];
    const int* neighbours = list->firstneigh[i];
    for (int jj = 0; jj < list->numneigh[i]; ++jj) {
      const int j = neighbours[jj] & NEIGHMASK;
      const double dx = x[j][0] - x[i][0], dy = x[j][1] - x[i][1], dz = x[j][2] - x[i][2];
      if (dx * dx + dy * dy + dz * dz > reach_sq) continue;
      domain_centre_.push_back(i);
      domain_neighbour_.push_back(j);
    }
  }
}

void PairOCP::domain_forward_comm(CommMode mode) {
  comm_mode_ = mode;
  ocp_lammps::forward_comm(comm, this);
}

void PairOCP::domain_reverse_comm() {
  comm_mode_ = CommMode::Gradients;
  ocp_lammps::reverse_comm(comm, this);
}

// One evaluation on this rank's owned + ghost atoms (see ocp_deploy/domain.hpp).
void PairOCP::compute_domain() {
  const int nlocal = atom->nlocal;
  const int nall = nlocal + atom->nghost;
  const tagint* tag = atom->tag;
  const int* type = atom->type;
  build_domain_candidates();
  std::vector<std::int64_t> ids(nall), numbers(nall);
  for (int i = 0; i < nall; ++i) {
    ids[i] = static_cast<std::int64_t>(tag[i]);
    numbers[i] = type_to_z_[type[i]];
  }
  const std::array<double, 9> cell = {domain->xprd, 0.0, 0.0, domain->xy, domain->yprd, 0.0,
                                      domain->xz,   domain->yz, domain->zprd};
  const std::array<bool, 3> pbc = {domain->periodicity[0] != 0, domain->periodicity[1] != 0,
                                   domain->periodicity[2] != 0};
  ocp_deploy::Domain& d = *domain_;
  d.set_atoms(nlocal, nall, nall ? atom->x[0] : nullptr, std::move(ids), std::move(numbers), cell, pbc,
              domain_centre_, domain_neighbour_);
  if (d.cap_width() > 0) {
    d.cap();
    domain_forward_comm(CommMode::Keys);
  }
  d.build();
  if (!logged_sizes_ && comm->me == 0) {
    logged_sizes_ = true;
    std::ostringstream message;
    message << "pair ocp: rank 0 at setup: " << nlocal << " owned atoms, " << nall - nlocal
            << " ghost atoms, of which " << d.num_active() - nlocal << " are edge sources; "
            << d.num_edges() << " edges\n";
    utils::logmesg(lmp, message.str());
  }
  const int layers = d.num_layers();
  for (int k = 0; k < layers; ++k) {
    d.layer(k);
    if (k + 1 < layers) domain_forward_comm(CommMode::Features);
  }
  d.readout(static_cast<std::int64_t>(atom->natoms), domain_energies_, domain_forces_);
  double** f = atom->f;
  if (d.gradient_forces()) {
    d.readout_backward();
    for (int k = layers - 1; k >= 0; --k) {
      d.layer_backward(k);
      if (k > 0) domain_reverse_comm();
    }
    d.gradient_forces_on(domain_forces_);
    for (int i = 0; i < nall; ++i)
      for (int c = 0; c < 3; ++c) f[i][c] += domain_forces_[3 * static_cast<std::size_t>(i) + c];
  } else {
    for (int i = 0; i < nlocal; ++i)
      for (int c = 0; c < 3; ++c) f[i][c] += domain_forces_[3 * static_cast<std::size_t>(i) + c];
  }
  if (eflag_global)
    for (int i = 0; i < nlocal; ++i) eng_vdwl += domain_energies_[i];
  if (eflag_atom)
    for (int i = 0; i < nlocal; ++i) eatom[i] += domain_energies_[i];
  if (vflag_fdotr) {
    virial_fdotr_compute();
  } else if (vflag_global && !warned_virial_) {
    warned_virial_ = true;
    error->warning(FLERR, str("pair ocp: direct forces give no virial: pressure lacks the virial"));
  }
}

// Forward communication: capped keys (cap width int64s as doubles, exact
// below 2^53) or node features (4 H doubles) of owned atoms to their ghosts.
int PairOCP::pack_forward_comm(int n, int* list, double* buf, int, int*) {
  int m = 0;
  if (comm_mode_ == CommMode::Keys) {
    const std::size_t width = domain_->cap_width();
    const std::int64_t* keys = domain_->capped_keys();
    for (int k = 0; k < n; ++k) {
      const std::int64_t* row = keys + width * list[k];
      for (std::size_t w = 0; w < width; ++w) buf[m++] = static_cast<double>(row[w]);
    }
  } else {
    const std::size_t width = domain_->feature_width();
    const double* features = domain_->features();
    for (int k = 0; k < n; ++k) {
      const double* row = features + width * list[k];
      for (std::size_t w = 0; w < width; ++w) buf[m++] = row[w];
    }
  }
  return m;
}

void PairOCP::unpack_forward_comm(int n, int first, double* buf) {
  std::size_t m = 0;
  if (comm_mode_ == CommMode::Keys) {
    const std::size_t width = domain_->cap_width();
    std::int64_t* keys = domain_->capped_keys() + width * first;
    for (std::size_t v = 0; v < width * n; ++v) keys[v] = static_cast<std::int64_t>(buf[m++]);
  } else {
    const std::size_t width = domain_->feature_width();
    double* features = domain_->features() + width * first;
    for (std::size_t v = 0; v < width * n; ++v) features[v] = buf[m++];
  }
}

// Reverse communication: feature gradients of ghost rows, summed into the
// rows they came from (owned atoms, or ghosts that pass them on further).
int PairOCP::pack_reverse_comm(int n, int first, double* buf) {
  const std::size_t width = domain_->feature_width();
  const double* gradients = domain_->gradients() + width * first;
  int m = 0;
  for (std::size_t v = 0; v < width * n; ++v) buf[m++] = gradients[v];
  return m;
}

void PairOCP::unpack_reverse_comm(int n, int* list, double* buf) {
  const std::size_t width = domain_->feature_width();
  double* gradients = domain_->gradients();
  std::size_t m = 0;
  for (int k = 0; k < n; ++k) {
    double* row = gradients + width * list[k];
    for (std::size_t w = 0; w < width; ++w) row[w] += buf[m++];
  }
}

}  // namespace LAMMPS_NS
