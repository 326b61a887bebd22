"""A train/test split that stays stable while an active-learning dataset grows.

Each structure gets a number u in [0, 1) from a hash of its content (species, positions,
cell, pbc) and the seed. With a fraction ``test_size`` < 1, a structure is a test structure
when u < test_size; with a count ``test_size`` >= 1, the ``test_size`` structures of smallest u
are. So a structure keeps its role in every iteration: a structure trained on in iteration 1
never turns up in the test set of iteration 2 (which a random split of the grown dataset
would do, making warm-started test errors look better than they are).

If a fraction selects no structure, the one with smallest u is taken, so a test set exists.
"""
from __future__ import annotations

import numpy as np
from ase import Atoms

from pace_worker.errors import InputError
from pace_worker.fingerprint import structure_fingerprint


def hash_uniform(atoms: Atoms, seed: int, purpose: str = "split") -> float:
    return int(structure_fingerprint(atoms, salt=f"{purpose}:{seed}")[:13], 16) / float(16 ** 13)


def stable_split(structures: list[Atoms], test_size: float, seed: int, where: str = "dataset"):
    """Return (train_indices, test_indices), both sorted.

    Raises InputError when the split would leave the training or the test set empty.
    """
    n = len(structures)
    if test_size == 0:
        return list(range(n)), []
    if test_size >= 1 and float(test_size) != int(test_size):
        raise InputError(f"data.test_size = {test_size}: use a fraction in [0, 1) or a whole number of structures")
    u = np.array([hash_uniform(a, seed) for a in structures])
    order = np.argsort(u, kind="stable")
    if test_size >= 1:
        n_test = int(test_size)
        test = set(order[:n_test].tolist())
    else:
        test = set(np.nonzero(u < test_size)[0].tolist()) or {int(order[0])}
        n_test = len(test)
    if n < 2 or n_test >= n:
        need = int(test_size) + 1 if test_size >= 1 else 2
        raise InputError(f"{where} has {n} structure(s), too few for data.test_size = {test_size} "
                         f"(need at least {need} so that training and test sets are both non-empty); "
                         "add structures or set data.test_size: 0")
    train_idx = [i for i in range(n) if i not in test]
    return train_idx, sorted(test)


MIN_STRUCTURES_FOR_VALIDATION = 10


def validation_split(structures: list[Atoms], validation_size: float, seed: int) -> tuple[list[int], list[int]]:
    """``(fit_indices, validation_indices)`` of training structures: the validation structures are
    held out of the fit to choose between candidate potentials. Stable like the test split (a hash
    of its own, so the two are independent): a structure keeps its role as the dataset grows.

    No validation set below :data:`MIN_STRUCTURES_FOR_VALIDATION` structures or with
    ``validation_size`` 0; a fraction that selects nothing takes the structure of smallest hash.
    """
    n = len(structures)
    if validation_size <= 0 or n < MIN_STRUCTURES_FOR_VALIDATION:
        return list(range(n)), []
    u = np.array([hash_uniform(a, seed, "validation") for a in structures])
    held = set(np.nonzero(u < validation_size)[0].tolist()) or {int(np.argmin(u))}
    return [i for i in range(n) if i not in held], sorted(held)
