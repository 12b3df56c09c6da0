from torch import nn

from x2ct.models import count_parameters


def test_count_parameters_counts_trainable_scalars_unless_asked_for_all():
    model = nn.Sequential(nn.Linear(3, 4), nn.Conv2d(2, 5, 3))  # (3*4 + 4) + (2*5*9 + 5) = 16 + 95
    assert count_parameters(model) == 111
    model[1].weight.requires_grad_(False)
    assert count_parameters(model) == 111 - 90
    assert count_parameters(model, trainable_only=False) == 111
