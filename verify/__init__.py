"""verify: certification of looped blocks, reports, and the ``dynamo`` command line.

>>> import verify
>>> verify.DEFAULT_ARCHITECTURE["recall"], verify.DEFAULT_ARCHITECTURE["norm"]
('outer', 'outer')
"""

from ._reach import DEFAULT_ARCHITECTURE as DEFAULT_ARCHITECTURE
from ._reach import ReachabilityReport as ReachabilityReport
from ._reach import clopper_pearson as clopper_pearson
from ._reach import default_model as default_model
from ._reach import default_system as default_system
from ._reach import reachability_report as reachability_report

__all__ = [
    "DEFAULT_ARCHITECTURE",
    "ReachabilityReport",
    "clopper_pearson",
    "default_model",
    "default_system",
    "reachability_report",
]
