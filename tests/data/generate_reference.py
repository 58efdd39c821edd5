"""Generate more reference data with the real fairchem-core 1.10.0 code.

    python tests/data/generate_reference.py

Not run by the test suite; it needs fairchem-core 1.10.0 with the compiled
torch_scatter 2.1.2 and torch_sparse 0.6.18 (and torch_geometric). Here they
live in a separate venv made with ``--system-site-packages`` so that it uses
the project's torch::

    python -m venv --system-site-packages /tmp/refenv
    /tmp/refenv/bin/pip install wheel setuptools torch_geometric==2.8.1
    /tmp/refenv/bin/pip install --no-build-isolation torch-scatter==2.1.2 torch-sparse==0.6.18   # ~50 min on 2 cores
    /tmp/refenv/bin/pip install --no-deps fairchem-core==1.10.0
    /tmp/refenv/bin/python tests/data/generate_reference.py

Method (the same as ``../shared/fixtures``, with other seeds and models):
the real ``PaiNN`` / ``GemNetOC`` classes are built from ``model_attributes``
under a seed, every trainable float parameter gets N(0, 0.05) noise, every
ScaleFactor a seeded log-uniform value in [0.5, 2] (exact in float32); the
model is saved as an OCP trainer checkpoint (``module.module.`` prefixes,
old-style config, ``scale_dict``, OC20 normalizers) and loaded back the
manual way (strip prefixes, ``load_state_dict(strict=True)``,
``load_scales_compat``, ``eval``), which the fixture README measured to be
bit-identical to ``OCPCalculator``. Inputs come from fairchem's own
``AtomsToGraphs`` + ``data_list_collater(otf_graph=True)``; outputs are
denormalised as the calculator does. One thread.

Packages the reference imports but never uses on this path (lmdb, wandb,
numba, ...) are replaced by empty stand-in modules at import time
(``benchmarks/fairchem_reference.py``).

Structures are the fixture structures v1..v4 (``structures/``). A (model,
structure) pair whose neighbour selection would depend on tie-breaking (a
k-th/(k+1)-th nearest-neighbour gap or a distance to a cutoff below
``TIE_TOLERANCE``, periodic self-images at +-R included) is skipped and
listed in ``generated.json``.
"""

import json
import math
import platform
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
STRUCTURES = ["v1", "v2", "v3", "v4"]
TIE_TOLERANCE = 1.0e-4  # Angstrom
WEIGHT_NOISE = 0.05
OC20_ENERGY_MEAN, OC20_STD = -0.7554450631141663, 2.887317180633545

GEMNET_SMALL = {
    "num_spherical": 7, "num_radial": 8, "num_blocks": 2, "emb_size_atom": 16, "emb_size_edge": 32,
    "emb_size_trip_in": 8, "emb_size_trip_out": 8, "emb_size_quad_in": 4, "emb_size_quad_out": 4,
    "emb_size_aint_in": 8, "emb_size_aint_out": 8, "emb_size_rbf": 4, "emb_size_cbf": 4, "emb_size_sbf": 8,
    "num_before_skip": 1, "num_after_skip": 1, "num_concat": 1, "num_atom": 2, "num_output_afteratom": 1,
    "num_atom_emb_layers": 1, "num_global_out_layers": 1,
    "cutoff": 6.0, "cutoff_qint": 6.0, "cutoff_aeaint": 6.0, "cutoff_aint": 6.0,
    "max_neighbors": 12, "max_neighbors_qint": 5, "max_neighbors_aeaint": 7, "max_neighbors_aint": 50,
    "rbf": {"name": "gaussian"}, "envelope": {"name": "polynomial", "exponent": 5},
    "cbf": {"name": "spherical_harmonics"}, "sbf": {"name": "legendre_outer"},
    "extensive": True, "output_init": "HeOrthogonal", "activation": "silu",
    "regress_forces": True, "direct_forces": True, "forces_coupled": False,
    "quad_interaction": True, "atom_edge_interaction": True, "edge_atom_interaction": True, "atom_interaction": True,
    "qint_tags": [1, 2], "otf_graph": True,
}
PUBLISHED_GRAPH = {
    "cutoff": 12.0, "cutoff_qint": 12.0, "cutoff_aeaint": 12.0, "cutoff_aint": 12.0,
    "max_neighbors": 30, "max_neighbors_qint": 8, "max_neighbors_aeaint": 20, "max_neighbors_aint": 1000,
}
# name -> (model name, model_attributes, seed)
MODELS = {
    "gemnet_oc_sph": ("gemnet_oc", {**GEMNET_SMALL, "sbf": {"name": "spherical_harmonics"}}, 101),
    "gemnet_oc_pubgraph": ("gemnet_oc", {**GEMNET_SMALL, "num_blocks": 1, **PUBLISHED_GRAPH}, 102),
    "gemnet_oc_grad_quad": ("gemnet_oc", {**GEMNET_SMALL, "num_blocks": 1, "direct_forces": False}, 103),
    "painn_pubgraph": (
        "painn",
        {"hidden_channels": 32, "num_layers": 3, "num_rbf": 16, "cutoff": 12.0, "max_neighbors": 50,
         "regress_forces": True, "direct_forces": True, "use_pbc": True, "otf_graph": True},
        104,
    ),
}


