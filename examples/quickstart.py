"""Quickstart: build small trainer-format checkpoints, export them both ways, run ASE on both.

    python examples/quickstart.py [--workdir DIR]

1. writes a small PaiNN and a small GemNet-OC checkpoint in the OCP trainer
   format (random weights, OC20 normalizers, ``module.module.`` prefixes,
   scale_dict) -- the same layout fairchem's trainer saves;
2. ``export-model CKPT --format torchscript`` and ``--format onnx`` for each;
3. runs each artifact as an ASE calculator on a Cu(111) slab with a CO
   adsorbate and prints energies side by side.
"""

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from ase.build import add_adsorbate, fcc111

from ocpdeploy.exporter.random_checkpoint import write_random_checkpoint
from ocpdeploy.runtime import DeployedCalculator

MODELS = {
    "painn": {"hidden_channels": 64, "num_layers": 3, "num_rbf": 32, "cutoff": 6.0, "max_neighbors": 20},
    "gemnet_oc": {
        "num_spherical": 7, "num_radial": 16, "num_blocks": 2, "emb_size_atom": 32, "emb_size_edge": 64,
        "emb_size_trip_in": 16, "emb_size_trip_out": 16, "emb_size_quad_in": 8, "emb_size_quad_out": 8,
        "emb_size_aint_in": 16, "emb_size_aint_out": 16, "emb_size_rbf": 8, "emb_size_cbf": 8, "emb_size_sbf": 16,
        "num_before_skip": 1, "num_after_skip": 1, "num_concat": 1, "num_atom": 2, "num_output_afteratom": 2,
        "num_atom_emb_layers": 1, "num_global_out_layers": 1, "cutoff": 6.0, "max_neighbors": 20,
        "max_neighbors_qint": 8, "max_neighbors_aeaint": 12, "max_neighbors_aint": 50,
        "rbf": {"name": "gaussian"}, "envelope": {"name": "polynomial", "exponent": 5},
        "cbf": {"name": "spherical_harmonics"}, "sbf": {"name": "legendre_outer"}, "extensive": True,
        "direct_forces": True, "regress_forces": True, "quad_interaction": True, "atom_edge_interaction": True,
        "edge_atom_interaction": True, "atom_interaction": True, "qint_tags": [1, 2],
    },
}


def slab():
    atoms = fcc111("Cu", size=(3, 3, 3), vacuum=10.0, a=3.61)
    atoms.set_tags([0] * 18 + [1] * 9)
    add_adsorbate(atoms, "C", 1.85, "ontop")
    add_adsorbate(atoms, "O", 3.0, "ontop")
    tags = atoms.get_tags()
    tags[-2:] = 2
    atoms.set_tags(tags)
    atoms.positions += np.random.default_rng(0).normal(scale=0.03, size=atoms.positions.shape)
    return atoms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default=None)
    workdir = Path(parser.parse_args().workdir or tempfile.mkdtemp(prefix="ocp-deploy-quickstart-"))
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"working in {workdir}")
    rows = []
    for name, attributes in MODELS.items():
        checkpoint = workdir / f"{name}.pt"
        write_random_checkpoint(name, attributes, checkpoint)
        energies = []
        for fmt, suffix in (("torchscript", "_ts.pt"), ("onnx", ".onnx")):
            artifact = workdir / f"{name}{suffix}"
            subprocess.run(["export-model", str(checkpoint), "--format", fmt, "-o", str(artifact)], check=True)
            atoms = slab()
            atoms.calc = DeployedCalculator(str(artifact), device="cpu")
            energies.append((atoms.get_potential_energy(), np.abs(atoms.get_forces(apply_constraint=False)).max()))
        rows.append((name, energies))
    print(f"\n{'model':<10} {'E torchscript (eV)':>20} {'E onnx (eV)':>14} {'|dE| (eV)':>10} {'max|F| (eV/A)':>14}")
    for name, ((e_ts, f_ts), (e_onnx, _)) in rows:
        print(f"{name:<10} {e_ts:20.6f} {e_onnx:14.6f} {abs(e_ts - e_onnx):10.2e} {f_ts:14.4f}")


if __name__ == "__main__":
    sys.exit(main())
