// ocp_deploy/model.hpp - load and evaluate an ocp-deploy TorchScript artifact.
//
// This header deliberately exposes no torch (or LAMMPS) type: the LibTorch
// code lives behind a pimpl in src/model.cpp (and src/domain.cpp), so translation units that
// include LAMMPS headers (which drag in their own fmt) never see torch headers.
//
// Artifact contract (format "ocp-deploy", format_version 1):
//   forward(positions (N,3) float, atomic_numbers (N,) int64, cell (3,3) float
//           [rows are lattice vectors, Angstrom], pbc (3,) bool, tags (N,) int64)
//     -> Dict[str, Tensor]{"energy" (), "forces" (N,3), ["stress" (3,3)]}
//   optional forward_candidates(..., candidate_edge_index (2,E) int64
//           [row 0 neighbour j, row 1 centre i], candidate_cell_offsets (E,3)
//           int64 [vec = pos[j] - pos[i] + offsets @ cell]) -> same outputs.
//   optional domain_* methods (PaiNN): one MPI rank's share of a domain
//           decomposition, layer by layer (see ocp_deploy/domain.hpp).
//   extra file "metadata.json" (see Metadata).
// Units: eV, Angstrom, eV/Angstrom, eV/Angstrom^3 (ASE stress sign).
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace ocp_deploy {

// Every failure of this library (bad file, bad metadata, bad input, an error
// raised inside the artifact) is reported as this exception, with a
// one-line message.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

inline constexpr const char* kFormatName = "ocp-deploy";
inline constexpr int kFormatVersion = 1;
inline constexpr const char* kMetadataFile = "metadata.json";

// Parsed metadata.json. Unknown keys are kept verbatim in `json`.
struct Metadata {
  std::string format;
  int format_version = 0;
  std::string model_kind;        // "painn" | "gemnet_oc" | ...
  double cutoff = 0.0;           // Angstrom, largest graph cutoff
  long max_neighbors = 0;
  std::string forces;            // "direct" | "gradient" | "conservative"
  std::vector<std::string> outputs;
  std::string dtype;             // "float32" | "float64"
  int min_atomic_number = 1;
  int max_atomic_number = 0;
  std::string exporter_version;
  std::string torch_version;
  std::string checkpoint_sha256;
  std::string json;              // the raw file

  // True when forces are -dE/dx (so NVE conserves energy).
  bool forces_are_gradients() const { return forces == "conservative" || forces == "gradient"; }
  bool provides_stress() const { return forces == "conservative"; }
  // Multi-line human readable summary.
  std::string summary() const;
};

// Parses and validates metadata text (format, version, required keys).
// Throws Error on anything a host cannot trust.
Metadata parse_metadata(const std::string& json_text);

// One structure, in the artifact's units. Row-major arrays.
struct Frame {
  std::vector<double> positions;        // N*3, Angstrom, need not be wrapped
  std::vector<std::int64_t> atomic_numbers;  // N
  std::vector<std::int64_t> tags;       // N (0 subsurface, 1 surface, 2 adsorbate)
  std::array<double, 9> cell{};         // rows are lattice vectors, Angstrom
  std::array<bool, 3> pbc{{false, false, false}};
  std::size_t size() const { return atomic_numbers.size(); }
};

// Neighbour candidates found by the host (a superset of all pairs within the
// cutoff, full list, any order), in local atom indices.
struct Candidates {
  std::vector<std::int64_t> neighbour;  // E, row 0 of edge_index (j)
  std::vector<std::int64_t> centre;     // E, row 1 of edge_index (i)
  std::vector<std::int64_t> offsets;    // E*3 integer image shifts of j
  std::size_t size() const { return centre.size(); }
  void clear() { neighbour.clear(); centre.clear(); offsets.clear(); }
};

struct Result {
  double energy = 0.0;                  // eV
  std::vector<double> forces;           // N*3, eV/Angstrom
  bool has_stress = false;
  std::array<double, 9> stress{};       // eV/Angstrom^3, ASE sign, row-major
};

enum class Device { CPU, CUDA };
Device parse_device(const std::string& name);  // "cpu" | "cuda"; throws Error

// Sets LibTorch intra-op threads (<= 0 leaves the default).
void set_num_threads(int threads);

class Model {
 public:
  // Loads the artifact, reads and validates metadata.json. Throws Error
  // (missing file, not TorchScript, missing/foreign metadata, CUDA requested
  // but unavailable).
  Model(const std::string& path, Device device = Device::CPU);
  ~Model();
  Model(Model&&) noexcept;
  Model& operator=(Model&&) noexcept;
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  const Metadata& metadata() const;
  bool has_forward_candidates() const;
  // True when the artifact has the domain-decomposition methods
  // (domain_layout(), ...; PaiNN): see ocp_deploy/domain.hpp.
  bool has_domain() const;

  // Throws Error if the frame is inconsistent (sizes, elements outside the
  // model range, non-finite positions) before calling the artifact.
  void validate(const Frame& frame) const;

  // forward(): the artifact builds its own neighbour graph.
  Result compute(const Frame& frame);
  // forward_candidates() when the artifact has it, else forward().
  Result compute(const Frame& frame, const Candidates& candidates);

 private:
  friend class Domain;  // runs the artifact's domain_* methods on this module
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ocp_deploy
