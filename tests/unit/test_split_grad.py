"""``SplitWeightGrad``: the shared layer's weight gradient computed block by block in the step's own
backward equals autograd's, and each block's norm equals that group's own gradient's."""

import pytest
import torch
from torch import nn

from tokenize_mm.balance.split_grad import SplitWeightGrad


def _net(bias: bool) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 12), nn.GELU(), nn.Linear(12, 5, bias=bias), nn.Tanh())


@pytest.mark.parametrize("bias", [False, True])
def test_blocks_sum_to_the_gradient_and_give_each_group_its_norm(bias):
    x = torch.randn(3, 7, 6)
    rows = torch.randint(0, 3, (3, 7))
    rows[0, :] = 0  # group 3 has no row: its norm is 0
    weights = torch.tensor([0.5, 2.0, 1.0])

    def loss_of(net, group=None):
        y = net(x).pow(2).sum(-1)  # per position: nothing mixes rows after the layer
        if group is not None:
            return (y * (rows == group)).sum() * weights[group]
        return (y * weights[rows]).sum()

    reference = _net(bias)
    loss_of(reference).backward()
    own = []
    for group in range(4):
        net = _net(bias)
        (loss_of(net, group) if group < 3 else net(x).sum() * 0).backward()
        own.append(float(net[2].weight.grad.norm()))

    net = _net(bias)
    with SplitWeightGrad(net[2], groups=4) as split:
        loss = loss_of(net)
    split.rows = rows
    loss.backward()
    assert net[2].forward.__func__ is nn.Linear.forward  # the layer has its forward back
    for a, b in zip(net.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad)
    (norms,) = split.norms()
    assert norms.tolist() == pytest.approx(own, rel=1e-5, abs=1e-7)
    assert norms[3] == 0


def test_a_later_call_is_one_block_of_its_own():
    net = _net(False)
    a, b = torch.randn(2, 4, 6), torch.randn(5, 6)
    with SplitWeightGrad(net[2], groups=2) as split:
        first, second = net(a).sum(), net(b).pow(2).sum()
    split.rows = torch.zeros(2, 4, dtype=torch.long)
    (first + second).backward()
    only_second = _net(False)
    only_second(b).pow(2).sum().backward()
    first_norms, second_norms = split.norms()
    assert len(first_norms) == 2 and len(second_norms) == 1
    assert float(second_norms[0]) == pytest.approx(
        float(only_second[2].weight.grad.norm()), rel=1e-5
    )
