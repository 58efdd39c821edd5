// ocp_deploy/extxyz.hpp - read / write the extended XYZ subset ASE writes.
//
// Comment line: key=value pairs, values optionally in double quotes:
//   Lattice="ax ay az bx by bz cx cy cz"   (rows of the cell, Angstrom)
//   Properties=species:S:1:pos:R:3:tags:I:1   (name:type:columns triplets)
//   pbc="T T F"
// Recognised columns: species (S) or Z/numbers (I), pos (R:3, required),
// tags (I:1), masses (R:1). Other columns are skipped. Without pbc, a
// structure with a Lattice is periodic in all directions, one without is not
// (ASE's convention).
#pragma once

#include <iosfwd>
#include <string>
#include <vector>

#include "ocp_deploy/model.hpp"

namespace ocp_deploy {

struct XyzStructure {
  Frame frame;
  std::vector<std::string> symbols;  // N
  std::vector<double> masses;        // N amu (standard masses unless a masses column)
};

// Reads the first frame of an extended XYZ file. Throws Error with the line
// number on malformed input, unknown elements or a missing file.
XyzStructure read_extxyz(const std::string& path);

// Appends one frame with forces (eV/A) and energy (eV) in the comment line,
// readable by ase.io.read.
void write_extxyz_frame(std::ostream& out, const XyzStructure& structure,
                        const std::vector<double>& forces, double energy, double time_fs);

}  // namespace ocp_deploy
