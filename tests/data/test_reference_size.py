"""How many training CTs the mean-volume reference averages: what every place showing it states."""

import torch

from tests.data.test_reference import Volumes
from x2ct.data.reference import MEAN_VOLUME_PATIENTS, mean_volume, mean_volume_patients


def test_the_reference_averages_the_first_64_patients_or_all_of_a_smaller_split():
    assert MEAN_VOLUME_PATIENTS == 64
    assert mean_volume_patients(Volumes(range(112))) == 64 and mean_volume_patients(Volumes(range(3))) == 3
    assert mean_volume_patients(Volumes(range(112)), limit=200) == 112
    # the stated size is the one averaged: 0..63 -> 31.5, where all 112 would give 55.5
    assert torch.allclose(mean_volume(Volumes(range(112))), torch.full((1, 2, 3, 4), 31.5))
