// ocp_deploy/units.hpp - "metal"-like MD units used by the hosts:
// energy eV, length Angstrom, time fs, mass amu (g/mol), temperature K.
#pragma once

namespace ocp_deploy::units {

// CODATA 2018 exact / recommended values.
inline constexpr double kElementaryCharge = 1.602176634e-19;  // J per eV
inline constexpr double kAtomicMassUnit = 1.66053906660e-27;  // kg per amu
inline constexpr double kBoltzmann = 8.617333262e-5;          // eV per K
inline constexpr double kAngstrom = 1.0e-10;                  // m
inline constexpr double kFemtosecond = 1.0e-15;               // s

// Kinetic energy of mass m [amu] at speed v [A/fs] in eV:
//   E = 1/2 m v^2 * (amu * (A/fs)^2 / eV)
//   amu * (1e-10 m / 1e-15 s)^2 = 1.66053906660e-27 kg * 1e10 m^2/s^2
//   -> 1.66053906660e-17 J = 103.6427 eV.
inline constexpr double kMassVelocitySquaredToEnergy =
    kAtomicMassUnit * (kAngstrom / kFemtosecond) * (kAngstrom / kFemtosecond) / kElementaryCharge;
// a [A/fs^2] = F [eV/A] / m [amu] * kForceOverMassToAcceleration (= 1 / 103.6427).
inline constexpr double kForceOverMassToAcceleration = 1.0 / kMassVelocitySquaredToEnergy;

inline constexpr double kFemtosecondsPerPicosecond = 1.0e3;
inline constexpr double kFemtosecondsPerNanosecond = 1.0e6;
inline constexpr double kSecondsPerDay = 86400.0;

}  // namespace ocp_deploy::units
