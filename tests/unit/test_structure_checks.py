"""The runtime's numpy structure checks give the messages of the TorchScript twin that artifacts embed."""

import numpy as np
import pytest
import torch

from ocpdeploy.runtime import checks, validate

MIN_Z, MAX_Z = 1, 83
GOOD = {
    "positions": np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 2.0], [1.0, 1.0, 1.0], [2.0, 0.0, 0.0]]),
    "atomic_numbers": np.array([29, 29, 8, 6], dtype=np.int64),
    "cell": np.eye(3) * 5.0,
    "pbc": np.array([True, True, False]),
    "tags": np.array([0, 1, 2, 2], dtype=np.int64),
}
SINGULAR = np.array([[3.0, 0, 0], [3.0, 0, 0], [0, 0, 3.0]])


def _with(**changes):
    return {**GOOD, **changes}


BAD = {
    "positions width": _with(positions=np.zeros((4, 2))),
    "positions rank": _with(positions=np.zeros(12)),
    "no atoms": _with(positions=np.zeros((0, 3)), atomic_numbers=np.zeros(0, np.int64), tags=np.zeros(0, np.int64)),
    "integer positions": _with(positions=np.zeros((4, 3), dtype=np.int64)),
    "atomic numbers count": _with(atomic_numbers=np.array([29, 29, 8], dtype=np.int64)),
    "float atomic numbers": _with(atomic_numbers=np.array([29.0, 29.0, 8.0, 6.0])),
    "tags count": _with(tags=np.zeros(5, np.int64)),
    "cell shape": _with(cell=np.eye(2)),
    "pbc shape": _with(pbc=np.array([True, True])),
    "NaN position": _with(positions=np.where(np.arange(12).reshape(4, 3) == 7, np.nan, GOOD["positions"])),
    "inf position": _with(positions=np.where(np.arange(12).reshape(4, 3) == 11, np.inf, GOOD["positions"])),
    "element above range": _with(atomic_numbers=np.array([29, 118, 8, 6], dtype=np.int64)),
    "element below range": _with(atomic_numbers=np.array([29, 0, 8, 6], dtype=np.int64)),
    "NaN cell with pbc": _with(cell=np.full((3, 3), np.nan)),
    "singular cell with pbc": _with(cell=SINGULAR),
}


def _message(check, structure, as_array):
    try:
        check(*(as_array(structure[name]) for name in ("positions", "atomic_numbers", "cell", "pbc", "tags")), MIN_Z, MAX_Z)
    except ValueError as error:
        return str(error)
    return None


def _scripted_message(structure):
    """The TorchScript twin's message, with its dtype names written as numpy writes them."""
    message = _message(validate.check_structure, structure, torch.from_numpy)
    return None if message is None else message.replace(" tensor, got torch.", " array, got ")


@pytest.mark.parametrize("case", sorted(BAD))
def test_numpy_checks_match_the_torchscript_twin(case):
    message = _message(checks.check_structure, BAD[case], np.asarray)
    assert message is not None and "\n" not in message
    assert message == _scripted_message(BAD[case])


def test_good_structures_pass_both():
    for structure in (GOOD, _with(cell=SINGULAR, pbc=np.array([False, False, False])), _with(cell=np.zeros((3, 3)), pbc=np.zeros(3, bool))):
        assert _message(checks.check_structure, structure, np.asarray) is None
        assert _scripted_message(structure) is None


def test_the_first_non_finite_atom_is_named():
    assert "(first at atom 2)" in _message(checks.check_structure, BAD["NaN position"], np.asarray)
    assert "(first at atom 3)" in _message(checks.check_structure, BAD["inf position"], np.asarray)


def test_same_singular_cell_bound():
    assert checks.MIN_CELL_VOLUME == validate.MIN_CELL_VOLUME
