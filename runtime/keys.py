"""Names, units and conventions shared by every artifact and runtime adapter.

Edge convention (the OCP/fairchem one, used everywhere in this package)
-----------------------------------------------------------------------
``edge_index`` has shape ``(2, E)``: row 0 is the neighbour / source atom
``j``, row 1 the centre / target atom ``i``. Messages flow from row 0 into
row 1. ``cell_offsets`` ``(E, 3)`` are integer image shifts (stored as the
floating dtype of the positions) that belong to row 0, with cell vectors as
the rows of ``cell``::

    edge_vector = positions[j] - positions[i] + cell_offsets @ cell   # (E, 3), Angstrom

A two-atom test (``tests/unit/test_radius_graph.py``) pins the sign.

Units: positions and cell in Angstrom, energy in eV, forces in eV/Angstrom,
stress in eV/Angstrom^3 with the ASE sign convention:
``stress = (1 / volume) * dE/d(strain)`` (symmetric strain applied to both
positions and cell), i.e. minus the virial over the volume; a compressed
system has negative stress.
"""

from typing import Final, List

# ---------------------------------------------------------------------------
# Inputs of the TorchScript artifact's ``forward`` (one structure).
# ---------------------------------------------------------------------------
POSITIONS: Final[str] = "positions"  # (N, 3) float, Angstrom
ATOMIC_NUMBERS: Final[str] = "atomic_numbers"  # (N,) int64
CELL: Final[str] = "cell"  # (3, 3) float, rows are cell vectors, Angstrom; (B, 3, 3) batched
PBC: Final[str] = "pbc"  # (3,) bool; (B, 3) batched
TAGS: Final[str] = "tags"  # (N,) int64: 0 subsurface, 1 surface, 2 adsorbate

# Batched / prepared-graph inputs (ONNX artifacts and ``forward_batch``).
BATCH: Final[str] = "batch"  # (N,) int64, structure index of each atom, sorted
NATOMS: Final[str] = "natoms"  # (B,) int64, atoms per structure
EDGE_INDEX: Final[str] = "edge_index"  # (2, E) int64, row 0 source j, row 1 target i
CELL_OFFSETS: Final[str] = "cell_offsets"  # (E, 3) float, integer image shifts of row 0
EDGE_SLOT: Final[str] = "edge_slot"  # (E,) int64, position of each edge among its target's edges
EDGE_KMAX: Final[str] = "edge_kmax"  # (K,) int64 zeros, K = most edges of one target

# ---------------------------------------------------------------------------
# Outputs.
# ---------------------------------------------------------------------------
ENERGY: Final[str] = "energy"  # () single structure, (B,) batched; eV
FORCES: Final[str] = "forces"  # (N, 3), eV/Angstrom
STRESS: Final[str] = "stress"  # (3, 3) single, (B, 3, 3) batched; eV/Angstrom^3, ASE sign

# ---------------------------------------------------------------------------
# Artifact metadata.
# ---------------------------------------------------------------------------
METADATA_FILE: Final[str] = "metadata.json"  # TorchScript extra file name
# AOTInductor packages (.pt2): the whole record, JSON-encoded, under this key
# of the package's AOTInductor metadata (string -> string).
AOTI_METADATA_KEY: Final[str] = "ocpdeploy_metadata"
# ... and the device type the package was compiled for ("cpu" or "cuda").
AOTI_DEVICE_KEY: Final[str] = "compiled_for"
FORMAT_NAME: Final[str] = "ocp-deploy"
# Bumped when the TorchScript forward signature, the structure inputs or the
# metadata schema change. Prepared-graph inputs of ONNX artifacts are fed by
# name, as the session declares them, so adding one (edge_slot / edge_kmax
# for PaiNN) keeps older ONNX artifacts running.
FORMAT_VERSION: Final[int] = 1

ENERGY_UNIT: Final[str] = "eV"
LENGTH_UNIT: Final[str] = "Angstrom"
# ONNX metadata flag: every accumulating scatter is ScatterElements (race-free
# with any number of ONNX Runtime intra-op threads). Artifacts without it run
# with one CPU thread.
RACE_FREE_KEY: Final[str] = "race_free_aggregation"

FORCES_UNIT: Final[str] = "eV/Angstrom"
STRESS_UNIT: Final[str] = "eV/Angstrom^3"

FORCES_DIRECT: Final[str] = "direct"  # forces from an output head (not -dE/dx)
FORCES_GRADIENT: Final[str] = "gradient"  # -dE/dx as the checkpoint was trained
FORCES_CONSERVATIVE: Final[str] = "conservative"  # -dE/dx forced at export, plus stress
FORCES_MODES: Final[List[str]] = [FORCES_DIRECT, FORCES_GRADIENT, FORCES_CONSERVATIVE]

EDGE_CONVENTION: Final[str] = (
    "edge_index[0]=source j, edge_index[1]=target i; "
    "vector = positions[j] - positions[i] + cell_offsets @ cell (cell rows are lattice vectors)"
)
