import pytest
import torch

from x2ct.losses import LOSS_COMPONENTS, LossComponent, ReconstructionLoss, register_loss_component
from x2ct.models import Reconstruction


@pytest.fixture
def with_mean_pred():
    """A second component, so weights and skipping can be seen: the mean of pred."""
    saved = dict(LOSS_COMPONENTS)

    @register_loss_component("mean_pred")
    class MeanPred(LossComponent):
        def forward(self, pred, target):
            return pred.mean()

    yield
    LOSS_COMPONENTS.clear()
    LOSS_COMPONENTS.update(saved)


def volumes():
    pred = torch.tensor([0.0, 0.5, 1.0, 0.25]).view(1, 1, 1, 2, 2).requires_grad_()
    target = torch.tensor([1.0, 0.5, 0.0, 0.75]).view(1, 1, 1, 2, 2)
    return pred, target  # l1 = (1 + 0 + 1 + 0.5) / 4 = 0.625; mean(pred) = 0.4375


def test_l1_total_matches_a_hand_computation_and_has_gradients():
    pred, target = volumes()
    total, parts = ReconstructionLoss({"l1": 1.0})(Reconstruction(pred), target)
    assert total.item() == pytest.approx(0.625)
    assert parts == {"l1": pytest.approx(0.625)}
    total.backward()
    # d/dpred mean|pred - target| = sign(pred - target) / 4
    torch.testing.assert_close(pred.grad.flatten(), torch.tensor([-0.25, 0.0, 0.25, -0.25]))


def test_weights_scale_the_total_and_parts_stay_unweighted_and_detached(with_mean_pred):
    pred, target = volumes()
    total, parts = ReconstructionLoss({"l1": 2.0, "mean_pred": 0.5})(Reconstruction(pred), target)
    assert total.item() == pytest.approx(2.0 * 0.625 + 0.5 * 0.4375)
    assert parts["l1"].item() == pytest.approx(0.625)
    assert parts["mean_pred"].item() == pytest.approx(0.4375)
    assert all(v.ndim == 0 and not v.requires_grad for v in parts.values())


def test_zero_weight_components_are_skipped(with_mean_pred):
    loss = ReconstructionLoss({"l1": 1.0, "mean_pred": 0.0})
    assert list(loss.components) == ["l1"]
    pred, target = volumes()
    total, parts = loss(Reconstruction(pred), target)
    assert set(parts) == {"l1"}
    assert total.item() == pytest.approx(0.625)


def test_unknown_or_invalid_weights_are_rejected():
    with pytest.raises(ValueError, match=r"unknown loss component 'ssmi'; known components: \[.*'l1'"):
        ReconstructionLoss({"l1": 1.0, "ssmi": 0.0})
    with pytest.raises(ValueError, match=r"weight for 'l1' must be a finite number >= 0, got -1"):
        ReconstructionLoss({"l1": -1.0})
    with pytest.raises(ValueError, match=r"at least one component with a positive weight"):
        ReconstructionLoss({"l1": 0.0})
    with pytest.raises(ValueError, match=r"unknown loss component 'ssim3'"):
        ReconstructionLoss({"l1": 1.0}, component_kwargs={"ssim3": {"sigma": 1.5}})


def test_deep_supervision_outputs_go_to_their_component_and_the_volume_to_the_others():
    target = torch.rand(2, 1, 8, 8, 8)
    coarse = torch.nn.functional.interpolate(target, scale_factor=0.5, mode="area")
    loss = ReconstructionLoss({"l1": 1.0, "deep_supervision": 0.5})
    total, parts = loss(Reconstruction(target + 0.1, deep_supervision=[coarse + 0.2]), target)
    assert parts["l1"].item() == pytest.approx(0.1, abs=1e-6)
    assert parts["deep_supervision"].item() == pytest.approx(0.2, abs=1e-6)
    assert total.item() == pytest.approx(0.1 + 0.5 * 0.2, abs=1e-6)
    # a volume alone is fine for validation (volume_only), an error in training
    total, parts = loss(Reconstruction(target + 0.1), target, volume_only=True)
    assert set(parts) == {"l1"} and total.item() == pytest.approx(0.1, abs=1e-6)
    with pytest.raises(ValueError, match="model returns no deep-supervision outputs"):
        loss(Reconstruction(target + 0.1), target)
    with pytest.raises(ValueError, match="patch_origins and patch_size are given together"):
        Reconstruction(target, patch_origins=torch.zeros(2, 3, dtype=torch.long))


