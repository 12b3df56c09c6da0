import torch

from x2ct.data.reference import mean_volume


class Volumes:
    """The part of ``PatientDRRDataset`` that ``mean_volume`` reads: ``len``, ``patient_ids``, ``ct(i)``
    ``(1, D, H, W)`` and ``scanned(patient_id, shape)``: here patient i scanned the slices from ``first[i]`` on."""

    def __init__(self, values, first=None):
        self.values = values
        self.first = first or [0] * len(values)
        self.patient_ids = [str(i) for i in range(len(values))]

    def __len__(self):
        return len(self.values)

    def ct(self, index):
        return torch.full((1, 2, 3, 4), float(self.values[index]))

    def scanned(self, patient_id, shape):
        mask = torch.ones(1, *shape, dtype=torch.bool)
        mask[:, : self.first[int(patient_id)]] = False
        return mask


def test_mean_volume_averages_the_first_limit_patients():
    volumes = Volumes([1.0, 3.0, 100.0])
    assert mean_volume(volumes).shape == (1, 2, 3, 4)
    assert torch.allclose(mean_volume(volumes), torch.full((1, 2, 3, 4), 104.0 / 3))
    assert torch.allclose(mean_volume(volumes, limit=2), torch.full((1, 2, 3, 4), 2.0))


def test_each_voxel_is_averaged_over_the_patients_that_scanned_it():
    # patient 0 scanned slice 1 only, patient 1 both slices, patient 2 neither
    mean = mean_volume(Volumes([1.0, 3.0, 100.0], first=[1, 0, 2]))
    assert torch.allclose(mean[0, 0], torch.full((3, 4), 3.0))
    assert torch.allclose(mean[0, 1], torch.full((3, 4), 2.0))
    nobody = mean_volume(Volumes([1.0, 3.0], first=[1, 1]))
    assert torch.equal(nobody[0, 0], torch.zeros(3, 4)) and torch.allclose(nobody[0, 1], torch.full((3, 4), 2.0))
