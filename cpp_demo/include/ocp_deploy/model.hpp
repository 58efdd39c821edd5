// ocp_deploy/model.hpp - load and evaluate an ocp-deploy artifact: a
// TorchScript module (.pt) or an AOTInductor package (.pt2), both through
// LibTorch.
//
// This header deliberately exposes no torch (or LAMMPS) type: the LibTorch
// code lives behind a pimpl in src/model.cpp (and src/domain.cpp), so translation units that
// include LAMMPS headers (which drag in their own fmt) never see torch headers.
//
// Artifact contract (format "ocp-deploy", format_version 1). Which of the two
// a file is, is read from the zip's member names (both are zip archives).
// * TorchScript (.pt):
//   forward(positions (N,3) float, atomic_numbers (N,) int64, cell (3,3) float
//           [rows are lattice vectors, Angstrom], pbc (3,) bool, tags (N,) int64)
//     -> Dict[str, Tensor]{"energy" (), "forces" (N,3), ["stress" (3,3)]}
//   optional domain_* methods (PaiNN): one MPI rank's share of a domain
//           decomposition, layer by layer (see ocp_deploy/domain.hpp).
//   extra file "metadata.json" (see Metadata).
// * AOTInductor package (.pt2): one compiled program of a batch of B
//   structures, inputs in this order: positions (N,3) float, atomic_numbers
//   (N,) int64, cell (B,3,3) float, pbc (B,3) bool, tags (N,) int64, natoms
//   (B,) int64; outputs in metadata "outputs" order: energy (B,), forces
//   (N,3)[, stress (B,3,3)]. The metadata record (same keys as metadata.json,
//   plus "compiled_for": "cpu" | "cuda") is JSON text under
//   "ocpdeploy_metadata" in the package's AOTInductor metadata. The program
//   does not check its inputs: Model::validate() does, before every call.
//   That program is the package's model "model"; a PaiNN package exported
//   with --domain also holds the domain programs (ocp_deploy/domain.hpp),
//   named in the record's "domain".
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
// Key of the metadata record in an AOTInductor package's metadata.
inline constexpr const char* kPackageMetadataKey = "ocpdeploy_metadata";

// What an artifact file holds (told from the zip's member names).
enum class ArtifactFormat { TorchScript, AOTInductor };
// "torchscript" | "aoti" (the export-model --format names).
const char* format_name(ArtifactFormat format);

// Parsed metadata.json. Unknown keys are kept verbatim in `json`.
struct Metadata {
  std::string format;
  int format_version = 0;
  std::string model_kind;        // "painn" | "gemnet_oc" | ...
  double cutoff = 0.0;           // Angstrom, largest graph cutoff
  long max_neighbors = 0;
  std::string forces;            // "direct" | "gradient" | "conservative"
  std::vector<std::string> outputs;
  std::vector<std::string> inputs;  // program input names (AOTInductor packages)
  std::string compiled_for;      // AOTInductor packages: "cpu" | "cuda"; else empty
  std::string dtype;             // "float32" | "float64"
  int min_atomic_number = 1;
  int max_atomic_number = 0;
  std::string exporter_version;
  std::string torch_version;
  std::string checkpoint_sha256;
  // AOTInductor packages exported with --domain (PaiNN): the names of the
  // domain-decomposition programs in the package, [layers, hidden channels,
  // cap width] and the force convention (scale, offset); empty otherwise.
  std::vector<std::string> domain_programs;
  std::vector<long> domain_layout;
  std::vector<double> domain_force_convention;
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

// An AOTInductor package's compiled code runs in OpenMP parallel regions, out
// of which an error it raises cannot be caught (the C++ runtime terminates
// the process). While a package runs, the core turns that into one line on
// stderr, this prefix followed by the error's first line, and exit status 1
// (instead of abort()'s backtrace). Hosts set their own prefix
// ("md_host: error: ", "ERROR: pair ocp: ").
void set_fatal_error_prefix(const std::string& prefix);

class Model {
 public:
  // Loads the artifact (TorchScript or AOTInductor package, told from the
  // file), reads and validates its metadata. Throws Error (missing file,
  // neither format, missing/foreign metadata, CUDA requested but
  // unavailable, a package compiled for another device).
  Model(const std::string& path, Device device = Device::CPU);
  ~Model();
  Model(Model&&) noexcept;
  Model& operator=(Model&&) noexcept;
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  const Metadata& metadata() const;
  ArtifactFormat format() const;
  // True when the artifact has the domain-decomposition methods
  // (domain_layout(), ...; PaiNN TorchScript artifacts) or programs (PaiNN
  // AOTInductor packages exported with --domain; listed in the metadata
  // record's "domain"): see ocp_deploy/domain.hpp.
  bool has_domain() const;

  // Throws Error if the frame is inconsistent (sizes, elements outside the
  // model range, non-finite positions) before calling the artifact.
  void validate(const Frame& frame) const;

  // The whole structure in one call (the artifact builds its own neighbour
  // graph): TorchScript forward(), or the package's program with B = 1.
  Result compute(const Frame& frame);

 private:
  friend class Domain;  // runs the artifact's domain_* methods on this module
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ocp_deploy
