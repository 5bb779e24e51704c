"""The seed of a random test: ``SEED`` from the environment, or a fresh one; always reported
so that ``SEED=<n>`` replays the run exactly. Shared by the cocotb and Amaranth-simulator tiers.
"""

import os
import random


__all__ = ["seed_from_env"]


def seed_from_env(report=print):
    """Return the seed, after passing ``"seed=<n> (replay with SEED=<n>)"`` to ``report``."""
    seed = int(os.environ.get("SEED") or random.randrange(1 << 32))
    report(f"seed={seed} (replay with SEED={seed})")
    return seed
