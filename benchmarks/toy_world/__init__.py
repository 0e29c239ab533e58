"""A toy world in which P3S's effect can be measured end to end on a CPU (see docs/toy_world.md)."""
