"""moegs-bench: reproduce and extend MoE-GS (Mixture of Experts for Dynamic Gaussian Splatting).

Data flow (docs/architecture.md): raw dataset -> `data.prepare` -> prepared scene on disk ->
`data.load` -> SceneData on a device -> `experts` (stage 1) -> `moe` (stage 2) -> `eval` ->
`bench.store` (tidy rows) -> `report`.
"""

__version__ = "0.1.0"
