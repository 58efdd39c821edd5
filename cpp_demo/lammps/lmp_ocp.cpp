// lmp_ocp - the LAMMPS executable (Debian liblammps) with pair style "ocp".
//
// Command line as for `lmp` (-in FILE, -var NAME VALUE, -log, -screen, ...):
//   lmp_ocp -in in.ocp -var artifact model.pt
// Runs on a single MPI rank (pair ocp checks).
#include <mpi.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <exception>

#include "input.h"
#include "lammps.h"
#include "pair_ocp.h"

namespace {

// LibTorch's OpenMP threads (GNU libgomp from the torch wheel) spin at the end
// of every parallel region before they sleep; on cores shared with other
// processes (or other MPI ranks) that slows each force call 10-60x. libgomp
// reads OMP_WAIT_POLICY when it is loaded, before main() runs, so when the
// user has set neither OMP_WAIT_POLICY nor GOMP_SPINCOUNT, lmp_ocp sets
// OMP_WAIT_POLICY=PASSIVE and executes itself again before MPI starts (same
// process id, arguments and launcher environment). A user's own setting
// (OMP_WAIT_POLICY=ACTIVE to spin) is left alone. See md_host.cpp.
void passive_openmp_wait_by_default(char** argv) {
  if (std::getenv("OMP_WAIT_POLICY") != nullptr || std::getenv("GOMP_SPINCOUNT") != nullptr) return;
  if (setenv("OMP_WAIT_POLICY", "PASSIVE", 1) != 0) return;
  execv("/proc/self/exe", argv);
  // Only reached when exec failed (no /proc): run on with the policy libgomp already read.
}

}  // namespace

int main(int argc, char** argv) {
  passive_openmp_wait_by_default(argv);
  MPI_Init(&argc, &argv);
  int status = 0;
  try {
    auto* lmp = new LAMMPS_NS::LAMMPS(argc, argv, MPI_COMM_WORLD);
    LAMMPS_NS::register_pair_ocp(lmp);
    lmp->input->file();
    delete lmp;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "lmp_ocp: error: %s\n", e.what());
    status = 1;
  }
  MPI_Finalize();
  return status;
}
