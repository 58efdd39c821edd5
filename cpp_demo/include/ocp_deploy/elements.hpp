// ocp_deploy/elements.hpp - chemical symbols and atomic masses.
#pragma once

#include <string>

namespace ocp_deploy {

// Largest atomic number in the table (118).
int max_known_atomic_number();
// Atomic number of a symbol ("Cu" -> 29); 0 when unknown. Case sensitive.
int atomic_number(const std::string& symbol);
// Symbol of an atomic number; "Z<n>" outside the table.
std::string element_symbol(int z);
// Standard atomic mass in amu (ase.data.atomic_masses); 0 outside the table.
double atomic_mass(int z);

}  // namespace ocp_deploy
