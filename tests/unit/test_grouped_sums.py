"""Padded-slot aggregation (exporter/models/layers.py, runtime/slots.py).

Checked against a plain Python loop over the entries: sums per destination
group of outer products, empty groups zero, and the gradient of the sum.
"""

import torch

from ocpdeploy.exporter.models.gemnet_oc_layers import grouped_outer_sum
from ocpdeploy.exporter.models.layers import pad_groups
from ocpdeploy.runtime.slots import slots as _slots

NUM_GROUPS = 7


def _entries(seed=0):
    generator = torch.Generator().manual_seed(seed)
    out = torch.sort(torch.randint(0, NUM_GROUPS - 1, (40,), generator=generator)).values  # last group stays empty
    a = torch.randn(40, 3, generator=generator, dtype=torch.float64)
    b = torch.randn(40, 5, generator=generator, dtype=torch.float64)
    return out, a, b


def test_slots_enumerate_each_group_and_kmax_is_the_largest_group():
    out = torch.tensor([0, 0, 2, 2, 2, 5])
    slot, kmax = _slots(out, 6)
    assert slot.tolist() == [0, 1, 0, 1, 2, 0]
    assert kmax.shape == (3,)
    empty_slot, empty_kmax = _slots(torch.zeros(0, dtype=torch.long), 4)
    assert empty_slot.shape == (0,) and empty_kmax.shape == (0,)


def test_grouped_outer_sum_equals_a_loop_over_entries():
    out, a, b = _entries()
    slot, kmax = _slots(out, NUM_GROUPS)
    a.requires_grad_(True)
    b.requires_grad_(True)
    result = grouped_outer_sum(pad_groups(a, out, slot, kmax, NUM_GROUPS), b, out, slot, kmax)
    expected = torch.zeros(NUM_GROUPS, 3, 5, dtype=torch.float64)
    for t in range(out.shape[0]):
        expected[out[t]] += torch.outer(a[t], b[t]).detach()
    torch.testing.assert_close(result.detach(), expected, rtol=1e-12, atol=1e-12)
    assert torch.count_nonzero(result[NUM_GROUPS - 1]) == 0
    # d(sum of result * w)/d b[t] = a[t] @ w[out[t]]
    weights = torch.randn(NUM_GROUPS, 3, 5, dtype=torch.float64)
    (grad_b,) = torch.autograd.grad((result * weights).sum(), b)
    torch.testing.assert_close(grad_b, torch.einsum("ts,tsc->tc", a.detach(), weights[out]), rtol=1e-12, atol=1e-12)


def test_no_entries_gives_zeros():
    out = torch.zeros(0, dtype=torch.long)
    slot, kmax = _slots(out, NUM_GROUPS)
    result = grouped_outer_sum(pad_groups(torch.zeros(0, 3), out, slot, kmax, NUM_GROUPS), torch.zeros(0, 5), out, slot, kmax)
    assert result.shape == (NUM_GROUPS, 3, 5) and torch.count_nonzero(result) == 0
