"""The size contracts of exported programs (ONNX, AOTInductor).

An artifact's program takes the structures alone (``PROGRAM_CONTRACT``:
positions, atomic numbers, cell, pbc, tags, natoms; sizes ``atoms`` and
``structures``) and builds the graph inside. The model inside it is
captured first on prepared graph tensors (``model_contract``), and every
input of that model is declared here with its shape, written
with named sizes (``"atoms"``, ``"main_edges"``) and fixed ones (``3``),
and, for index tensors, the named size its values index into. Two inputs
share a size exactly when they share its name: ``cell_offsets`` and
``edge_slot`` both have ``edges`` rows, while ``edge_kmax`` (the most edges
of one atom) is independent of everything else. Nothing else relates the
sizes; in particular any of them may be 0 (a structure without edges,
triplets or quadruplets) or 1.

The exporter builds its example inputs and the ``torch.export`` dynamic
shapes from these tables and checks the exported programs against them;
the artifact metadata carries the program's (``input_shapes``), so that a
host that feeds an ONNX artifact without this runtime knows its inputs.
"""

from typing import Dict, List, Mapping, NamedTuple, Optional, Protocol, Tuple, Union

from .keys import ATOMIC_NUMBERS, BATCH, CELL, ENERGY, FORCES, NATOMS, PBC, POSITIONS, STRESS, TAGS

Size = Union[str, int]

# Metadata key of the recorded contract (``as_metadata``).
INPUT_SHAPES_KEY = "input_shapes"
# Named sizes of the structure inputs.
ATOMS = "atoms"
STRUCTURES = "structures"


class ContractInput(NamedTuple):
    """One model input: ``shape`` (named or fixed sizes) and, for index tensors, the size indexed into."""

    name: str
    shape: Tuple[Size, ...]
    indexes: Optional[str] = None


# Inputs of self-contained artifacts (ONNX, AOTInductor), in this order: the
# structures alone, as the TorchScript artifact's ``forward_batch`` takes
# them; every graph size is data-dependent inside the program.
PROGRAM_CONTRACT: List[ContractInput] = [
    ContractInput(POSITIONS, (ATOMS, 3)),
    ContractInput(ATOMIC_NUMBERS, (ATOMS,)),
    ContractInput(CELL, (STRUCTURES, 3, 3)),
    ContractInput(PBC, (STRUCTURES, 3)),
    ContractInput(TAGS, (ATOMS,)),
    ContractInput(NATOMS, (STRUCTURES,)),
]

# Inputs of the model inside an artifact, before the graph inputs of its
# kind (``model_contract``).
STRUCTURE_CONTRACT: List[ContractInput] = [
    ContractInput(POSITIONS, (ATOMS, 3)),
    ContractInput(CELL, (STRUCTURES, 3, 3)),
    ContractInput(ATOMIC_NUMBERS, (ATOMS,)),
    ContractInput(BATCH, (ATOMS,), STRUCTURES),
]


def _edges(prefix: str, count: str) -> List[ContractInput]:
    """``{prefix}_edge_index`` (2, E) into atoms and ``{prefix}_cell_offsets`` (E, 3)."""
    return [ContractInput(f"{prefix}_edge_index", (2, count), ATOMS), ContractInput(f"{prefix}_cell_offsets", (count, 3))]


def _slots(prefix: str, entries: str, per_group: str) -> List[ContractInput]:
    """``{prefix}_slot`` (T,) into the padded group width and ``{prefix}_kmax`` (K,)."""
    return [ContractInput(f"{prefix}_slot", (entries,), per_group), ContractInput(f"{prefix}_kmax", (per_group,))]


def _triplets(prefix: str, entries: str, source: str, destination: str, per_group: str) -> List[ContractInput]:
    """``{prefix}_in`` / ``{prefix}_out`` (T,) edge ids (input edge, destination edge) and their slots."""
    return [
        ContractInput(f"{prefix}_in", (entries,), source),
        ContractInput(f"{prefix}_out", (entries,), destination),
    ] + _slots(prefix, entries, per_group)


# Outputs of every prepared-graph artifact (stress only in conservative mode).
OUTPUT_SHAPES: Dict[str, Tuple[Size, ...]] = {ENERGY: (STRUCTURES,), FORCES: (ATOMS, 3), STRESS: (STRUCTURES, 3, 3)}

PAINN_CONTRACT: List[ContractInput] = [
    ContractInput("edge_index", (2, "edges"), ATOMS),
    ContractInput("cell_offsets", ("edges", 3)),
    ContractInput("edge_slot", ("edges",), "edges_per_atom"),
    ContractInput("edge_kmax", ("edges_per_atom",)),
]

