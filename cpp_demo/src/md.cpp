#include "ocp_deploy/md.hpp"

#include <cmath>
#include <random>

#include "ocp_deploy/units.hpp"

namespace ocp_deploy {

namespace {
constexpr int kDimensions = 3;
}

double kinetic_energy(const std::vector<double>& velocities, const std::vector<double>& masses) {
  double twice = 0.0;
  for (std::size_t a = 0; a < masses.size(); ++a)
    for (int d = 0; d < kDimensions; ++d)
      twice += masses[a] * velocities[kDimensions * a + d] * velocities[kDimensions * a + d];
  return 0.5 * twice * units::kMassVelocitySquaredToEnergy;
}

int degrees_of_freedom(std::size_t atoms) {
  return atoms > 1 ? kDimensions * static_cast<int>(atoms) - kDimensions : kDimensions;
}

double temperature(double kinetic_energy_ev, std::size_t atoms) {
  return 2.0 * kinetic_energy_ev / (degrees_of_freedom(atoms) * units::kBoltzmann);
}

std::vector<double> maxwell_boltzmann(const std::vector<double>& masses, double kelvin,
                                      std::uint64_t seed) {
  const std::size_t n = masses.size();
  std::vector<double> velocities(kDimensions * n, 0.0);
  if (kelvin <= 0.0 || n == 0) return velocities;
  std::mt19937_64 generator(seed);
  std::normal_distribution<double> normal(0.0, 1.0);
  double momentum[kDimensions] = {0.0, 0.0, 0.0};
  double total_mass = 0.0;
  for (std::size_t a = 0; a < n; ++a) {
    // <m v^2> = k_B T per direction, in A/fs.
    const double sigma =
        std::sqrt(units::kBoltzmann * kelvin / (masses[a] * units::kMassVelocitySquaredToEnergy));
    for (int d = 0; d < kDimensions; ++d) {
      velocities[kDimensions * a + d] = sigma * normal(generator);
      momentum[d] += masses[a] * velocities[kDimensions * a + d];
    }
    total_mass += masses[a];
  }
  if (n > 1)
    for (std::size_t a = 0; a < n; ++a)
      for (int d = 0; d < kDimensions; ++d) velocities[kDimensions * a + d] -= momentum[d] / total_mass;
  const double current = temperature(kinetic_energy(velocities, masses), n);
  if (current > 0.0) {
    const double scale = std::sqrt(kelvin / current);
    for (double& v : velocities) v *= scale;
  }
  return velocities;
}

VelocityVerlet::VelocityVerlet(ForceField force_field, Frame frame, std::vector<double> masses,
                               std::vector<double> velocities, double timestep_fs)
    : force_field_(std::move(force_field)),
      frame_(std::move(frame)),
      masses_(std::move(masses)),
      velocities_(std::move(velocities)),
      timestep_fs_(timestep_fs) {
  if (velocities_.size() != frame_.positions.size() || masses_.size() != frame_.size())
    throw Error("velocity / mass arrays do not match the structure");
  result_ = force_field_(frame_);
}

void VelocityVerlet::set_berendsen(double kelvin, double tau_fs) {
  thermostat_kelvin_ = kelvin;
  thermostat_tau_fs_ = tau_fs;
}

double VelocityVerlet::kinetic_energy() const { return ocp_deploy::kinetic_energy(velocities_, masses_); }

void VelocityVerlet::half_kick() {
  const double half_dt = 0.5 * timestep_fs_;
  for (std::size_t a = 0; a < masses_.size(); ++a) {
    const double scale = half_dt * units::kForceOverMassToAcceleration / masses_[a];
    for (int d = 0; d < kDimensions; ++d)
      velocities_[kDimensions * a + d] += scale * result_.forces[kDimensions * a + d];
  }
}

void VelocityVerlet::step() {
  half_kick();
  for (std::size_t k = 0; k < frame_.positions.size(); ++k)
    frame_.positions[k] += timestep_fs_ * velocities_[k];
  result_ = force_field_(frame_);
  half_kick();
  time_fs_ += timestep_fs_;
  if (thermostat_tau_fs_ > 0.0) {
    const double current = temperature(kinetic_energy(), masses_.size());
    if (current > 0.0) {
      const double lambda = std::sqrt(
          1.0 + timestep_fs_ / thermostat_tau_fs_ * (thermostat_kelvin_ / current - 1.0));
      for (double& v : velocities_) v *= lambda;
    }
  }
}

double linear_slope(const std::vector<double>& x, const std::vector<double>& y) {
  const std::size_t n = x.size();
  if (n < 2 || y.size() != n) return 0.0;
  double mean_x = 0.0, mean_y = 0.0;
  for (std::size_t k = 0; k < n; ++k) {
    mean_x += x[k];
    mean_y += y[k];
  }
  mean_x /= static_cast<double>(n);
  mean_y /= static_cast<double>(n);
  double covariance = 0.0, variance = 0.0;
  for (std::size_t k = 0; k < n; ++k) {
    covariance += (x[k] - mean_x) * (y[k] - mean_y);
    variance += (x[k] - mean_x) * (x[k] - mean_x);
  }
  return variance > 0.0 ? covariance / variance : 0.0;
}

}  // namespace ocp_deploy
