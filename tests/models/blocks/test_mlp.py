"""Tests for x2ct/models/blocks/mlp.py: the transformer MLP both attention blocks share."""

from __future__ import annotations

import torch

from x2ct.models.blocks.mlp import TransformerMLP
from x2ct.models.blocks.swin import SwinTransformerBlock3D
from x2ct.models.view_blocks.cross_view import CrossViewAttention


def test_tokens_keep_their_shape_and_are_transformed_one_by_one():
    torch.manual_seed(0)
    mlp = TransformerMLP(8, mlp_ratio=2.0)
    tokens = torch.randn(2, 3, 5, 8)
    out = mlp(tokens)
    assert out.shape == tokens.shape and mlp[0].out_features == 16
    torch.testing.assert_close(out[1, 2, 4], mlp(tokens[1, 2, 4]))  # no token sees another


def test_both_attention_blocks_keep_the_parameter_names_of_trained_checkpoints():
    names = ["mlp.0.weight", "mlp.0.bias", "mlp.3.weight", "mlp.3.bias"]
    for block in (SwinTransformerBlock3D(8, 2), CrossViewAttention(8, 2)):
        assert isinstance(block.mlp, TransformerMLP)
        assert [k for k in block.state_dict() if k.startswith("mlp.")] == names
