"""ASE calculator around a deployed artifact (TorchScript, ONNX or AOTInductor).

With an ONNX artifact it runs on numpy, ase and ONNX Runtime alone; torch
is imported only for a ``.pt`` or ``.pt2`` (``model.load_model``).
"""

from typing import Any, List, Optional

from ase.calculators.calculator import Calculator, all_changes
from ase.stress import full_3x3_to_voigt_6_stress

from .model import DeployedModel, load_model


class DeployedCalculator(Calculator):
    """``atoms.calc = DeployedCalculator("model.onnx", device="cpu")``.

    Energy in eV (also reported as ``free_energy``), forces in eV/A, and for
    conservative artifacts on fully periodic structures the stress in
    eV/A^3 (Voigt order, ASE sign). Tags come from ``atoms.get_tags()``.
    """

    implemented_properties: List[str] = ["energy", "free_energy", "forces", "stress"]

    def __init__(self, model: Any, device: str = "cpu", threads: Optional[int] = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.model: DeployedModel = model if isinstance(model, DeployedModel) else load_model(str(model), device=device, threads=threads)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        if "stress" in properties and not self.model.has_stress:
            raise NotImplementedError(
                f"{self.model.path}: stress needs an artifact exported with --forces conservative (this one is '{self.model.forces_mode}')"
            )
        result = self.model.predict(self.atoms)
        self.results = {"energy": result["energy"], "free_energy": result["energy"], "forces": result["forces"]}
        if "stress" in result:
            self.results["stress"] = full_3x3_to_voigt_6_stress(result["stress"])
        elif "stress" in properties:
            raise NotImplementedError("stress is only defined for fully periodic structures")
