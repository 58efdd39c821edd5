"""The fairchem-core 1.10.0 reference, loaded from one of our checkpoints (benchmarks and fixture generation only).

fairchem is never a dependency of ocp-deploy; this module is imported only
where it is installed (``pip install -e ".[reference]"`` does not bring the
compiled torch_scatter / torch_sparse it needs: see
``tests/data/generate_reference.py`` for how to build them).

``install_stand_ins()`` replaces packages the reference imports but never
uses on the PaiNN/GemNet-OC inference path (lmdb, wandb, numba, ...) with
empty modules. ``reference_model(checkpoint_path)`` builds the reference
model class from the checkpoint's ``model_attributes`` and loads it the
manual way (strip ``module.`` prefixes, ``load_state_dict(strict=True)``,
``load_scales_compat``, ``eval``). ``reference_predict(model, atoms)`` runs
what ``OCPCalculator.calculate`` runs: ``AtomsToGraphs.convert``,
``data_list_collater(otf_graph=True)``, ``model(batch)``, denormalisation.
"""

import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types
from typing import Any, Dict, Set, Tuple

STAND_IN_PACKAGES = {
    "numba", "wandb", "submitit", "lmdb", "tensorboard", "e3nn", "hydra",
    "omegaconf", "torchtnt", "pymatgen", "orjson", "huggingface_hub",
}
MODULE_PREFIX = "module."


class _Anything:
    """Stands for any attribute of a stand-in module; a no-op decorator when called on a function."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if len(args) == 1 and callable(args[0]) and not kwargs:
            return args[0]
        return _Anything()

    def __getattr__(self, name: str) -> Any:
        return _Anything()


class _StandInModule(types.ModuleType):
    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return _Anything()


class _StandInFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def __init__(self) -> None:
        self.imported: Set[str] = set()

    def find_spec(self, fullname, path, target=None):  # type: ignore[no-untyped-def]
        if fullname.split(".")[0] in STAND_IN_PACKAGES:
            self.imported.add(fullname)
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):  # type: ignore[no-untyped-def]
        module = _StandInModule(spec.name)
        module.__path__ = []
        return module

    def exec_module(self, module):  # type: ignore[no-untyped-def]
        pass


_FINDER = _StandInFinder()


def install_stand_ins() -> Set[str]:
    """Install the stand-in finder (once); returns the set of stand-in modules imported so far."""
    if _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)
    return _FINDER.imported


def available() -> bool:
    """True when fairchem-core and its compiled extensions are importable."""
    return all(importlib.util.find_spec(name) is not None for name in ("fairchem", "torch_scatter", "torch_sparse", "torch_geometric"))


def reference_classes() -> Dict[str, Any]:
    install_stand_ins()
    from fairchem.core.models.gemnet_oc.gemnet_oc import GemNetOC
    from fairchem.core.models.painn.painn import PaiNN

    return {"gemnet_oc": GemNetOC, "painn": PaiNN}


def reference_model(checkpoint_path: str) -> Tuple[Any, Dict[str, float]]:
    """(reference model in eval mode, normalizers {energy_mean, energy_std, forces_std})."""
    import torch

    install_stand_ins()
    from fairchem.core.modules.scaling.compat import load_scales_compat

    checkpoint = torch.load(checkpoint_path, weights_only=True)
    config = checkpoint["config"]
    name = config["model"] if isinstance(config["model"], str) else config["model"]["name"]
    attributes = dict(config.get("model_attributes") or {k: v for k, v in config["model"].items() if k != "name"})
    model = reference_classes()[name](**attributes)
    state_dict = {}
    for key, value in checkpoint["state_dict"].items():
        while key.startswith(MODULE_PREFIX):
            key = key[len(MODULE_PREFIX):]
        state_dict[key] = value
    model.load_state_dict(state_dict, strict=True)
    load_scales_compat(model, checkpoint.get("scale_dict") or None)
    normalizers = checkpoint["normalizers"]
    return model.eval(), {
        "energy_mean": float(normalizers["target"]["mean"]),
        "energy_std": float(normalizers["target"]["std"]),
        "forces_std": float(normalizers["grad_target"]["std"]),
    }


def reference_predict(model: Any, normalizers: Dict[str, float], atoms: Any) -> Dict[str, Any]:
    """Energy (eV) and forces (N,3) eV/A as OCPCalculator computes them."""
    import torch

    from fairchem.core.datasets.lmdb_dataset import data_list_collater
    from fairchem.core.preprocessing import AtomsToGraphs

    a2g = AtomsToGraphs(r_energy=False, r_forces=False, r_distances=False, r_edges=False, r_pbc=True)
    batch = data_list_collater([a2g.convert(atoms)], otf_graph=True)
    with torch.no_grad():
        out = model(batch)
    energy = float(out["energy"].detach().reshape(-1)[0]) * normalizers["energy_std"] + normalizers["energy_mean"]
    forces = out["forces"].detach().double().numpy() * normalizers["forces_std"]
    return {"energy": energy, "forces": forces}
