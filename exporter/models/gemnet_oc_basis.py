"""Radial, circular and spherical bases of GemNet-OC (``layers/radial_basis.py``,
``layers/spherical_basis.py``, ``layers/basis_utils.py``).

The reference builds the real spherical harmonics with sympy at import time
and evaluates lambdified expressions. Here the same functions are expanded
once, at construction, into plain float polynomial coefficients (exact
rational recurrences, then float64 constants), and evaluated with Horner's
rule, so that nothing symbolic runs at inference time. Values agree with the
sympy forms to float32 rounding.

Conventions: ``z`` is a cosine clamped to [-1, 1] (T,); the dihedral angle
``phi`` is passed as its cosine and sine (T,) each (no atan2: ONNX Runtime's
CPU provider has no float64 Atan, and only cos(m phi) / sin(m phi) are used). Basis columns follow the reference order: for the
``zero_m_only`` circular basis ``Y_l0, l = 0..L-1``; for the full real form,
per degree ``l``: ``m = 0, 1, ..., l`` (cos(m phi) terms) then
``m = -l, ..., -1`` (sin(|m| phi) terms), ``L^2`` columns in total.
"""

import math
from fractions import Fraction
from typing import Dict, List, Tuple

import torch
from torch import Tensor, nn

from .layers import PolynomialEnvelope


class GaussianBasis(nn.Module):
    """GemNet ``GaussianBasis(start=0, stop=1, num_gaussians)``: (E,) -> (E, num).

    ``coeff = -0.5 / ((stop - start) / (num - 1))^2`` is computed in Python
    double precision, as in the reference (unlike PyG's GaussianSmearing).
    The buffer is ``offset``.
    """

    coeff: float

    def __init__(self, num_gaussians: int, start: float = 0.0, stop: float = 1.0) -> None:
        super().__init__()
        self.register_buffer("offset", torch.linspace(start, stop, num_gaussians))
        self.coeff = -0.5 / ((stop - start) / (num_gaussians - 1)) ** 2

    def forward(self, distance: Tensor) -> Tensor:
        difference = distance[:, None] - self.offset[None, :]
        return torch.exp(self.coeff * torch.pow(difference, 2))


class GemNetRadialBasis(nn.Module):
    """Envelope times gaussians of ``d / cutoff`` (E,) -> (E, num_radial).

    State keys: ``rbf.offset`` (the polynomial envelope has none).
    """

    inv_cutoff: float

    def __init__(self, num_radial: int, cutoff: float, envelope_exponent: int) -> None:
        super().__init__()
        self.inv_cutoff = 1.0 / cutoff
        self.envelope = PolynomialEnvelope(envelope_exponent)
        self.rbf = GaussianBasis(num_radial)

    def forward(self, distance: Tensor) -> Tensor:
        d_scaled = distance * self.inv_cutoff
        return self.envelope(d_scaled)[:, None] * self.rbf(d_scaled)


# ---------------------------------------------------------------------------
# Real spherical harmonics as polynomials (computed once, exactly).
# ---------------------------------------------------------------------------
Poly = List[Fraction]  # coefficients, lowest degree first


def _poly_add(a: Poly, b: Poly) -> Poly:
    size = max(len(a), len(b))
    return [(a[i] if i < len(a) else Fraction(0)) + (b[i] if i < len(b) else Fraction(0)) for i in range(size)]


def _poly_scale(a: Poly, factor: Fraction) -> Poly:
    return [c * factor for c in a]


def _poly_times_z(a: Poly) -> Poly:
    return [Fraction(0)] + list(a)


