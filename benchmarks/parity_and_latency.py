"""Measured max errors vs the fairchem-core 1.10.0 fixtures and latency of one energy+forces call.

    python benchmarks/parity_and_latency.py [--threads 2]

Errors: eager rewrite, TorchScript and ONNX artifacts against the
fairchem-core 1.10.0 reference outputs in tests/data (the shared fixtures and
the generated ones, every structure each has; float32). Latency: median of
repeats after warm-up on a ~100-atom Cu(111) slab with a CO adsorbate, graph
construction included, for those checkpoints (the published model sizes are
timed side by side with the reference in ``benchmarks/compare.py``).
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from ase.build import add_adsorbate, fcc111
from ase.io import read

from ocpdeploy.exporter import export_checkpoint
from ocpdeploy.exporter.checkpoint import load_rewrite
from ocpdeploy.exporter.deployed import PhysicalModel
from ocpdeploy.runtime import load_model
from ocpdeploy.runtime.structures import atoms_to_arrays

from compare import _timed  # noqa: E402  (benchmarks/ is the script's folder)

DATA = Path(__file__).resolve().parent.parent / "tests" / "data"
REPEATS = 5


def eager_predict(physical, graph, atoms):
    arrays = atoms_to_arrays(atoms)
    positions = torch.tensor(arrays["positions"], dtype=torch.float32)
    cell = torch.tensor(arrays["cell"], dtype=torch.float32).unsqueeze(0)
    natoms = torch.tensor([len(atoms)])
    tags = torch.tensor(arrays["tags"])
    with torch.no_grad():
        prepared = graph(positions, cell, torch.tensor(arrays["pbc"]).unsqueeze(0), natoms, tags)
    # gradient forces need autograd; PhysicalModel enables what it needs
    with torch.set_grad_enabled(physical.forces_mode != "direct"):
        out = physical(positions, cell, torch.tensor(arrays["atomic_numbers"]), torch.zeros(len(atoms), dtype=torch.long), prepared)
    return {"energy": float(out["energy"][0]), "forces": out["forces"].detach().double().numpy()}


def slab_100():
    atoms = fcc111("Cu", size=(4, 4, 6), vacuum=10.0, a=3.61)
    atoms.set_tags([0] * 64 + [1] * 32)
    add_adsorbate(atoms, "C", 1.85, "ontop")
    add_adsorbate(atoms, "O", 3.0, "ontop")
    atoms.positions += np.random.default_rng(0).normal(scale=0.03, size=atoms.positions.shape)
    return atoms


def median_time(fn):
    fn()  # warm-up
    return _timed(fn, REPEATS)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    torch.set_num_threads(parser.parse_args().threads)
    work = Path(tempfile.mkdtemp())
    names = sorted(path.stem for path in (DATA / "reference").glob("*.npz"))
    checkpoints = {name: DATA / "checkpoints" / f"{name}.pt" for name in names}
    slab = slab_100()
    print(f"slab: {len(slab)} atoms; torch threads {torch.get_num_threads()}")
    for name, path in checkpoints.items():
        core, graph, ckpt = load_rewrite(str(path))
        core.requires_grad_(False)
        n = ckpt.normalizers
        mode = "direct" if core.direct_forces else "gradient"
        physical = PhysicalModel(core, mode, n.energy_mean, n.energy_std, n.forces_mean, n.forces_std)
        models = {"eager": None}
        for fmt, suffix in (("torchscript", ".pt"), ("onnx", ".onnx")):
            out = work / f"{path.stem}{suffix}"
            export_checkpoint(str(path), str(out), format=fmt)
            models[fmt] = load_model(str(out))

        def predict(kind, atoms):
            if kind == "eager":
                return eager_predict(physical, graph, atoms)
            return models[kind].predict(atoms)

        reference = dict(np.load(DATA / "reference" / f"{name}.npz"))
        structures = sorted({key.split("/")[0] for key in reference if key.startswith("v") and key.endswith("/forces") and "/pos_input" not in key} - {"vb", "vc"})
        for kind in models:
            de = df = de_rel = df_rel = 0.0
            for s in structures:
                result = predict(kind, read(DATA / "structures" / f"{s}.extxyz"))
                energy, forces = float(reference[f"{s}/energy"][0]), reference[f"{s}/forces"]
                de = max(de, abs(result["energy"] - energy))
                df = max(df, float(np.abs(result["forces"] - forces).max()))
                de_rel = max(de_rel, abs(result["energy"] - energy) / abs(energy))
                df_rel = max(df_rel, float(np.abs(result["forces"] - forces).max()) / float(np.abs(forces).max()))
            print(
                f"{name:<22} {kind:<12} {','.join(structures):<12} max|dE| {de:.1e} eV ({de_rel:.1e} of |E|)   "
                f"max|dF| {df:.1e} eV/A ({df_rel:.1e} of max|F|)"
            )
        for kind in models:
            seconds = median_time(lambda: predict(kind, slab))
            print(f"{name:<22} {kind:<12} {1000 * seconds:9.1f} ms per energy+forces call ({len(slab)}-atom slab)")


if __name__ == "__main__":
    main()
