// Unit test of the torch-free parts of ocp_deploy_core (ctest; enable with
// -DOCP_DEPLOY_BUILD_TESTS=ON). No test framework: failures print and count.
#include <cmath>
#include <cstdio>
#include <fstream>
#include <string>

#include "ocp_deploy/elements.hpp"
#include "ocp_deploy/extxyz.hpp"
#include "ocp_deploy/md.hpp"
#include "ocp_deploy/model.hpp"
#include "ocp_deploy/units.hpp"

namespace {

int failures = 0;

void check(bool condition, const std::string& what) {
  if (!condition) {
    std::fprintf(stderr, "FAIL: %s\n", what.c_str());
    ++failures;
  }
}

template <typename F>
void check_throws(F&& body, const std::string& fragment, const std::string& what) {
  try {
    body();
    check(false, what + " (no exception)");
  } catch (const ocp_deploy::Error& e) {
    check(std::string(e.what()).find(fragment) != std::string::npos,
          what + " (message: " + e.what() + ")");
  }
}

const char* kMetadata =
    R"({"format": "ocp-deploy", "format_version": 1, "model_kind": "painn", "cutoff": 6.0,
        "max_neighbors": 50, "forces": "conservative", "outputs": ["energy", "forces", "stress"],
        "dtype": "float32", "min_atomic_number": 1, "max_atomic_number": 83,
        "units": {"energy": "eV", "length": "Angstrom"}, "nested": {"a": [1, 2, {"b": null}]},
        "escaped": "tab\tquote\" \u00e9"})";

}  // namespace

int main() {
  using namespace ocp_deploy;
  // Units: amu (A/fs)^2 = 103.6427 eV.
  check(std::fabs(units::kMassVelocitySquaredToEnergy - 103.642697) < 1e-5, "mvv2e");
  check(atomic_number("Cu") == 29 && element_symbol(8) == "O" && atomic_number("Xx") == 0, "elements");
  check(std::fabs(atomic_mass(29) - 63.546) < 1e-9, "Cu mass");

  Metadata meta = parse_metadata(kMetadata);
  check(meta.cutoff == 6.0 && meta.max_atomic_number == 83 && meta.outputs.size() == 3, "metadata fields");
  check(meta.provides_stress() && meta.forces_are_gradients(), "metadata forces");
  check(meta.compiled_for.empty() && meta.inputs.empty(), "metadata without package keys");
  // An AOTInductor package's record: its program inputs and device.
  Metadata package = parse_metadata(std::string(kMetadata).insert(
      1, R"("compiled_for": "cuda", "inputs": ["positions", "atomic_numbers"], )"));
  check(package.compiled_for == "cuda" && package.inputs.size() == 2 && package.inputs[1] == "atomic_numbers",
        "package metadata keys");
  check(std::string(format_name(ArtifactFormat::AOTInductor)) == "aoti", "format name");
  std::string text(kMetadata);
  check_throws([&] { parse_metadata(""); }, "no metadata.json", "missing metadata");
  check_throws([&] { parse_metadata("{"); }, "not valid JSON", "malformed json");
  check_throws([&] { parse_metadata(R"({"format": "x", "format_version": 1})"); }, "expected \"ocp-deploy\"", "format");
  std::string v2 = text;
  v2.replace(v2.find("\"format_version\": 1"), 19, "\"format_version\": 2");
  check_throws([&] { parse_metadata(v2); }, "format_version is 2", "format version");
  std::string no_cutoff = text;
  no_cutoff.replace(no_cutoff.find("\"cutoff\""), 8, "\"cutoff_\"");
  check_throws([&] { parse_metadata(no_cutoff); }, "\"cutoff\"", "missing key");

  const std::string path = "core_test.extxyz";
  std::ofstream(path) << "2\nLattice=\"4 0 0 0 4 0 0 0 4\" Properties=species:S:1:pos:R:3:tags:I:1 pbc=\"T T F\"\n"
                      << "Cu 0 0 0 1\nO 1 1 1 2\n";
  XyzStructure xyz = read_extxyz(path);
  check(xyz.frame.size() == 2 && xyz.frame.atomic_numbers[1] == 8 && xyz.frame.tags[1] == 2, "extxyz atoms");
  check(xyz.frame.pbc[0] && !xyz.frame.pbc[2] && xyz.frame.cell[4] == 4.0, "extxyz cell/pbc");
  std::ofstream(path) << "2\n\nCu 0 0 0\n";
  check_throws([&] { read_extxyz(path); }, ":4: file ends after 1 of 2 atoms", "truncated extxyz");
  std::remove(path.c_str());

  std::vector<double> masses(10, 63.546);
  auto velocities = maxwell_boltzmann(masses, 300.0, 1);
  check(std::fabs(temperature(kinetic_energy(velocities, masses), masses.size()) - 300.0) < 1e-9, "MB temperature");
  check(std::fabs(linear_slope({0, 1, 2, 3}, {1, 3, 5, 7}) - 2.0) < 1e-12, "linear slope");

  std::printf(failures ? "core_test: %d failures\n" : "core_test: all passed\n", failures);
  return failures ? 1 : 0;
}
