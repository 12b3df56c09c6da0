import pytest
import torch

from x2ct.models.blocks.attention_gate import AttentionGate3D


def test_shapes_with_a_coarser_gate_and_map_in_open_unit_interval():
    gate_block = AttentionGate3D(skip_channels=6, gate_channels=10)
    assert gate_block.theta.conv.out_channels == 3  # default inter_channels = skip_channels // 2
    skip, gate = torch.randn(2, 6, 8, 8, 6), torch.randn(2, 10, 4, 4, 3)
    out, psi = gate_block(skip, gate, return_attention=True)
    assert out.shape == skip.shape
    assert psi.shape == (2, 1, 8, 8, 6)
    assert ((psi > 0) & (psi < 1)).all()
    torch.testing.assert_close(out, skip * psi)
    torch.testing.assert_close(gate_block.last_attention, psi.detach())
    assert not gate_block.last_attention.requires_grad
    assert AttentionGate3D(1, 4).theta.conv.out_channels == 1  # floor of one channel


def test_zero_psi_weights_give_a_constant_sigmoid_of_the_bias():
    gate_block = AttentionGate3D(4, 8, inter_channels=2)
    with torch.no_grad():
        gate_block.psi.weight.zero_()
        gate_block.psi.bias.fill_(0.7)
    skip, gate = torch.randn(1, 4, 6, 6, 6), torch.randn(1, 8, 3, 3, 3)
    torch.testing.assert_close(gate_block(skip, gate), skip * torch.sigmoid(torch.tensor(0.7)), rtol=0, atol=0)


def test_the_gate_changes_the_map():
    gate_block = AttentionGate3D(4, 8)
    skip, gate = torch.randn(1, 4, 6, 6, 6), torch.randn(1, 8, 3, 3, 3)
    _, psi_a = gate_block(skip, gate, return_attention=True)
    _, psi_b = gate_block(skip, -gate, return_attention=True)
    assert not torch.allclose(psi_a, psi_b)


def test_gradients_reach_all_parameters_and_both_inputs():
    gate_block = AttentionGate3D(4, 8)
    skip = torch.randn(2, 4, 6, 6, 6, requires_grad=True)
    gate = torch.randn(2, 8, 3, 3, 3, requires_grad=True)
    gate_block(skip, gate).square().sum().backward()
    for name, p in gate_block.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert skip.grad.abs().sum() > 0 and gate.grad.abs().sum() > 0


def test_rejects_mismatched_inputs():
    gate_block = AttentionGate3D(4, 8)
    with pytest.raises(ValueError, match=r"skip must be \(B, 4, D, H, W\), got \(1, 5, 6, 6, 6\)"):
        gate_block(torch.randn(1, 5, 6, 6, 6), torch.randn(1, 8, 3, 3, 3))
    with pytest.raises(ValueError, match=r"gate must be \(B=1, 8, d, h, w\), got \(2, 8, 3, 3, 3\)"):
        gate_block(torch.randn(1, 4, 6, 6, 6), torch.randn(2, 8, 3, 3, 3))