def _legendre_q(max_degree: int) -> Dict[Tuple[int, int], Poly]:
    """``P_l^m(z) = (1 - z^2)^(m/2) * Q_lm(z)`` for ``0 <= m <= l < max_degree``.

    Same recurrences (and Condon-Shortley sign) as the reference's
    ``associated_legendre_polynomials``.
    """
    q: Dict[Tuple[int, int], Poly] = {(0, 0): [Fraction(1)]}
    for m in range(1, max_degree):
        q[(m, m)] = _poly_scale(q[(m - 1, m - 1)], Fraction(1 - 2 * m))
    for m in range(max_degree - 1):
        q[(m + 1, m)] = _poly_scale(_poly_times_z(q[(m, m)]), Fraction(2 * m + 1))
    for l in range(2, max_degree):
        for m in range(l - 1):
            term1 = _poly_scale(_poly_times_z(q[(l - 1, m)]), Fraction(2 * l - 1))
            term2 = _poly_scale(q[(l - 2, m)], Fraction(-(l + m - 1)))
            q[(l, m)] = _poly_scale(_poly_add(term1, term2), Fraction(1, l - m))
    return q


def _prefactor(l: int, m: int) -> float:
    """``sqrt((2l+1)/(4 pi) * (l-|m|)! / (l+|m|)!)`` (``sph_harm_prefactor``)."""
    m = abs(m)
    return ((2 * l + 1) / (4 * math.pi) * math.factorial(l - m) / math.factorial(l + m)) ** 0.5


def spherical_harmonics_terms(max_degree: int, zero_m_only: bool) -> List[Tuple[List[float], int, int]]:
    """Columns of the reference basis as ``(coefficients, m, trig)``.

    Column value: ``poly(z) * (1 - z^2)^(m/2) * trig(m phi)`` with ``trig`` 0
    (none), 1 (cos) or 2 (sin); coefficients include every constant factor.
    """
    q = _legendre_q(max_degree)
    terms: List[Tuple[List[float], int, int]] = []
    for l in range(max_degree):
        terms.append(([float(c) * _prefactor(l, 0) for c in q[(l, 0)]], 0, 0))
        if zero_m_only:
            continue
        for m in range(1, l + 1):
            factor = 2**0.5 * (-1) ** m * _prefactor(l, m)
            terms.append(([float(c) * factor for c in q[(l, m)]], m, 1))
        for m in range(l, 0, -1):
            factor = 2**0.5 * (-1) ** m * _prefactor(l, -m)
            terms.append(([float(c) * factor for c in q[(l, m)]], m, 2))
    return terms


def _horner(coefficients: List[float], z: Tensor) -> Tensor:
    result = torch.full_like(z, coefficients[-1])
    for k in range(len(coefficients) - 2, -1, -1):
        result = result * z + coefficients[k]
    return result


class CircularHarmonics(nn.Module):
    """``Y_l0(z)``, l = 0..L-1 (``get_sph_harm_basis(L, zero_m_only=True)``): (T,) -> (T, L)."""

    coefficients: List[List[float]]

    def __init__(self, num_spherical: int) -> None:
        super().__init__()
        self.coefficients = [terms[0] for terms in spherical_harmonics_terms(num_spherical, True)]

    def forward(self, z: Tensor) -> Tensor:
        columns: List[Tensor] = []
        for coefficients in self.coefficients:
            columns.append(_horner(coefficients, z))
        return torch.stack(columns, dim=1)


def _multiple_angles(cos_phi: Tensor, sin_phi: Tensor, max_order: int) -> Tuple[List[Tensor], List[Tensor]]:
    """[cos(m phi)], [sin(m phi)] for m = 0..max_order by the Chebyshev recurrence

    ``c_{m+1} = 2 cos(phi) c_m - c_{m-1}`` (the same for ``s``).
    """
    cos_m = [torch.ones_like(cos_phi), cos_phi]
    sin_m = [torch.zeros_like(sin_phi), sin_phi]
    for m in range(1, max_order):
        cos_m.append(2.0 * cos_phi * cos_m[m] - cos_m[m - 1])
        sin_m.append(2.0 * cos_phi * sin_m[m] - sin_m[m - 1])
    return cos_m, sin_m


