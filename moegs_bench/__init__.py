"""moegs-bench: reproduce and extend MoE-GS (Mixture of Experts for Dynamic Gaussian Splatting).

Data flow (docs/architecture.md): raw dataset -> `data.prepare` -> prepared scene on disk ->
`data.load` -> SceneData on a device -> `experts` (stage 1) -> `moe` (stage 2) -> `eval` ->
`bench.store` (tidy rows) -> `report`.
"""

import os

__version__ = "0.1.0"

# Read by OpenMP when torch loads, so it must be set before the first `import torch`: idle
# OpenMP threads sleep instead of spinning, which on a busy CPU kept the cores from the
# thread every parallel region waits for (10x slower; docs/performance.md "CPU under
# contention"). A value the user set is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
