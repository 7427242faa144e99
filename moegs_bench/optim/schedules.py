"""Learning-rate schedules."""

from __future__ import annotations

import math


def exp_decay(step: int, lr_init: float, lr_final: float, max_steps: int,
              delay_steps: int = 0, delay_mult: float = 1.0) -> float:
    """3DGS's `get_expon_lr_func`: log-linear from lr_init to lr_final over max_steps,
    with an optional sine-eased warm-up over delay_steps starting at delay_mult x."""
    if max_steps <= 0 or lr_init == lr_final:
        return lr_init
    if delay_steps > 0:
        delay = delay_mult + (1 - delay_mult) * math.sin(0.5 * math.pi * min(max(step / delay_steps, 0), 1))
    else:
        delay = 1.0
    s = min(max(step / max_steps, 0.0), 1.0)
    return delay * math.exp(math.log(lr_init) * (1 - s) + math.log(lr_final) * s)
