#include "ocp_deploy/neighbors.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>

namespace ocp_deploy {
namespace {

constexpr int kDimensions = 3;
// Pairs closer than this (squared, A^2) are an atom and itself.
constexpr double kSelfDistanceSq = 1.0e-8;
// Upper bound on bins per (image) atom, so sparse systems in large boxes do
// not allocate a huge bin table.
constexpr double kMaxBinsPerAtom = 8.0;
constexpr double kMinBins = 1000.0;

using Vec3 = std::array<double, kDimensions>;
using Mat3 = std::array<double, 9>;

// Inverse of a row-major 3x3 matrix.
Mat3 inverse(const Mat3& m) {
  const double det = m[0] * (m[4] * m[8] - m[5] * m[7]) - m[1] * (m[3] * m[8] - m[5] * m[6]) +
                     m[2] * (m[3] * m[7] - m[4] * m[6]);
  if (std::fabs(det) < std::numeric_limits<double>::min()) throw Error("periodic structure with a singular cell");
  const double s = 1.0 / det;
  return {(m[4] * m[8] - m[5] * m[7]) * s, (m[2] * m[7] - m[1] * m[8]) * s, (m[1] * m[5] - m[2] * m[4]) * s,
          (m[5] * m[6] - m[3] * m[8]) * s, (m[0] * m[8] - m[2] * m[6]) * s, (m[2] * m[3] - m[0] * m[5]) * s,
          (m[3] * m[7] - m[4] * m[6]) * s, (m[1] * m[6] - m[0] * m[7]) * s, (m[0] * m[4] - m[1] * m[3]) * s};
}

}  // namespace

Candidates neighbour_candidates(const Frame& frame, double cutoff) {
  const std::size_t n = frame.size();
  const bool periodic = frame.pbc[0] || frame.pbc[1] || frame.pbc[2];
  const Mat3& cell = frame.cell;
  Mat3 inv{};
  if (periodic) inv = inverse(cell);

  // Wrap periodic directions into [0, 1): pos = wrapped + wrap_shift @ cell.
  std::vector<Vec3> wrapped(n);
  std::vector<std::array<long, kDimensions>> wrap_shift(n, {0, 0, 0});
  for (std::size_t a = 0; a < n; ++a) {
    Vec3 p{frame.positions[3 * a], frame.positions[3 * a + 1], frame.positions[3 * a + 2]};
    if (periodic) {
      for (int k = 0; k < kDimensions; ++k) {
        if (!frame.pbc[k]) continue;
        const double fractional = p[0] * inv[0 * 3 + k] + p[1] * inv[1 * 3 + k] + p[2] * inv[2 * 3 + k];
        wrap_shift[a][k] = static_cast<long>(std::floor(fractional));
      }
      for (int d = 0; d < kDimensions; ++d)
        for (int k = 0; k < kDimensions; ++k) p[d] -= wrap_shift[a][k] * cell[k * 3 + d];
    }
    wrapped[a] = p;
  }

  // Images needed per direction: ceil(cutoff * |reciprocal vector|) (columns of inv).
  std::array<long, kDimensions> images{0, 0, 0};
  for (int k = 0; k < kDimensions; ++k)
    if (frame.pbc[k]) {
      const double norm = std::sqrt(inv[0 * 3 + k] * inv[0 * 3 + k] + inv[1 * 3 + k] * inv[1 * 3 + k] +
                                    inv[2 * 3 + k] * inv[2 * 3 + k]);
      images[k] = static_cast<long>(std::ceil(cutoff * norm));
    }

  Vec3 lower{}, upper{};
  for (int d = 0; d < kDimensions; ++d) {
    lower[d] = std::numeric_limits<double>::max();
    upper[d] = std::numeric_limits<double>::lowest();
  }
  for (const auto& p : wrapped)
    for (int d = 0; d < kDimensions; ++d) {
      lower[d] = std::min(lower[d], p[d]);
      upper[d] = std::max(upper[d], p[d]);
    }
  for (int d = 0; d < kDimensions; ++d) {
    lower[d] -= cutoff;
    upper[d] += cutoff;
  }

  // Image atoms inside the reachable box.
  struct Image {
    Vec3 position;
    std::int64_t atom;
    std::array<long, kDimensions> shift;
  };
  std::vector<Image> ghosts;
  for (long s0 = -images[0]; s0 <= images[0]; ++s0)
    for (long s1 = -images[1]; s1 <= images[1]; ++s1)
      for (long s2 = -images[2]; s2 <= images[2]; ++s2) {
        Vec3 offset{};
        for (int d = 0; d < kDimensions; ++d) offset[d] = s0 * cell[d] + s1 * cell[3 + d] + s2 * cell[6 + d];
        for (std::size_t a = 0; a < n; ++a) {
          Vec3 p{wrapped[a][0] + offset[0], wrapped[a][1] + offset[1], wrapped[a][2] + offset[2]};
          bool inside = true;
          for (int d = 0; d < kDimensions; ++d) inside = inside && p[d] >= lower[d] && p[d] <= upper[d];
          if (inside) ghosts.push_back({p, static_cast<std::int64_t>(a), {s0, s1, s2}});
        }
      }

  // Uniform bins of edge >= cutoff over the reachable box.
  std::array<long, kDimensions> bins{};
  double total = 1.0;
  for (int d = 0; d < kDimensions; ++d) {
    bins[d] = std::max(1L, static_cast<long>(std::floor((upper[d] - lower[d]) / cutoff)));
    total *= static_cast<double>(bins[d]);
  }
  const double max_bins = std::max(kMinBins, kMaxBinsPerAtom * static_cast<double>(ghosts.size()));
  if (total > max_bins) {
    const double shrink = std::cbrt(total / max_bins);
    for (int d = 0; d < kDimensions; ++d)
      bins[d] = std::max(1L, static_cast<long>(std::floor(static_cast<double>(bins[d]) / shrink)));
  }
  Vec3 bin_length{};
  for (int d = 0; d < kDimensions; ++d) bin_length[d] = (upper[d] - lower[d]) / static_cast<double>(bins[d]);
  auto bin_of = [&](const Vec3& p) {
    std::array<long, kDimensions> b{};
    for (int d = 0; d < kDimensions; ++d)
      b[d] = std::clamp(static_cast<long>(std::floor((p[d] - lower[d]) / bin_length[d])), 0L, bins[d] - 1);
    return b;
  };
  auto linear = [&](const std::array<long, kDimensions>& b) { return (b[0] * bins[1] + b[1]) * bins[2] + b[2]; };
  const std::size_t num_bins = static_cast<std::size_t>(bins[0] * bins[1] * bins[2]);
  std::vector<std::size_t> start(num_bins + 1, 0), order(ghosts.size());
  for (const auto& g : ghosts) ++start[linear(bin_of(g.position)) + 1];
  for (std::size_t b = 0; b < num_bins; ++b) start[b + 1] += start[b];
  std::vector<std::size_t> fill(start.begin(), start.end() - 1);
  for (std::size_t g = 0; g < ghosts.size(); ++g) order[fill[linear(bin_of(ghosts[g].position))]++] = g;

  // Bins reached from a centre: enough to cover one cutoff.
  std::array<long, kDimensions> reach{};
  for (int d = 0; d < kDimensions; ++d) reach[d] = static_cast<long>(std::ceil(cutoff / bin_length[d]));

  Candidates out;
  const double cutoff_sq = cutoff * cutoff;
  for (std::size_t i = 0; i < n; ++i) {
    const auto centre_bin = bin_of(wrapped[i]);
    std::array<long, kDimensions> lo{}, hi{};
    for (int d = 0; d < kDimensions; ++d) {
      lo[d] = std::max(0L, centre_bin[d] - reach[d]);
      hi[d] = std::min(bins[d] - 1, centre_bin[d] + reach[d]);
    }
    for (long b0 = lo[0]; b0 <= hi[0]; ++b0)
      for (long b1 = lo[1]; b1 <= hi[1]; ++b1)
        for (long b2 = lo[2]; b2 <= hi[2]; ++b2) {
          const auto b = static_cast<std::size_t>(linear({b0, b1, b2}));
          for (std::size_t k = start[b]; k < start[b + 1]; ++k) {
            const Image& g = ghosts[order[k]];
            double distance_sq = 0.0;
            for (int d = 0; d < kDimensions; ++d) {
              const double delta = g.position[d] - wrapped[i][d];
              distance_sq += delta * delta;
            }
            if (distance_sq > cutoff_sq || distance_sq < kSelfDistanceSq) continue;
            const auto j = static_cast<std::size_t>(g.atom);
            out.neighbour.push_back(g.atom);
            out.centre.push_back(static_cast<std::int64_t>(i));
            // Shift in the frame of the unwrapped input positions.
            for (int d = 0; d < kDimensions; ++d)
              out.offsets.push_back(g.shift[d] - wrap_shift[j][d] + wrap_shift[i][d]);
          }
        }
  }
  return out;
}

}  // namespace ocp_deploy
