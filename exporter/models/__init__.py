"""Scriptable rewrites of the OCP models, registered by checkpoint model name.

Contract of a rewrite (every entry of ``REWRITES``)
---------------------------------------------------
``build(model_attributes: dict) -> (core, graph)`` where

* ``graph`` is a scriptable ``nn.Module`` from ``ocpdeploy.runtime`` (it is
  embedded in TorchScript artifacts and run by the Python runtime before an
  ONNX session)::

      graph(positions (N,3), cell (B,3,3), pbc (B,3) bool, natoms (B,) int64,
            tags (N,) int64) -> Dict[str, Tensor]

  It returns only integer index tensors and integer-valued ``cell_offsets``
  (as float, the dtype of ``positions``); geometry is recomputed by the core
  so that it is differentiable. Its attribute ``input_names: List[str]``
  lists the keys, in the order they are fed to ONNX.

* ``core`` is a scriptable ``nn.Module`` that holds the weights under the
  reference's ``state_dict`` keys (``core.load_state_dict(reference_sd)``
  works key for key) and has::

      core.energy_and_forces(positions (N,3), cell (B,3,3), atomic_numbers (N,),
            batch (N,), graph: Dict[str, Tensor]) -> Tuple[Tensor, Tensor]

  returning the *raw* (normalised) per-structure energy (B,) and the raw
  direct forces (N,3) (an empty (0,3) tensor when the model has no direct
  force head). Denormalisation and gradient forces are added by
  ``ocpdeploy.exporter.deployed``.

An unknown model name raises an error that lists the known ones.
"""

from typing import Callable, Dict, Tuple

from torch import nn

from .gemnet_oc import build_gemnet_oc
from .painn import build_painn

REWRITES: Dict[str, Callable[[dict], Tuple[nn.Module, nn.Module]]] = {
    "gemnet_oc": build_gemnet_oc,
    "painn": build_painn,
}

__all__ = ["REWRITES"]
