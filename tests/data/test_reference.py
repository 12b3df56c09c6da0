import torch

from x2ct.data.reference import mean_volume


class Volumes:
    """The part of ``PatientDRRDataset`` that ``mean_volume`` reads: ``len`` and ``ct(i)`` ``(1, D, H, W)``."""

    def __init__(self, values):
        self.values = values

    def __len__(self):
        return len(self.values)

    def ct(self, index):
        return torch.full((1, 2, 3, 4), float(self.values[index]))


def test_mean_volume_averages_the_first_limit_patients():
    volumes = Volumes([1.0, 3.0, 100.0])
    assert mean_volume(volumes).shape == (1, 2, 3, 4)
    assert torch.allclose(mean_volume(volumes), torch.full((1, 2, 3, 4), 104.0 / 3))
    assert torch.allclose(mean_volume(volumes, limit=2), torch.full((1, 2, 3, 4), 2.0))
