"""The published GemNet-OC base and PaiNN h512 configurations export both ways and run.

Random weights (the modules' own initialisation, seeded) in the trainer
format; each export is verified by the exporter against the eager rewrite on
its probe, and here both artifacts are compared with the eager rewrite on an
81-atom Pt(111) slab with an O adsorbate (tags 0/1/2: quadruplets present).
The checkpoints and exports come from the session's ``export_artifact``
(conftest ``GENERATED_CHECKPOINTS``), made while other tests run.
"""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import checkpoint_path
from ocpdeploy.exporter.checkpoint import load_rewrite
from ocpdeploy.exporter.deployed import PhysicalModel
from ocpdeploy.runtime import load_model
from ocpdeploy.runtime.structures import atoms_to_arrays

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from compare import structure  # noqa: E402  (the benchmark's own slab)


def _eager(checkpoint, atoms):
    core, graph, loaded = load_rewrite(str(checkpoint))
    core.requires_grad_(False)
    n = loaded.normalizers
    physical = PhysicalModel(core, "direct", n.energy_mean, n.energy_std, n.forces_mean, n.forces_std)
    arrays = atoms_to_arrays(atoms)
    positions = torch.tensor(arrays["positions"], dtype=torch.float32)
    cell = torch.tensor(arrays["cell"], dtype=torch.float32).unsqueeze(0)
    with torch.no_grad():
        prepared = graph(positions, cell, torch.tensor(arrays["pbc"]).unsqueeze(0), torch.tensor([len(atoms)]), torch.tensor(arrays["tags"]))
        out = physical(positions, cell, torch.tensor(arrays["atomic_numbers"]), torch.zeros(len(atoms), dtype=torch.long), prepared)
    return float(out["energy"][0]), out["forces"].double().numpy(), prepared


@pytest.mark.slow
@pytest.mark.parametrize("name", ["gemnet_oc_base", "painn_h512"])
def test_published_configuration_exports_both_ways_and_runs_on_a_slab(export_artifact, name):
    checkpoint = checkpoint_path(name, export_artifact.directory)
    atoms = structure("slab_81")
    energy, forces, prepared = _eager(checkpoint, atoms)
    if name == "gemnet_oc_base":
        assert prepared["quad_out"].shape[0] > 0 and prepared["a2a_edge_index"].shape[1] > 0
    assert np.isfinite(energy) and np.isfinite(forces).all() and np.abs(forces).max() > 0
    for format in ("torchscript", "onnx"):
        path = export_artifact(name, format)
        result = load_model(path, threads=2 if format == "onnx" else None).predict(atoms)
        assert abs(result["energy"] - energy) <= 1e-5 * abs(energy) + 1e-4, format
        assert np.abs(result["forces"] - forces).max() <= 1e-4 * np.abs(forces).max() + 1e-5, format