# --------------------------------------------------------------------------- tie check
def _min_gaps(atoms, cutoffs_and_caps):
    """Smallest k-th/(k+1)-th gap and distance-to-cutoff over all atoms (Angstrom)."""
    from ase.neighborlist import neighbor_list

    result = {}
    for cutoff, caps in cutoffs_and_caps.items():
        first, distances = neighbor_list("id", atoms, cutoff + 1.0, self_interaction=False)
        to_cutoff = float(np.min(np.abs(distances - cutoff))) if len(distances) else math.inf
        gap = math.inf
        for atom in range(len(atoms)):
            mine = np.sort(distances[first == atom])
            inside = mine[mine <= cutoff]
            for k in caps:
                if len(inside) > k:
                    gap = min(gap, float(inside[k] - inside[k - 1]))
        result[cutoff] = (to_cutoff, gap)
    return result


def _graph_parameters(attributes):
    """{cutoff: [caps]} the model's neighbour selections use."""
    if "emb_size_edge" not in attributes:
        return {attributes["cutoff"]: [attributes["max_neighbors"]]}
    selections = {}
    for suffix in ("", "_qint", "_aeaint", "_aint"):
        cutoff = attributes.get(f"cutoff{suffix}") or attributes["cutoff"]
        cap = attributes.get(f"max_neighbors{suffix}") or attributes["max_neighbors"]
        selections.setdefault(cutoff, []).append(cap)
    return selections


