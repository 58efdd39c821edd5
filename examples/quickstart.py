"""Quickstart: build small trainer-format checkpoints, export them both ways, check that the formats agree.

    python examples/quickstart.py [--workdir DIR]

1. writes a small PaiNN and a small GemNet-OC checkpoint in the OCP trainer
   format (random weights, OC20 normalizers, ``module.module.`` prefixes,
   scale_dict) -- the same layout fairchem's trainer saves;
2. ``export-model CKPT --format torchscript`` and ``--format onnx`` for each;
3. runs each artifact as an ASE calculator on a Cu(111) slab with a CO
   adsorbate and prints how far the two formats are apart.

The weights are random, so the energies and forces are not physical: what
the run shows is that the TorchScript and ONNX artifacts of one checkpoint
agree. Without ``--workdir`` the files go to a temporary folder that is
removed at the end; with it they are kept there.
"""

import argparse
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
from ase import Atoms
from ase.build import add_adsorbate, fcc111

from ocpdeploy.exporter.export import ENERGY_TOLERANCE, FORCES_TOLERANCE
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
# Artifact formats and the file suffix each is written with.
FORMATS = {"torchscript": "_ts.pt", "onnx": ".onnx"}
REFERENCE_FORMAT = "torchscript"
WORKDIR_PREFIX = "ocp-deploy-quickstart-"
SLAB_RATTLE = 0.03  # Angstrom: breaks the slab's symmetry so that forces are not zero by symmetry
RANDOM_WEIGHTS_NOTE = (
    "These checkpoints have RANDOM weights: their energies and forces are not physical "
    "(a relaxation with them is meaningless).\n"
    "What this run checks is that the TorchScript and ONNX artifacts of one checkpoint agree; "
    "see the agreement table at the end."
)
DTYPE = "float32"  # export-model's default


def agreement_note() -> str:
    """The bounds export-model verified each artifact with (against the eager model, on its probe structure)."""
    energy_relative, energy_absolute = ENERGY_TOLERANCE[DTYPE]
    forces_relative, forces_absolute = FORCES_TOLERANCE[DTYPE]
    return (
        f"Each {DTYPE} artifact was verified against the eager model within |dE| <= {energy_relative:g} |E| + {energy_absolute:g} eV "
        f"and max|dF| <= {forces_relative:g} max|F| + {forces_absolute:g} eV/A\n"
        "(widened by the model's own float32 rounding noise where a model is that sensitive); "
        "two formats may differ by the sum of their errors."
    )


@dataclass
class Result:
    """One artifact's prediction on the slab."""

    energy: float
    forces: np.ndarray


def slab() -> Atoms:
    """Cu(111) 3x3x3 slab with CO on top, tagged like OC20 (0 bulk, 1 surface, 2 adsorbate), slightly rattled."""
    atoms = fcc111("Cu", size=(3, 3, 3), vacuum=10.0, a=3.61)
    atoms.set_tags([0] * 18 + [1] * 9)
    add_adsorbate(atoms, "C", 1.85, "ontop")
    add_adsorbate(atoms, "O", 3.0, "ontop")
    tags = atoms.get_tags()
    tags[-2:] = 2
    atoms.set_tags(tags)
    atoms.positions += np.random.default_rng(0).normal(scale=SLAB_RATTLE, size=atoms.positions.shape)
    return atoms


def export(checkpoint: Path, fmt: str, artifact: Path) -> None:
    """Run the ``export-model`` command line, as a user would."""
    subprocess.run(["export-model", str(checkpoint), "--format", fmt, "-o", str(artifact)], check=True)


def predict(artifact: Path) -> Result:
    """Energy and forces of the slab through the ASE calculator."""
    atoms = slab()
    atoms.calc = DeployedCalculator(str(artifact), device="cpu")
    return Result(float(atoms.get_potential_energy()), atoms.get_forces(apply_constraint=False))


def run_model(name: str, attributes: Dict, workdir: Path) -> Dict[str, Result]:
    """Write one random checkpoint, export it in every format, predict with each."""
    checkpoint = workdir / f"{name}.pt"
    write_random_checkpoint(name, attributes, checkpoint)
    results = {}
    for fmt, suffix in FORMATS.items():
        artifact = workdir / f"{name}{suffix}"
        export(checkpoint, fmt, artifact)
        results[fmt] = predict(artifact)
    return results


def report(rows: Dict[str, Dict[str, Result]]) -> List[str]:
    """The energies (random weights) and, last, the agreement between formats."""
    lines = ["", RANDOM_WEIGHTS_NOTE, "", f"{'model':<10} {'format':<12} {'E (eV)':>14} {'max|F| (eV/A)':>14}"]
    for name, results in rows.items():
        for fmt, result in results.items():
            lines.append(f"{name:<10} {fmt:<12} {result.energy:14.6f} {np.abs(result.forces).max():14.4f}")
    lines += ["", "Agreement between formats (the numbers to look at):", agreement_note()]
    lines.append(f"{'model':<10} {'formats':<22} {'|dE| (eV)':>10} {'|dE|/|E|':>10} {'max|dF| (eV/A)':>15} {'max|dF|/max|F|':>15}")
    for name, results in rows.items():
        reference = results[REFERENCE_FORMAT]
        for fmt, result in results.items():
            if fmt == REFERENCE_FORMAT:
                continue
            energy_error = abs(result.energy - reference.energy)
            forces_error = float(np.abs(result.forces - reference.forces).max())
            lines.append(
                f"{name:<10} {REFERENCE_FORMAT + ' vs ' + fmt:<22} {energy_error:10.2e} {energy_error / abs(reference.energy):10.2e} "
                f"{forces_error:15.2e} {forces_error / np.abs(reference.forces).max():15.2e}"
            )
    return lines


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default=None, help="keep the checkpoints and artifacts in DIR (default: a temporary folder, removed at the end)")
    arguments = parser.parse_args(argv)
    keep = arguments.workdir is not None
    workdir = Path(arguments.workdir) if keep else Path(tempfile.mkdtemp(prefix=WORKDIR_PREFIX))
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"working in {workdir}" + ("" if keep else " (removed at the end; --workdir DIR keeps the files)"))
    try:
        rows = {name: run_model(name, attributes, workdir) for name, attributes in MODELS.items()}
        print("\n".join(report(rows)))
    except subprocess.CalledProcessError as error:
        sys.exit(f"quickstart: {' '.join(error.cmd[:2])} ... failed with exit code {error.returncode} (its message is above)")
    finally:
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)
    if keep:
        print(f"\ncheckpoints and artifacts kept in {workdir}")


if __name__ == "__main__":
    sys.exit(main())
