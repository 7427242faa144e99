"""Sweeps (docs/sweeps.md): a TOML spec (`spec`) expanded into tasks with dependencies
(`plan`), run on local worker processes or Ray (`backends`) by the scheduler (`schedule`);
`driver` is what `moegs-bench sweep` calls. Importing this package loads nothing heavy: a
worker process pins its GPU before torch loads."""