# --------------------------------------------------------------------------- reference
def main():
    sys.path.insert(0, str(HERE.parents[1] / "benchmarks"))
    from fairchem_reference import install_stand_ins, reference_model

    stand_ins = install_stand_ins()
    import torch
    from ase.io import read
    from fairchem.core.datasets.lmdb_dataset import data_list_collater
    from fairchem.core.models.gemnet_oc.gemnet_oc import GemNetOC
    from fairchem.core.models.painn.painn import PaiNN
    from fairchem.core.modules.scaling import ScaleFactor
    from fairchem.core.modules.scaling.compat import load_scales_compat
    from fairchem.core.preprocessing import AtomsToGraphs

    import fairchem.core

    torch.set_num_threads(1)
    classes = {"gemnet_oc": GemNetOC, "painn": PaiNN}
    manifest = {
        "generator": "tests/data/generate_reference.py: fairchem-core 1.10.0 reference models, manual checkpoint load",
        "environment": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "fairchem_core": getattr(fairchem.core, "__version__", "1.10.0"),
            "torch_scatter": __import__("torch_scatter").__version__,
            "torch_sparse": __import__("torch_sparse").__version__,
            "torch_geometric": __import__("torch_geometric").__version__,
        },
        "models": {},
    }
    for name, (model_name, attributes, seed) in MODELS.items():
        torch.manual_seed(seed)
        model = classes[model_name](**{k: v for k, v in attributes.items()})
        rng = np.random.default_rng(seed)
        with torch.no_grad():
            for parameter in model.parameters():
                if parameter.requires_grad and parameter.is_floating_point():
                    parameter.add_(WEIGHT_NOISE * torch.randn_like(parameter))
        scale_dict = {}
        for module_name, module in model.named_modules():
            if isinstance(module, ScaleFactor):
                value = float(np.float32(2.0 ** rng.uniform(-1.0, 1.0)))
                scale_dict[module.name or module_name] = value
        load_scales_compat(model, scale_dict)
        checkpoint = {
            "state_dict": {f"module.module.{k}": v.detach().clone() for k, v in model.state_dict().items()},
            "config": {
                "model": model_name,
                "model_attributes": attributes,
                "trainer": "ocp",
                "task": {"dataset": "trajectory_lmdb"},
                "dataset": {"normalize_labels": True, "target_mean": OC20_ENERGY_MEAN, "target_std": OC20_STD,
                            "grad_target_mean": 0.0, "grad_target_std": OC20_STD},
                "optim": {"batch_size": 8, "lr_initial": 5e-4},
            },
            "normalizers": {
                "target": {"mean": torch.tensor(OC20_ENERGY_MEAN), "std": torch.tensor(OC20_STD)},
                "grad_target": {"mean": torch.tensor(0.0), "std": torch.tensor(OC20_STD)},
            },
            "scale_dict": scale_dict,
            "optimizer": {}, "scheduler": None, "ema": None, "amp": None,
            "epoch": 0, "step": 0, "val_metrics": {}, "best_val_metric": None, "primary_metric": "energy_force_within_threshold",
        }
        checkpoint_path = HERE / "checkpoints" / f"{name}.pt"
        torch.save(checkpoint, checkpoint_path)

        model, _ = reference_model(str(checkpoint_path))  # loaded back the manual way
        a2g = AtomsToGraphs(r_energy=False, r_forces=False, r_distances=False, r_edges=False, r_pbc=True)
        arrays, entry = {}, {"model": model_name, "model_attributes": attributes, "seed": seed, "outputs": {}, "graph_stats": {}, "skipped": {}}
        for structure in STRUCTURES:
            atoms = read(HERE / "structures" / f"{structure}.extxyz")
            gaps = _min_gaps(atoms, _graph_parameters(attributes))
            worst = min(min(v) for v in gaps.values())
            if worst < TIE_TOLERANCE:
                entry["skipped"][structure] = f"neighbour selection tie: min gap {worst:.2e} A"
                continue
            data = a2g.convert(atoms)
            if getattr(data, "tags", None) is None:
                data.tags = torch.tensor(atoms.get_tags(), dtype=torch.long)
            batch = data_list_collater([data], otf_graph=True)
            with torch.no_grad():
                out = model(batch)
                stats = _graph_stats(model, model_name, batch, arrays, structure)
            energy = out["energy"].detach().reshape(-1) * OC20_STD + OC20_ENERGY_MEAN
            forces = out["forces"].detach() * OC20_STD
            arrays[f"{structure}/pos_input"] = batch.pos.detach().numpy()
            arrays[f"{structure}/cell_input"] = batch.cell.detach().numpy()
            arrays[f"{structure}/energy"] = energy.numpy().astype(np.float32)
            arrays[f"{structure}/forces"] = forces.numpy().astype(np.float32)
            entry["outputs"][structure] = {"energy": float(energy[0]), "max_abs_force": float(forces.abs().max()), "min_gap": worst}
            entry["graph_stats"][structure] = stats
            print(name, structure, entry["outputs"][structure], stats, flush=True)
        np.savez(HERE / "reference" / f"{name}.npz", **arrays)
        manifest["models"][name] = entry
    manifest["stand_in_modules_imported"] = sorted(stand_ins)
    (HERE / "reference" / "generated.json").write_text(json.dumps(manifest, indent=1) + "\n")


def _graph_stats(model, model_name, batch, arrays, structure):
    """Graph counts (and the edge list of the graph the tests compare) of the reference."""
    if model_name == "painn":
        graph = model.generate_graph(batch)
        arrays[f"{structure}/radius_graph_edge_index"] = graph.edge_index.numpy().astype(np.int32)
        arrays[f"{structure}/radius_graph_cell_offsets"] = graph.cell_offsets.numpy().astype(np.int8)
        return {"radius_graph": int(graph.edge_index.shape[1])}
    (main_graph, a2a_graph, a2ee2a_graph, qint_graph, _id_swap, trip_idx_e2e, trip_idx_a2e, trip_idx_e2a, quad_idx) = model.get_graphs_and_indices(batch)
    arrays[f"{structure}/main_graph_edge_index"] = main_graph["edge_index"].numpy()
    arrays[f"{structure}/main_graph_cell_offset"] = main_graph["cell_offset"].numpy().astype(np.int8)
    stats = {"main": int(main_graph["edge_index"].shape[1]), "e2e": int(trip_idx_e2e["in"].shape[0])}
    if a2a_graph:
        stats["a2a"] = int(a2a_graph["edge_index"].shape[1])
    if a2ee2a_graph:
        stats["a2ee2a"] = int(a2ee2a_graph["edge_index"].shape[1])
        stats["a2e"] = int(trip_idx_a2e["in"].shape[0])
        stats["e2a"] = int(trip_idx_e2a["in"].shape[0])
    if qint_graph:
        stats["qint"] = int(qint_graph["edge_index"].shape[1])
        stats["quad"] = int(quad_idx["out"].shape[0])
    return stats


if __name__ == "__main__":
    main()