def test_a_patch_output_is_compared_with_the_same_crop_of_the_target():
    target = torch.rand(2, 1, 8, 8, 8)
    origins = torch.tensor([[0, 2, 4], [4, 4, 0]])
    patch = torch.stack([target[0, :, 0:4, 2:6, 4:8], target[1, :, 4:8, 4:8, 0:4]]) + 0.25
    coarse = torch.nn.functional.interpolate(target, scale_factor=0.5, mode="area")
    loss = ReconstructionLoss({"l1": 1.0, "deep_supervision": 1.0})
    _, parts = loss(Reconstruction(patch, deep_supervision=[coarse], patch_origins=origins, patch_size=4), target)
    assert parts["l1"].item() == pytest.approx(0.25, abs=1e-6)
    assert parts["deep_supervision"].item() == pytest.approx(0.0, abs=1e-6)  # whole coarse volumes, whole target


# ------------------------------------------------------------------------------------- unscanned voxels

ALL_COMPONENTS = {"l1": 1.0, "ssim": 0.3, "perceptual": 0.2, "edge": 0.2, "frequency": 0.3, "deep_supervision": 0.2}
RANDOM_VGG = {"perceptual": {"weights": "random", "slices_per_axis": 2}}


def scanned_case(seed: int = 0):
    """A 12^3 prediction with a 6^3 deep-supervision output; the first and last 2 slices were not scanned."""
    g = torch.Generator().manual_seed(seed)
    volume = torch.rand(2, 1, 12, 12, 12, generator=g).requires_grad_()
    coarse = torch.rand(2, 1, 6, 6, 6, generator=g).requires_grad_()
    target = torch.rand(2, 1, 12, 12, 12, generator=g)
    scanned = torch.ones_like(target, dtype=torch.bool)
    scanned[:, :, :2] = scanned[:, :, -2:] = False
    return volume, coarse, target, scanned


def loss_and_grads(criterion, volume, coarse, target, scanned):
    volume.grad = coarse.grad = None
    total, _ = criterion(Reconstruction(volume, deep_supervision=[coarse]), target, scanned=scanned)
    total.backward()
    return total.detach(), volume.grad.clone(), coarse.grad.clone()


def test_unscanned_voxels_carry_no_error_and_no_gradient_in_any_component():
    criterion = ReconstructionLoss(ALL_COMPONENTS, RANDOM_VGG)
    volume, coarse, target, scanned = scanned_case()
    total, grad, coarse_grad = loss_and_grads(criterion, volume, coarse, target, scanned)
    assert grad[~scanned].abs().max() == 0 and grad[scanned].abs().max() > 0
    # coarse voxels over an unscanned slice: slice 0 of 6 covers fine slices 0-1 (unscanned)
    assert coarse_grad[:, :, 0].abs().max() == 0 and coarse_grad[:, :, -1].abs().max() == 0
    assert coarse_grad[:, :, 1:-1].abs().max() > 0
    # whatever the model paints where nobody scanned, the loss is the same
    with torch.no_grad():
        volume[~scanned] = 1.0 - volume[~scanned]
        coarse[:, :, 0] = 0.0
    assert loss_and_grads(criterion, volume, coarse, target, scanned)[0] == total


def test_an_all_scanned_mask_changes_nothing_bit_for_bit_and_scanned_only_false_ignores_the_mask():
    torch.manual_seed(0)  # the same random VGG in both criteria
    criterion = ReconstructionLoss(ALL_COMPONENTS, RANDOM_VGG)
    volume, coarse, target, scanned = scanned_case(1)
    plain = loss_and_grads(criterion, volume, coarse, target, None)
    masked = loss_and_grads(criterion, volume, coarse, target, torch.ones_like(scanned))
    for a, b in zip(plain, masked, strict=True):
        assert torch.equal(a, b)
    torch.manual_seed(0)
    everywhere = ReconstructionLoss(ALL_COMPONENTS, RANDOM_VGG, scanned_only=False)
    for a, b in zip(plain, loss_and_grads(everywhere, volume, coarse, target, scanned), strict=True):
        assert torch.equal(a, b)


def test_a_patch_output_sees_the_same_crop_of_the_mask():
    volume, _, target, scanned = scanned_case(2)
    patch = volume[:, :, :4, :4, :4].detach().clone().requires_grad_()  # origin 0: slices 0-1 unscanned
    pred = Reconstruction(patch, patch_origins=torch.zeros(2, 3, dtype=torch.long), patch_size=4)
    total, _ = ReconstructionLoss({"l1": 1.0})(pred, target, scanned=scanned)
    total.backward()
    assert patch.grad[:, :, :2].abs().max() == 0 and patch.grad[:, :, 2:].abs().min() > 0
    expected = (patch[:, :, 2:] - target[:, :, 2:4, :4, :4]).abs().sum() / patch.numel()
    assert total.item() == pytest.approx(expected.item())


def test_a_mask_of_another_shape_is_refused():
    volume, _, target, scanned = scanned_case()
    with pytest.raises(ValueError, match="scanned mask"):
        ReconstructionLoss({"l1": 1.0})(Reconstruction(volume), target, scanned=scanned[:, :, 1:])
