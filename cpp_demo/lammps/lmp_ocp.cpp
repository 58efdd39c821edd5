// lmp_ocp - the LAMMPS executable (Debian liblammps) with pair style "ocp".
//
// Command line as for `lmp` (-in FILE, -var NAME VALUE, -log, -screen, ...):
//   lmp_ocp -in in.ocp -var artifact model.pt
// Runs on a single MPI rank (pair ocp checks).
#include <mpi.h>

#include <cstdio>
#include <exception>

#include "input.h"
#include "lammps.h"
#include "pair_ocp.h"

int main(int argc, char** argv) {
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
