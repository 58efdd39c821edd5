// ocp_deploy/md.hpp - velocity-Verlet molecular dynamics in metal-like units
// (eV, Angstrom, fs, amu, K). See units.hpp for the conversion constants.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "ocp_deploy/model.hpp"

namespace ocp_deploy {

// Kinetic energy (eV) of velocities (A/fs, N*3) with masses (amu, N).
double kinetic_energy(const std::vector<double>& velocities, const std::vector<double>& masses);

// Degrees of freedom used for the temperature: 3N - 3 (centre-of-mass motion
// removed) for N > 1, else 3.
int degrees_of_freedom(std::size_t atoms);

// Instantaneous temperature (K) from a kinetic energy (eV).
double temperature(double kinetic_energy_ev, std::size_t atoms);

// Maxwell-Boltzmann velocities (A/fs) at `kelvin`, zero total momentum,
// rescaled to exactly `kelvin` (deterministic for a given seed).
std::vector<double> maxwell_boltzmann(const std::vector<double>& masses, double kelvin,
                                      std::uint64_t seed);

// Forces and energy of a frame (the model, or anything else in tests).
using ForceField = std::function<Result(const Frame&)>;

// Velocity Verlet:
//   v(t+dt/2) = v(t) + dt/2 a(t);  x(t+dt) = x(t) + dt v(t+dt/2);
//   a(t+dt) = F(x(t+dt)) / m;      v(t+dt) = v(t+dt/2) + dt/2 a(t+dt)
// with an optional Berendsen velocity scaling after each step.
class VelocityVerlet {
 public:
  VelocityVerlet(ForceField force_field, Frame frame, std::vector<double> masses,
                 std::vector<double> velocities, double timestep_fs);

  // Berendsen weak coupling to `kelvin` with time constant `tau_fs`
  // (lambda^2 = 1 + dt/tau (T0/T - 1)); tau <= 0 disables it.
  void set_berendsen(double kelvin, double tau_fs);

  void step();

  const Frame& frame() const { return frame_; }
  const Result& result() const { return result_; }
  const std::vector<double>& velocities() const { return velocities_; }
  double potential_energy() const { return result_.energy; }
  double kinetic_energy() const;
  double time_fs() const { return time_fs_; }

 private:
  void half_kick();

  ForceField force_field_;
  Frame frame_;
  std::vector<double> masses_;
  std::vector<double> velocities_;
  double timestep_fs_;
  double time_fs_ = 0.0;
  double thermostat_kelvin_ = 0.0;
  double thermostat_tau_fs_ = 0.0;
  Result result_;
};

// Least-squares slope of y(x) (units of y per unit of x); 0 for < 2 points.
double linear_slope(const std::vector<double>& x, const std::vector<double>& y);

}  // namespace ocp_deploy