GEMNET_OC_CONTRACT: List[ContractInput] = (
    _edges("main", "main_edges")
    + [ContractInput("id_swap", ("main_edges",), "main_edges")]
    + _triplets("trip_e2e", "e2e_triplets", "main_edges", "main_edges", "e2e_triplets_per_edge")
    + _edges("a2ee2a", "a2ee2a_edges")
    + _triplets("trip_a2e", "a2e_triplets", "a2ee2a_edges", "main_edges", "a2e_triplets_per_edge")
    + _triplets("trip_e2a", "e2a_triplets", "main_edges", "a2ee2a_edges", "e2a_triplets_per_edge")
    + _edges("a2a", "a2a_edges")
    + _slots("a2a", "a2a_edges", "a2a_edges_per_atom")
    + _edges("qint", "qint_edges")
    + [
        ContractInput("quad_trip_in_in", ("quad_in_triplets",), "main_edges"),
        ContractInput("quad_trip_in_out", ("quad_in_triplets",), "qint_edges"),
        ContractInput("quad_trip_out_in", ("quad_out_triplets",), "qint_edges"),
        ContractInput("quad_trip_out_out", ("quad_out_triplets",), "main_edges"),
        ContractInput("quad_out", ("quadruplets",), "main_edges"),
        ContractInput("quad_trip_in_to_quad", ("quadruplets",), "quad_in_triplets"),
        ContractInput("quad_trip_out_to_quad", ("quadruplets",), "quad_out_triplets"),
    ]
    + _slots("quad", "quadruplets", "quadruplets_per_edge")
)

GRAPH_CONTRACTS: Dict[str, List[ContractInput]] = {"painn": PAINN_CONTRACT, "gemnet_oc": GEMNET_OC_CONTRACT}


def model_contract(model_kind: str, graph_names: List[str]) -> List[ContractInput]:
    """Structure inputs, then the graph inputs ``graph_names`` in that order, for ``model_kind``."""
    if model_kind not in GRAPH_CONTRACTS:
        raise ValueError(f"unknown model kind '{model_kind}'; known: {', '.join(GRAPH_CONTRACTS)}")
    by_name = {entry.name: entry for entry in GRAPH_CONTRACTS[model_kind]}
    missing = [name for name in graph_names if name not in by_name]
    if missing:
        raise ValueError(f"graph inputs {', '.join(missing)} of {model_kind} have no declared shape")
    return STRUCTURE_CONTRACT + [by_name[name] for name in graph_names]


def named_sizes(contract: List[ContractInput]) -> List[str]:
    """Every named size of ``contract``, in order of first appearance."""
    names: List[str] = []
    for entry in contract:
        for size in entry.shape + ((entry.indexes,) if entry.indexes else ()):
            if isinstance(size, str) and size not in names:
                names.append(size)
    return names


def as_metadata(contract: List[ContractInput]) -> Dict[str, Dict[str, object]]:
    """``{name: {"shape": [...], "indexes": size or None}}`` for the artifact metadata."""
    return {entry.name: {"shape": list(entry.shape), "indexes": entry.indexes} for entry in contract}


class Shaped(Protocol):
    """What ``check_feeds`` reads of a feed: a numpy array or a torch tensor."""

    @property
    def shape(self) -> Tuple[int, ...]: ...


def check_feeds(feeds: Mapping[str, Shaped], input_shapes: Dict[str, Dict[str, object]]) -> None:
    """Feeds (by input name) against the contract recorded in an artifact (``as_metadata``).

    Only the feeds' ``.shape`` is read: numpy arrays and torch tensors alike.

    An AOTInductor package reads its inputs without checking their shapes,
    so a wrong width or a disagreeing count would be read as other memory;
    this raises ``RuntimeError`` naming the input instead.
    """
    bound: Dict[str, int] = {}
    for name, declared in input_shapes.items():
        if name not in feeds:
            raise RuntimeError(f"input '{name}' is missing")
        shape = tuple(feeds[name].shape)
        sizes = declared["shape"]
        assert isinstance(sizes, list)
        if len(shape) != len(sizes):
            raise RuntimeError(f"input '{name}' has shape {shape}, the artifact expects ({', '.join(map(str, sizes))})")
        for actual, size in zip(shape, sizes):
            expected = bound.setdefault(size, actual) if isinstance(size, str) else size
            if actual != expected:
                raise RuntimeError(
                    f"input '{name}' has shape {shape}, the artifact expects ({', '.join(map(str, sizes))}) "
                    f"with {size} = {expected}"
                )
