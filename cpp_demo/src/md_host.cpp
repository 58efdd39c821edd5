// md_host - standalone NVE (optionally Berendsen) MD driven by an ocp-deploy
// TorchScript artifact.
//
//   md_host ARTIFACT STRUCTURE.extxyz [--steps N] [--dt FS] [--temperature K]
//           [--thermostat none|berendsen] [--tau FS] [--device cpu|cuda]
//           [--threads T] [--trajectory OUT.xyz] [--trajectory-every N]
//           [--print-every N] [--seed S]
//           [--drift-tolerance EV_PER_ATOM_PER_PS]
//
// Exit status: 0 success, 1 runtime error (bad artifact / structure / model
// failure), 2 bad command line.
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

#include "ocp_deploy/extxyz.hpp"
#include "ocp_deploy/md.hpp"
#include "ocp_deploy/model.hpp"
#include "ocp_deploy/units.hpp"

namespace {

constexpr int kExitRuntimeError = 1;
constexpr int kExitUsage = 2;
// Rows of the energy table printed by default over a run.
constexpr int kDefaultPrintedRows = 20;
// TorchScript's profiling executor specialises and optimises the graph during
// the first calls; the steady-state rate excludes these steps.
constexpr long kWarmupSteps = 3;
// NVE verdict: |drift| at or below this (eV/atom/ps) counts as conserved. A
// drift of 1 meV/atom/ps heats a metal by ~8 K per ps (3 k_B per atom), the
// order of what a user would notice in a nanosecond; broken setups (direct
// forces, a cap-bound graph, steep random weights with a large time step)
// drift by 1e-2 to 10 eV/atom/ps.
constexpr double kDefaultDriftTolerance = 1.0e-3;

struct Options {
  std::string artifact;
  std::string structure;
  long steps = 100;
  double dt_fs = 1.0;
  double temperature_k = 300.0;
  std::string thermostat = "none";
  double tau_fs = 100.0;
  std::string device = "cpu";
  int threads = 0;
  std::string trajectory;
  long trajectory_every = 10;
  long print_every = 0;  // 0: steps / kDefaultPrintedRows
  unsigned long long seed = 12345;
  double drift_tolerance = kDefaultDriftTolerance;
};

class UsageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

const char* kUsage =
    "usage: md_host ARTIFACT STRUCTURE.extxyz [--steps N] [--dt FS] [--temperature K]\n"
    "               [--thermostat none|berendsen] [--tau FS] [--device cpu|cuda]\n"
    "               [--threads T] [--trajectory OUT.xyz] [--trajectory-every N]\n"
    "               [--print-every N] [--seed S]\n"
    "               [--drift-tolerance EV_PER_ATOM_PER_PS]\n"
    "Units: eV, Angstrom, fs, amu, K. NVE velocity Verlet unless --thermostat berendsen.\n"
    "NVE runs end with a verdict: conserved when |drift| <= --drift-tolerance (default 1e-3).\n"
    "OpenMP threads wait passively (OMP_WAIT_POLICY=PASSIVE) unless OMP_WAIT_POLICY or\n"
    "GOMP_SPINCOUNT is set; OMP_WAIT_POLICY=ACTIVE makes them spin.\n"
    "ARTIFACT: a TorchScript artifact (.pt) or an AOTInductor package (.pt2) from export-model.\n";

double parse_number(const std::string& flag, const std::string& text) {
  std::size_t used = 0;
  double value = 0.0;
  try {
    value = std::stod(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != text.size() || !std::isfinite(value))
    throw UsageError(flag + " expects a number, got '" + text + "'");
  return value;
}

long parse_count(const std::string& flag, const std::string& text, long minimum) {
  double value = parse_number(flag, text);
  if (value != std::floor(value) || value < minimum)
    throw UsageError(flag + " expects an integer >= " + std::to_string(minimum) + ", got '" + text + "'");
  return static_cast<long>(value);
}

Options parse_options(int argc, char** argv) {
  Options options;
  std::vector<std::string> positional;
  for (int k = 1; k < argc; ++k) {
    std::string arg = argv[k];
    if (arg == "-h" || arg == "--help") {
      std::cout << kUsage;
      std::exit(0);
    }
    if (arg.rfind("--", 0) != 0) {
      positional.push_back(arg);
      continue;
    }
    if (k + 1 >= argc) throw UsageError(arg + " needs a value");
    std::string value = argv[++k];
    if (arg == "--steps") options.steps = parse_count(arg, value, 0);
    else if (arg == "--dt") options.dt_fs = parse_number(arg, value);
    else if (arg == "--temperature") options.temperature_k = parse_number(arg, value);
    else if (arg == "--thermostat") options.thermostat = value;
    else if (arg == "--tau") options.tau_fs = parse_number(arg, value);
    else if (arg == "--device") options.device = value;
    else if (arg == "--threads") options.threads = static_cast<int>(parse_count(arg, value, 0));
    else if (arg == "--trajectory") options.trajectory = value;
    else if (arg == "--trajectory-every") options.trajectory_every = parse_count(arg, value, 1);
    else if (arg == "--print-every") options.print_every = parse_count(arg, value, 1);
    else if (arg == "--drift-tolerance") options.drift_tolerance = parse_number(arg, value);
    else if (arg == "--seed") options.seed = static_cast<unsigned long long>(parse_count(arg, value, 0));
    else throw UsageError("unknown option " + arg);
  }
  if (positional.size() != 2) throw UsageError("expected ARTIFACT and STRUCTURE");
  options.artifact = positional[0];
  options.structure = positional[1];
  if (!(options.dt_fs > 0.0)) throw UsageError("--dt must be positive");
  if (options.temperature_k < 0.0) throw UsageError("--temperature must be >= 0");
  if (!(options.drift_tolerance > 0.0)) throw UsageError("--drift-tolerance must be positive");
  if (options.thermostat != "none" && options.thermostat != "berendsen")
    throw UsageError("--thermostat must be none or berendsen");
  if (options.thermostat == "berendsen" && !(options.tau_fs > 0.0))
    throw UsageError("--tau must be positive");
  if (options.device != "cpu" && options.device != "cuda")
    throw UsageError("--device must be cpu or cuda");
  if (options.print_every == 0)
    options.print_every = std::max(1L, options.steps / kDefaultPrintedRows);
  return options;
}

double nanoseconds_per_day(double simulated_fs, double wall_seconds) {
  if (wall_seconds <= 0.0) return 0.0;
  return (simulated_fs / ocp_deploy::units::kFemtosecondsPerNanosecond) /
         (wall_seconds / ocp_deploy::units::kSecondsPerDay);
}

// LibTorch's CPU kernels run on GNU OpenMP (libgomp, shipped in the torch
// wheel). By default its threads spin for up to 300,000 iterations at the end
// of each parallel region before they sleep. On a core that another process
// also wants, a spinning thread keeps the core from the thread it waits for,
// and a model call of many short parallel regions slows down 10-60x
// (benchmarks/results/threads.md). OMP_WAIT_POLICY=PASSIVE makes waiting
// threads sleep at once. libgomp reads the variable when it is loaded, which
// for a program linked to LibTorch is before main() runs: setting it here
// would come too late. So when the user has set neither OMP_WAIT_POLICY nor
// GOMP_SPINCOUNT, md_host puts OMP_WAIT_POLICY=PASSIVE into its environment
// and executes itself again (same process id and arguments); a user's own
// setting (OMP_WAIT_POLICY=ACTIVE to spin) is left alone.
void passive_openmp_wait_by_default(char** argv) {
  if (std::getenv("OMP_WAIT_POLICY") != nullptr || std::getenv("GOMP_SPINCOUNT") != nullptr) return;
  if (setenv("OMP_WAIT_POLICY", "PASSIVE", 1) != 0) return;
  execv("/proc/self/exe", argv);
  // Only reached when exec failed (no /proc): run on with the policy libgomp already read.
}

// The wait policy as libgomp saw it: the environment this process image
// started with (/proc/self/environ), not the current one.
std::string startup_wait_policy() {
  std::ifstream environ_file("/proc/self/environ", std::ios::binary);
  std::string entry;
  std::string found;
  while (std::getline(environ_file, entry, '\0'))
    if (entry.rfind("OMP_WAIT_POLICY=", 0) == 0 || entry.rfind("GOMP_SPINCOUNT=", 0) == 0)
      found += (found.empty() ? "" : " ") + entry;
  return found.empty() ? "OpenMP default (spin, then sleep)" : found;
}

int run(const Options& options) {
  using namespace ocp_deploy;
  using Clock = std::chrono::steady_clock;
  set_num_threads(options.threads);
  set_fatal_error_prefix("md_host: error: ");  // same line as every other md_host error

  Model model(options.artifact, parse_device(options.device));
  const Metadata& meta = model.metadata();
  std::printf("# md_host (ocp-deploy)\nartifact: %s\nmetadata:\n%s\n", options.artifact.c_str(),
              meta.summary().c_str());
  std::printf("artifact_format: %s\n", format_name(model.format()));
  if (meta.forces == "direct")
    std::fprintf(stderr,
                 "WARNING: this artifact predicts forces directly (forces=direct); they are not "
                 "-dE/dx, so NVE will not conserve energy. Export with --forces conservative "
                 "for MD.\n");

  XyzStructure structure = read_extxyz(options.structure);
  model.validate(structure.frame);
  const std::size_t n = structure.frame.size();
  const auto& cell = structure.frame.cell;
  std::printf("structure: %s, %zu atoms, pbc %c%c%c\n", options.structure.c_str(), n,
              structure.frame.pbc[0] ? 'T' : 'F', structure.frame.pbc[1] ? 'T' : 'F',
              structure.frame.pbc[2] ? 'T' : 'F');
  std::printf("cell: [%g %g %g] [%g %g %g] [%g %g %g]\n", cell[0], cell[1], cell[2], cell[3],
              cell[4], cell[5], cell[6], cell[7], cell[8]);
  std::printf("md: steps %ld, dt %g fs, T0 %g K, thermostat %s, device %s, threads %d\n",
              options.steps, options.dt_fs, options.temperature_k, options.thermostat.c_str(),
              options.device.c_str(), options.threads);
  std::printf("openmp_wait: %s\n", startup_wait_policy().c_str());

  auto velocities = maxwell_boltzmann(structure.masses, options.temperature_k, options.seed);
  ForceField force_field = [&model](const Frame& frame) { return model.compute(frame); };

  const auto start_setup = Clock::now();
  VelocityVerlet md(force_field, structure.frame, structure.masses, velocities, options.dt_fs);
  const double first_call_s = std::chrono::duration<double>(Clock::now() - start_setup).count();
  if (options.thermostat == "berendsen") md.set_berendsen(options.temperature_k, options.tau_fs);

  std::ofstream trajectory;
  if (!options.trajectory.empty()) {
    trajectory.open(options.trajectory);
    if (!trajectory) throw Error("cannot write trajectory '" + options.trajectory + "'");
  }
  auto write_frame = [&]() {
    if (!trajectory.is_open()) return;
    structure.frame.positions = md.frame().positions;
    write_extxyz_frame(trajectory, structure, md.result().forces, md.potential_energy(), md.time_fs());
  };

  std::printf("step0_energy_eV %.12e\n", md.potential_energy());
  std::printf("first_call_s %.4f\n", first_call_s);
  std::printf("%8s %10s %16s %14s %16s %10s %10s\n", "step", "time_fs", "E_pot_eV", "E_kin_eV",
              "E_tot_eV", "T_K", "ns/day");
  std::vector<double> times{0.0};
  std::vector<double> totals{md.potential_energy() + md.kinetic_energy()};
  auto print_row = [&](long step, double rate) {
    const double kinetic = md.kinetic_energy();
    std::printf("%8ld %10.2f %16.8f %14.8f %16.8f %10.2f %10.4f\n", step, md.time_fs(),
                md.potential_energy(), kinetic, md.potential_energy() + kinetic,
                temperature(kinetic, n), rate);
    std::fflush(stdout);
  };
  print_row(0, 0.0);
  write_frame();

  const auto start = Clock::now();
  // CPU time of all threads of the process (glibc's clock()): on a shared
  // machine it tells threads that work from threads that wait for a core.
  const std::clock_t start_cpu = std::clock();
  std::clock_t warmup_cpu = start_cpu;
  double wall_s = 0.0;
  double warmup_wall_s = 0.0;
  for (long step = 1; step <= options.steps; ++step) {
    md.step();
    wall_s = std::chrono::duration<double>(Clock::now() - start).count();
    if (step == kWarmupSteps) {
      warmup_wall_s = wall_s;
      warmup_cpu = std::clock();
    }
    times.push_back(md.time_fs());
    totals.push_back(md.potential_energy() + md.kinetic_energy());
    if (step % options.print_every == 0 || step == options.steps)
      print_row(step, nanoseconds_per_day(md.time_fs(), wall_s));
    if (step % options.trajectory_every == 0) write_frame();
  }

  const double rate = nanoseconds_per_day(md.time_fs(), wall_s);
  std::printf("summary: atoms %zu, steps %ld, wall %.3f s, %.3f ms/step, %.4f ns/day\n", n,
              options.steps, wall_s, options.steps > 0 ? 1.0e3 * wall_s / options.steps : 0.0, rate);
  std::printf("ns_per_day %.6g\n", rate);
  if (options.steps > 2 * kWarmupSteps) {
    const double steady_fs = (options.steps - kWarmupSteps) * options.dt_fs;
    const double steady_s = wall_s - warmup_wall_s;
    std::printf("steady (after %ld warm-up steps): %.3f ms/step, %.4f ns/day\n", kWarmupSteps,
                1.0e3 * steady_s / (options.steps - kWarmupSteps), nanoseconds_per_day(steady_fs, steady_s));
    std::printf("ns_per_day_steady %.6g\n", nanoseconds_per_day(steady_fs, steady_s));
    const double steady_cpu_s = static_cast<double>(std::clock() - warmup_cpu) / CLOCKS_PER_SEC;
    std::printf("cpu_ms_per_step_steady %.6g\n", 1.0e3 * steady_cpu_s / (options.steps - kWarmupSteps));
  }
  if (options.thermostat == "none" && options.steps > 0) {
    // Drift: least-squares slope of E_tot(t), per atom, per ps.
    const double slope = linear_slope(times, totals) * units::kFemtosecondsPerPicosecond / n;
    double max_deviation = 0.0;
    for (double total : totals) max_deviation = std::max(max_deviation, std::fabs(total - totals[0]));
    std::printf("nve_drift_eV_per_atom_per_ps %.6e\n", slope);
    std::printf("nve_max_deviation_eV_per_atom %.6e\n", max_deviation / n);
    const bool conserved = std::fabs(slope) <= options.drift_tolerance;
    std::printf("nve_verdict %s: |drift| %.2e %s %.2e eV/atom/ps (--drift-tolerance)\n",
                conserved ? "conserved" : "NOT conserved", std::fabs(slope), conserved ? "<=" : ">",
                options.drift_tolerance);
  } else {
    std::printf("nve_drift_eV_per_atom_per_ps n/a (thermostat on or no steps)\n");
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  passive_openmp_wait_by_default(argv);
  try {
    return run(parse_options(argc, argv));
  } catch (const UsageError& e) {
    std::fprintf(stderr, "md_host: error: %s\n%s", e.what(), kUsage);
    return kExitUsage;
  } catch (const std::exception& e) {  // ocp_deploy::Error, c10::Error, std::bad_alloc, ...
    std::fprintf(stderr, "md_host: error: %s\n", e.what());
    return kExitRuntimeError;
  } catch (...) {
    std::fprintf(stderr, "md_host: error: unknown exception\n");
    return kExitRuntimeError;
  }
}
