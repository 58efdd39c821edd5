// full_list_request.h - request a FULL neighbour list for a pair style, and
// run a pair style's forward / reverse communication, on the LAMMPS API the
// build was configured against (cmake/OcpLammpsApi.cmake defines
// OCP_LAMMPS_MODERN_API when the compile probe succeeds).
//
// * Modern LAMMPS (mid-2022 onwards, including every 2023-2025 stable
//   release): neighbor->add_request(pair, NeighConst::REQ_FULL),
//   comm->forward_comm(pair), comm->reverse_comm(pair).
// * The 2021 API: neighbor->request(pair, instance) returns an index into
//   neighbor->requests, whose half/full flags are then set;
//   comm->forward_comm_pair(pair), comm->reverse_comm_pair(pair). With
//   LAMMPS's own neigh_request.h (source trees) the flags are NeighRequest's
//   members; Debian's 29Sep2021 "20220106" package does not ship that header,
//   and there they are written through a mirror of the leading NeighRequest
//   members of that release, verified against the defaults its constructor
//   sets before anything is written.
// Both communicate pair->comm_forward / comm_reverse doubles per atom at most
// (the receive buffers' size); each pack call returns how many it wrote.
#pragma once

#include <string>

#include "comm.h"
#include "error.h"
#include "neighbor.h"
#include "pair.h"

namespace LAMMPS_NS {
namespace ocp_lammps {

#ifdef OCP_LAMMPS_MODERN_API

// instance_me: the pair's Pair::instance_me (protected; only the 2021 API uses it).
inline void request_full_list(Pair* pair, int, Neighbor* neighbor, Error*) {
  neighbor->add_request(pair, NeighConst::REQ_FULL);
}

inline void forward_comm(Comm* comm, Pair* pair) { comm->forward_comm(pair); }
inline void reverse_comm(Comm* comm, Pair* pair) { comm->reverse_comm(pair); }

#elif __has_include("neigh_request.h")

#include "neigh_request.h"

inline void request_full_list(Pair* pair, int instance_me, Neighbor* neighbor, Error*) {
  NeighRequest* request = neighbor->requests[neighbor->request(pair, instance_me)];
  request->half = 0;
  request->full = 1;
}

inline void forward_comm(Comm* comm, Pair* pair) { comm->forward_comm_pair(pair); }
inline void reverse_comm(Comm* comm, Pair* pair) { comm->reverse_comm_pair(pair); }

#else

// Leading members of NeighRequest in LAMMPS 29Sep2021 (headers without
// neigh_request.h); only these are touched.
struct NeighRequestPrefix2021 : protected Pointers {
  int index;
  void* requestor;
  int requestor_instance;
  int id;
  int pair, fix, compute, command, neigh;
  int half, full;
};

inline void request_full_list(Pair* pair, int instance_me, Neighbor* neighbor, Error* error) {
  const int index = neighbor->request(pair, instance_me);
  auto* request = reinterpret_cast<NeighRequestPrefix2021*>(neighbor->requests[index]);
  const bool layout_ok = request->index == index && request->requestor == pair &&
                         request->pair == 1 && request->fix == 0 && request->compute == 0 &&
                         request->command == 0 && request->neigh == 0 && request->half == 1 &&
                         request->full == 0;
  if (!layout_ok)
    error->all(FLERR, std::string("pair ocp: this LAMMPS has neither the modern neighbour-request "
                                  "API nor the 29Sep2021 NeighRequest layout; rebuild pair ocp "
                                  "against this LAMMPS's headers"));
  request->half = 0;
  request->full = 1;
}

inline void forward_comm(Comm* comm, Pair* pair) { comm->forward_comm_pair(pair); }
inline void reverse_comm(Comm* comm, Pair* pair) { comm->reverse_comm_pair(pair); }

#endif

}  // namespace ocp_lammps
}  // namespace LAMMPS_NS
