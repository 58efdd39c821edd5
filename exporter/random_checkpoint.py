"""Trainer-format checkpoints with seeded random weights (demos, benchmarks, tests).

``write_random_checkpoint(model_name, model_attributes, path, seed, noise)``
builds the rewrite for ``model_attributes``, perturbs every float weight by
``noise`` times N(0, 1) (buffers named ``*scale_factor`` / ``*offset`` are
left alone), and saves the same layout fairchem's OCP trainer writes:
``state_dict`` with ``module.module.`` prefixes, an old-style ``config``
(``"model": name``, ``"model_attributes"``), OC20 ``normalizers``,
``scale_dict`` (every ScaleFactor 1.0) and the usual extra trainer keys.

``PUBLISHED`` holds the published OC20 S2EF model configurations (PaiNN
h512, GemNet-OC base; ``shared/reference/ocp-models.md``). At those widths
use ``noise=0`` (the modules' own initialisation): extra noise compounds
over 512-wide layers and overflows float32.
"""

import copy
from pathlib import Path
from typing import Any, Dict, Tuple, Union

import torch

from .models import REWRITES
from .models.layers import ScaleFactor

# OC20 S2EF normalizers (energy and forces), as the published checkpoints carry them.
OC20_ENERGY_MEAN = -0.7554450631141663
OC20_STD = 2.887317180633545
DEFAULT_NOISE = 0.05
PRESERVED_SUFFIXES = ("scale_factor", "offset")

PAINN_H512: Dict[str, Any] = {
    "hidden_channels": 512,
    "num_layers": 6,
    "num_rbf": 128,
    "cutoff": 12.0,
    "max_neighbors": 50,
    "regress_forces": True,
    "direct_forces": True,
    "use_pbc": True,
}

GEMNET_OC_BASE: Dict[str, Any] = {
    "num_spherical": 7,
    "num_radial": 128,
    "num_blocks": 4,
    "emb_size_atom": 256,
    "emb_size_edge": 512,
    "emb_size_trip_in": 64,
    "emb_size_trip_out": 64,
    "emb_size_quad_in": 32,
    "emb_size_quad_out": 32,
    "emb_size_aint_in": 64,
    "emb_size_aint_out": 64,
    "emb_size_rbf": 16,
    "emb_size_cbf": 16,
    "emb_size_sbf": 32,
    "num_before_skip": 2,
    "num_after_skip": 2,
    "num_concat": 1,
    "num_atom": 3,
    "num_output_afteratom": 3,
    "num_atom_emb_layers": 2,
    "num_global_out_layers": 2,
    "cutoff": 12.0,
    "cutoff_qint": 12.0,
    "cutoff_aeaint": 12.0,
    "cutoff_aint": 12.0,
    "max_neighbors": 30,
    "max_neighbors_qint": 8,
    "max_neighbors_aeaint": 20,
    "max_neighbors_aint": 1000,
    "rbf": {"name": "gaussian"},
    "envelope": {"name": "polynomial", "exponent": 5},
    "cbf": {"name": "spherical_harmonics"},
    "sbf": {"name": "legendre_outer"},
    "extensive": True,
    "output_init": "HeOrthogonal",
    "activation": "silu",
    "regress_forces": True,
    "direct_forces": True,
    "forces_coupled": False,
    "quad_interaction": True,
    "atom_edge_interaction": True,
    "edge_atom_interaction": True,
    "atom_interaction": True,
    "qint_tags": [1, 2],
}

# name -> (checkpoint model name, model_attributes)
PUBLISHED: Dict[str, Any] = {
    "painn_h512": ("painn", PAINN_H512),
    "gemnet_oc_base": ("gemnet_oc", GEMNET_OC_BASE),
}


def random_weights(
    model_name: str, model_attributes: Dict[str, Any], seed: int = 0, noise: float = DEFAULT_NOISE
) -> Tuple[Dict[str, torch.Tensor], Dict[str, float]]:
    """(state_dict with the reference keys and seeded perturbed weights, scale_dict of 1.0s)."""
    torch.manual_seed(seed)
    core, _ = REWRITES[model_name](copy.deepcopy(model_attributes))
    state = core.state_dict()
    for key, value in state.items():
        if noise and value.is_floating_point() and not key.endswith(PRESERVED_SUFFIXES):
            state[key] = value + noise * torch.randn_like(value)
    scale_dict = {module.name or path: 1.0 for path, module in core.named_modules() if isinstance(module, ScaleFactor)}
    return state, scale_dict


def write_random_checkpoint(
    model_name: str,
    model_attributes: Dict[str, Any],
    path: Union[str, Path],
    seed: int = 0,
    noise: float = DEFAULT_NOISE,
) -> None:
    """Save a trainer-format checkpoint of ``model_name`` with random weights to ``path``."""
    state, scale_dict = random_weights(model_name, model_attributes, seed, noise)
    torch.save(
        {
            "state_dict": {f"module.module.{key}": value for key, value in state.items()},
            "config": {
                "model": model_name,
                "model_attributes": copy.deepcopy(model_attributes),
                "trainer": "ocp",
                "dataset": {"normalize_labels": True, "target_mean": OC20_ENERGY_MEAN, "target_std": OC20_STD},
            },
            "normalizers": {
                "target": {"mean": torch.tensor(OC20_ENERGY_MEAN), "std": torch.tensor(OC20_STD)},
                "grad_target": {"mean": torch.tensor(0.0), "std": torch.tensor(OC20_STD)},
            },
            "scale_dict": scale_dict,
            "epoch": 0,
            "step": 0,
            "optimizer": {},
            "scheduler": None,
            "ema": None,
            "amp": None,
        },
        str(path),
    )
