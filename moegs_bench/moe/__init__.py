"""MoE-GS stage 2: routers over frozen experts (vapr, pixel, volume), their training and
evaluation, and the baselines every mixture is compared with (docs/moe.md)."""
