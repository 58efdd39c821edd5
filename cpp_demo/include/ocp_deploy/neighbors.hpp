// ocp_deploy/neighbors.hpp - host-side neighbour search for forward_candidates.
#pragma once

#include "ocp_deploy/model.hpp"

namespace ocp_deploy {

// All ordered pairs (j, i, shift) with |pos[j] - pos[i] + shift @ cell| <= cutoff
// (full list, j == i allowed in other images), by a cell list over the
// periodic images; O(N) for a fixed density. Positions need not be wrapped.
// Throws Error for a singular periodic cell.
Candidates neighbour_candidates(const Frame& frame, double cutoff);

}  // namespace ocp_deploy