class RealSphericalHarmonics(nn.Module):
    """Full real ``Y_lm(z, phi)`` (``get_sph_harm_basis(L, zero_m_only=False)``): -> (T, L^2)."""

    coefficients: List[List[float]]
    orders: List[int]
    trig: List[int]

    def __init__(self, num_spherical: int) -> None:
        super().__init__()
        terms = spherical_harmonics_terms(num_spherical, False)
        self.coefficients = [t[0] for t in terms]
        self.orders = [t[1] for t in terms]
        self.trig = [t[2] for t in terms]

    def forward(self, z: Tensor, cos_phi: Tensor, sin_phi: Tensor) -> Tensor:
        one_minus_z2 = 1.0 - z * z
        cos_m, sin_m = _multiple_angles(cos_phi, sin_phi, max(self.orders))
        columns: List[Tensor] = []
        for k in range(len(self.coefficients)):
            value = _horner(self.coefficients[k], z)
            m = self.orders[k]
            if m > 0:
                value = value * torch.pow(one_minus_z2, 0.5 * m)
                if self.trig[k] == 1:
                    value = value * cos_m[m]
                else:
                    value = value * sin_m[m]
            columns.append(value)
        return torch.stack(columns, dim=1)


class CircularBasisLayer(nn.Module):
    """Radial basis of the edge and ``Y_l0(cos angle)`` of the triplet.

    ``forward(distance (E,), cos_angle (T,)) -> (rad (E, R), cir (T, L))``.
    State keys: ``radial_basis.rbf.offset``.
    """

    def __init__(self, num_spherical: int, radial_basis: GemNetRadialBasis) -> None:
        super().__init__()
        self.radial_basis = radial_basis
        self.cos_basis = CircularHarmonics(num_spherical)

    def forward(self, distance: Tensor, cos_angle: Tensor) -> Tuple[Tensor, Tensor]:
        return self.radial_basis(distance), self.cos_basis(cos_angle)


class SphericalBasisLayer(nn.Module):
    """Radial basis and two-angle basis (``sbf``) of quadruplets.

    ``forward(distance (E,), cos_angle (Q,), cos_dihedral (Q,), sin_dihedral (Q,))
    -> (rad (E, R), sph (Q, L^2))``.
    ``legendre_outer``: ``Y_i0(cos_angle) * Y_j0(cos_dihedral)`` flattened
    row-major (i, j); ``spherical_harmonics``: ``Y_lm(cos_angle, dihedral)``.
    """

    legendre_outer: bool
    num_spherical: int

    def __init__(self, num_spherical: int, radial_basis: GemNetRadialBasis, sbf_name: str) -> None:
        super().__init__()
        self.num_spherical = num_spherical
        self.radial_basis = radial_basis
        self.legendre_outer = sbf_name == "legendre_outer"
        self.circular = CircularHarmonics(num_spherical)
        self.full = RealSphericalHarmonics(num_spherical if not self.legendre_outer else 1)

    def forward(self, distance: Tensor, cos_angle: Tensor, cos_dihedral: Tensor, sin_dihedral: Tensor) -> Tuple[Tensor, Tensor]:
        return self.radial_basis(distance), self.angular(cos_angle, cos_dihedral, sin_dihedral)

    def angular(self, cos_angle: Tensor, cos_dihedral: Tensor, sin_dihedral: Tensor) -> Tensor:
        """The two-angle part alone: (Q,) x 3 -> (Q, L^2)."""
        if self.legendre_outer:
            sph = self.circular(cos_angle)[:, :, None] * self.circular(cos_dihedral)[:, None, :]
            return sph.reshape(cos_angle.shape[0], self.num_spherical * self.num_spherical)
        return self.full(cos_angle, cos_dihedral, sin_dihedral)

    def angular_masked(self, cos_angle: Tensor, cos_dihedral: Tensor, sin_dihedral: Tensor, mask: Tensor) -> Tensor:
        """``angular(...) * mask[:, None]`` for a 0/1 ``mask`` (Q,), the same values.

        For ``legendre_outer`` the mask multiplies the (Q, L) angle factor
        before the outer product, so no second (Q, L^2) tensor is made (at
        padded quadruplet slots, 36M rows of 49 at 4,840 atoms: 7 GB each).
        """
        if self.legendre_outer:
            sph = (self.circular(cos_angle) * mask[:, None])[:, :, None] * self.circular(cos_dihedral)[:, None, :]
            return sph.reshape(cos_angle.shape[0], self.num_spherical * self.num_spherical)
        return self.full(cos_angle, cos_dihedral, sin_dihedral) * mask[:, None]
