"""dynamo: dynamical-systems analysis of looped (weight-tied) transformer blocks.

A looped block ``h_{t+1} = f_θ(h_t, x)`` is wrapped in a :class:`LoopedSystem` and analysed by
verbs that return frozen results saying what is proven and what is estimated.

>>> import torch, dynamo as dy
>>> model = dy.models.LoopedTransformer(d_model=16, n_heads=2, recall="outer", norm="outer")
>>> x = torch.randn(2, 6, 16, generator=torch.Generator().manual_seed(0))
>>> system = dy.LoopedSystem.from_module(model, x)
>>> sol = dy.solve(system, system.initial_states("input"), method="picard", throw=False)
>>> sol.method, len(sol.outcomes)
('picard', 2)
"""

from . import errors as errors
from . import llm as llm
from . import models as models
from . import plots as plots
from . import protocols as protocols
from . import tasks as tasks
from ._attractors import Attractors as Attractors
from ._attractors import attractors as attractors
from ._axes import AxesReport as AxesReport
from ._axes import Geometry as Geometry
from ._axes import InputDependence as InputDependence
from ._axes import Reachability as Reachability
from ._axes import geometry as geometry
from ._axes import ift_sensitivity as ift_sensitivity
from ._axes import input_dependence as input_dependence
from ._axes import reachability as reachability
from ._axes import stability_axes as stability_axes
from ._basins import BasinGraph as BasinGraph
from ._basins import CellMap as CellMap
from ._basins import Plane as Plane
from ._basins import basin_entropy as basin_entropy
from ._basins import basin_graph as basin_graph
from ._basins import cell_mapping as cell_mapping
from ._basins import label_states as label_states
from ._checkpoint import Checkpoint as Checkpoint
from ._checkpoint import CheckpointError as CheckpointError
from ._checkpoint import load_checkpoint as load_checkpoint
from ._checkpoint import save_checkpoint as save_checkpoint
from ._contraction import ContractionVerdict as ContractionVerdict
from ._contraction import Evidence as Evidence
from ._contraction import Verdict as Verdict
from ._contraction import check_contraction as check_contraction
from ._contraction import lyapunov_certificate as lyapunov_certificate
from ._executor import RayExecutor as RayExecutor
from ._fixed_points import Continuum as Continuum
from ._fixed_points import Cycle as Cycle
from ._fixed_points import FixedPoint as FixedPoint
from ._fixed_points import FixedPointSet as FixedPointSet
from ._fixed_points import find_fixed_points as find_fixed_points
from ._halting import HALTING_RULES as HALTING_RULES
from ._halting import HaltingReport as HaltingReport
from ._halting import halting as halting
from ._interval import BasinCertificate as BasinCertificate
from ._interval import Enumeration as Enumeration
from ._interval import PointProof as PointProof
from ._interval import ProofOutcome as ProofOutcome
from ._interval import ProvenRoot as ProvenRoot
from ._interval import enumerate_fixed_points as enumerate_fixed_points
from ._interval import prove_fixed_point as prove_fixed_point
from ._layers import LayerCycle as LayerCycle
from ._layers import layer_cycle as layer_cycle
from ._linearize import JacobianOperator as JacobianOperator
from ._linearize import input_jacobian as input_jacobian
from ._linearize import jacobian as jacobian
from ._linearize import jacobian_operator as jacobian_operator
from ._lipschitz import Bound as Bound
from ._lipschitz import BoundStep as BoundStep
from ._lipschitz import Domain as Domain
from ._lipschitz import LayerBound as LayerBound
from ._lipschitz import OpCall as OpCall
from ._lipschitz import RuleContext as RuleContext
from ._lipschitz import lipschitz_lower_bound as lipschitz_lower_bound
from ._lipschitz import lipschitz_rules as lipschitz_rules
from ._lipschitz import lipschitz_upper_bound as lipschitz_upper_bound
from ._lipschitz import register_lipschitz_rule as register_lipschitz_rule
from ._lipschitz import unregister_lipschitz_rule as unregister_lipschitz_rule
from ._results import Outcome as Outcome
from ._results import Trust as Trust
from ._solvers import METHODS as METHODS
from ._solvers import Solution as Solution
from ._solvers import default_tolerance as default_tolerance
from ._solvers import solve as solve
from ._spectral import SpectralEstimate as SpectralEstimate
from ._spectral import eigenvalues as eigenvalues
from ._spectral import log_norm as log_norm
from ._spectral import singular_values as singular_values
from ._spectral import spectral_norm as spectral_norm
from ._spectral import spectral_radius as spectral_radius
from ._stats import UnseenEstimate as UnseenEstimate
from ._stats import chao1 as chao1
from ._stats import clopper_pearson as clopper_pearson
from ._system import LoopedSystem as LoopedSystem
from ._system import Trajectory as Trajectory
from ._training import AccuracyCurve as AccuracyCurve
from ._training import TrainResult as TrainResult
from ._training import task_accuracy as task_accuracy
from ._training import train_looped as train_looped

__version__ = "0.1.0"

__all__ = [
    "HALTING_RULES",
    "METHODS",
    "AccuracyCurve",
    "Attractors",
    "AxesReport",
    "BasinCertificate",
    "BasinGraph",
    "Bound",
    "BoundStep",
    "CellMap",
    "Checkpoint",
    "CheckpointError",
    "Continuum",
    "ContractionVerdict",
    "Cycle",
    "Domain",
    "Enumeration",
    "Evidence",
    "FixedPoint",
    "FixedPointSet",
    "Geometry",
    "HaltingReport",
    "InputDependence",
    "JacobianOperator",
    "LayerBound",
    "LayerCycle",
    "LoopedSystem",
    "OpCall",
    "Outcome",
    "Plane",
    "PointProof",
    "ProofOutcome",
    "ProvenRoot",
    "RayExecutor",
    "Reachability",
    "RuleContext",
    "Solution",
    "SpectralEstimate",
    "TrainResult",
    "Trajectory",
    "Trust",
    "UnseenEstimate",
    "Verdict",
    "attractors",
    "basin_entropy",
    "basin_graph",
    "cell_mapping",
    "chao1",
    "check_contraction",
    "clopper_pearson",
    "default_tolerance",
    "eigenvalues",
    "enumerate_fixed_points",
    "errors",
    "find_fixed_points",
    "geometry",
    "halting",
    "ift_sensitivity",
    "input_dependence",
    "input_jacobian",
    "jacobian",
    "jacobian_operator",
    "label_states",
    "layer_cycle",
    "lipschitz_lower_bound",
    "lipschitz_rules",
    "lipschitz_upper_bound",
    "llm",
    "load_checkpoint",
    "log_norm",
    "lyapunov_certificate",
    "models",
    "plots",
    "protocols",
    "prove_fixed_point",
    "reachability",
    "register_lipschitz_rule",
    "save_checkpoint",
    "singular_values",
    "solve",
    "spectral_norm",
    "spectral_radius",
    "stability_axes",
    "task_accuracy",
    "tasks",
    "train_looped",
    "unregister_lipschitz_rule",
]
