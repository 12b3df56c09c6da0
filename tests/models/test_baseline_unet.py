import pytest
import torch

from x2ct.models import BaselineUNet, baseline_unet, count_parameters

TINY = {"num_views": 2, "view_size": 32, "volume_size": 16, "base_channels": 4, "depth": 3,
        "view_angles_deg": (0.0, 90.0)}


def tiny(**overrides) -> BaselineUNet:
    torch.manual_seed(0)
    return BaselineUNet(**{**TINY, **overrides})


def test_forward_gives_a_volume_clipped_to_unit_range_in_eval():
    model = tiny()
    torch.nn.init.normal_(model.head.weight, std=1.0)  # a trained head (it starts at zero)
    views = torch.rand(3, 2, 1, 32, 32)
    raw = model(views).volume  # training mode: linear output, so gradients reach values outside [0, 1]
    assert raw.shape == (3, 1, 16, 16, 16) and (raw.min() < 0 or raw.max() > 1)
    out = model.eval()(views).volume
    assert out.min() >= 0.0 and out.max() <= 1.0
    torch.testing.assert_close(out, raw.clamp(0, 1))


def test_prior_starts_the_output_at_the_mean_volume():
    model = tiny()
    torch.nn.init.zeros_(model.head.weight)
    torch.nn.init.zeros_(model.head.bias)
    mean = torch.rand(1, 16, 16, 16)
    model.initialise_prior(mean)
    out = model.eval()(torch.rand(2, 2, 1, 32, 32)).volume
    torch.testing.assert_close(out, mean.expand(2, 1, 16, 16, 16))
    without = tiny(learned_prior=False)
    assert count_parameters(model) - count_parameters(without) == 16**3
    without.initialise_prior(mean)  # a no-op without a template


@pytest.mark.parametrize("angles", [(0.0,), (0.0, 90.0, 45.0)])
def test_any_number_of_views_at_any_angle(angles):
    model = tiny(num_views=len(angles), view_angles_deg=angles)
    assert model(torch.rand(2, len(angles), 1, 32, 32)).volume.shape == (2, 1, 16, 16, 16)


@pytest.mark.parametrize("norm", ["batch", "group", "none"])
def test_other_norms_and_mean_fusion(norm):
    model = tiny(norm=norm, fusion="mean", dropout=0.1, view_size=16)
    assert model(torch.rand(2, 2, 1, 16, 16)).volume.shape == (2, 1, 16, 16, 16)


def test_parameter_count_at_the_reference_configuration():
    model = BaselineUNet(num_views=2, view_size=128, volume_size=64, base_channels=32, depth=4,
                         view_angles_deg=(0.0, 90.0))
    n = count_parameters(model)
    assert 13_500_000 <= n <= 16_500_000
    assert f"{n:,}" in baseline_unet.__doc__, "update the count quoted in the module docstring"


def test_the_head_starts_at_zero_so_the_output_starts_at_the_template():
    model = tiny()
    assert model.head.weight.abs().sum() == 0 and model.head.bias.abs().sum() == 0
    assert tiny(learned_prior=False).head.weight.abs().sum() > 0


def test_every_parameter_receives_a_gradient():
    model = tiny(dropout=0.1)
    torch.nn.init.normal_(model.head.weight, std=0.1)  # as after the first optimizer step (it starts at zero)
    out = model(torch.rand(2, 2, 1, 32, 32)).volume
    torch.nn.functional.l1_loss(out, torch.rand_like(out)).backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


def test_bad_inputs_name_what_was_expected():
    with pytest.raises(ValueError, match=r"view_angles_deg has 1 angles \[0.0\] but num_views=2"):
        BaselineUNet(num_views=2, view_angles_deg=(0.0,))
    with pytest.raises(ValueError, match=r"volume_size=20 must be divisible by 2\*\*\(depth-1\)=8"):
        BaselineUNet(volume_size=20, depth=4)
    with pytest.raises(ValueError, match=r"expects views \(B, 2, 1, 32, 32\)"):
        tiny()(torch.rand(1, 2, 1, 16, 16))
