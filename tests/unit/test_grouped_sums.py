"""Padded-slot aggregation (exporter/models/layers.py, runtime/slots.py).

Checked against a plain Python loop over the entries: sums per destination
group of outer products, empty groups zero, and the gradient of the sum.
"""

import torch

from ocpdeploy.exporter.models.gemnet_oc_layers import grouped_outer_sum
from ocpdeploy.exporter.models.layers import pad_groups, padded_index, padding_mask
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


NUM_ROWS = 9  # rows gathered per entry (fewer than entries: rows repeat)


def test_grouped_outer_sum_equals_a_loop_over_entries():
    """sum_{t: out[t] = g} a[t] (x) rows[in[t]] through the padded gather table."""
    out, a, _ = _entries()
    generator = torch.Generator().manual_seed(1)
    rows = torch.randn(NUM_ROWS, 5, generator=generator, dtype=torch.float64)
    entry_in = torch.randint(0, NUM_ROWS, (out.shape[0],), generator=generator)
    slot, kmax = _slots(out, NUM_GROUPS)
    a.requires_grad_(True)
    rows.requires_grad_(True)
    table = padded_index(entry_in, out, slot, kmax, NUM_GROUPS)
    result = grouped_outer_sum(pad_groups(a, out, slot, kmax, NUM_GROUPS), rows, table)
    expected = torch.zeros(NUM_GROUPS, 3, 5, dtype=torch.float64)
    for t in range(out.shape[0]):
        expected[out[t]] += torch.outer(a[t], rows[entry_in[t]]).detach()
    torch.testing.assert_close(result.detach(), expected, rtol=1e-12, atol=1e-12)
    assert torch.count_nonzero(result[NUM_GROUPS - 1]) == 0
    # d(sum of result * w)/d rows[r] = sum_{t: in[t] = r} a[t] @ w[out[t]]
    weights = torch.randn(NUM_GROUPS, 3, 5, dtype=torch.float64)
    (grad_rows,) = torch.autograd.grad((result * weights).sum(), rows)
    per_entry = torch.einsum("ts,tsc->tc", a.detach(), weights[out])
    expected_grad = torch.zeros(NUM_ROWS, 5, dtype=torch.float64).index_add_(0, entry_in, per_entry)
    torch.testing.assert_close(grad_rows, expected_grad, rtol=1e-12, atol=1e-12)


def test_padded_index_and_mask_place_entries_at_their_slots():
    out = torch.tensor([0, 0, 2, 2, 2])
    slot, kmax = _slots(out, 3)
    table = padded_index(torch.tensor([4, 7, 5, 6, 8]), out, slot, kmax, 3)
    assert table.tolist() == [4, 7, 0, 0, 0, 0, 5, 6, 8]
    mask = padding_mask(out, slot, kmax, 3, torch.float32)
    assert mask.tolist() == [1, 1, 0, 0, 0, 0, 1, 1, 1]


def test_no_entries_gives_zeros():
    out = torch.zeros(0, dtype=torch.long)
    slot, kmax = _slots(out, NUM_GROUPS)
    result = grouped_outer_sum(pad_groups(torch.zeros(0, 3), out, slot, kmax, NUM_GROUPS), torch.zeros(0, 5), padded_index(out, out, slot, kmax, NUM_GROUPS))
    assert result.shape == (NUM_GROUPS, 3, 5) and torch.count_nonzero(result) == 0
