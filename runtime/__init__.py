"""ocp-deploy runtime: graph construction, artifact loading, inference, ASE calculator.

Never imports the exporter: artifacts are self-describing.
"""

from .calculator import DeployedCalculator
from .metadata import ArtifactError
from .model import AotiModel, DeployedModel, InferenceError, OnnxModel, TorchScriptModel, load_model

__all__ = ["AotiModel", "ArtifactError", "DeployedCalculator", "DeployedModel", "InferenceError", "OnnxModel", "TorchScriptModel", "load_model"]
