"""The Colin27 + AAL study cohort: AAL grouping, hemisphere split geometry, crops, mirrored-atlas floor,
error paths; and the real cohort when the cache from tools/fetch_brain_data.sh is present."""

import json
import os
from pathlib import Path

import numpy as np
import pytest

from S2DCCore.data import brain
from S2DCCore.errors import DataError, UsageError
from S2DCCore.geometry import Grid

CACHE = Path(os.environ.get("S2DC_BRAIN_CACHE", Path.home() / ".cache" / "s2dc" / "brain"))


def _ras_grid(shape=(11, 6, 5), spacing=2.0, origin=(-10.0, -5.0, 3.0)):
    affine = np.diag([spacing] * 3 + [1.0])
    affine[:3, 3] = origin
    return Grid(shape, affine)


def test_aal_codes_group_by_first_digit(tmp_path):
    table = tmp_path / "aal.nii.txt"
    table.write_text("1 Precentral_L 2001\n2 Insula_L 3001\n3 Cingulum_Ant_L 4001\n4 Calcarine_L 5001\n"
                     "5 Postcentral_L 6001\n6 Caudate_L 7001\n7 Heschl_L 8101\n8 Vermis_1_2 9100\n\n")
    codes = brain.read_aal_codes(table)
    assert codes == {1: 2001, 2: 3001, 3: 4001, 4: 5001, 5: 6001, 6: 7001, 7: 8101, 8: 9100}
    aal = np.arange(9).reshape(3, 3, 1)
    assert brain.group_aal(aal, codes).ravel().tolist() == [0, 1, 2, 2, 3, 4, 5, 6, 7]
    with pytest.raises(ValueError, match="no class"):
        brain.group_aal(aal, {**codes, 8: 1234})
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(DataError, match="empty.txt"):
        brain.read_aal_codes(tmp_path / "empty.txt")


def test_hemisphere_split_keeps_world_coordinates_and_the_gap():
    grid = _ras_grid()  # x = −10, −8, …, 10
    left, right = brain.hemisphere_slices(grid, gap_mm=4.0)
    assert (left.start, left.stop) == (0, 3) and (right.start, right.stop) == (8, 11)  # |x| ≤ 4 dropped
    sub = brain.sub_grid(grid, (right, slice(1, 4), slice(None)))
    assert sub.shape == (3, 3, 5)
    for index in ([0, 0, 0], [2, 2, 4], [1, 0, 3]):
        original = np.array(index) + [right.start, 1, 0]
        np.testing.assert_allclose(sub.affine @ np.append(index, 1), grid.affine @ np.append(original, 1))
    with pytest.raises(ValueError, match="RAS"):
        brain.hemisphere_slices(Grid((4, 4, 4), np.diag([-1.0, 1.0, 1.0, 1.0])))


def test_mirrored_atlas_reads_the_other_side_at_minus_x():
    grid = _ras_grid(shape=(11, 2, 1))
    labels = np.zeros((11, 2, 1), dtype=np.uint8)
    labels[:3, 0, 0] = [1, 2, 3]  # x = −10, −8, −6
    labels[:3, 1, 0] = [4, 4, 5]
    left, right = brain.hemisphere_slices(grid)
    right_grid = brain.sub_grid(grid, (right, slice(None), slice(None)))  # x = 6, 8, 10
    left_grid = brain.sub_grid(grid, (left, slice(None), slice(None)))
    mirrored = brain.mirror_labels(labels[left], left_grid, right_grid)
    assert mirrored[:, 0, 0].tolist() == [3, 2, 1] and mirrored[:, 1, 0].tolist() == [5, 4, 4]


def test_nearest_resample_keeps_label_values():
    src = _ras_grid(shape=(4, 4, 4), spacing=1.0, origin=(0, 0, 0))
    labels = np.arange(64, dtype=np.uint8).reshape(4, 4, 4)
    dst = _ras_grid(shape=(2, 2, 2), spacing=2.0, origin=(0, 0, 0))  # voxel centres 0 and 2
    out = brain.nearest_resample(labels, src, dst)
    np.testing.assert_array_equal(out, labels[::2, ::2, ::2])


def test_crops_are_ordered_and_inside_the_volume():
    labels = np.zeros((20, 100, 80), dtype=np.uint8)
    labels[:, 10:95, 5:75] = 1
    starts = brain.crop_starts(labels, size=64)
    assert starts[0] == (20, 8)  # centred on the labelled box (y 10..94, z 5..74)
    assert starts[1] == (31, 11) and starts[2] == (10, 5) and starts[3] == (31, 5)
    assert all(0 <= y <= 36 and 0 <= z <= 16 for y, z in starts)


def test_cohort_errors_name_the_problem(tmp_path):
    with pytest.raises(DataError, match="fetch_brain_data.sh"):
        brain.write_colin27_cohort(tmp_path / "no-cache", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("mine")
    with pytest.raises(UsageError, match="not an empty folder"):
        brain.write_colin27_cohort(tmp_path / "no-cache", tmp_path / "busy")
    assert (tmp_path / "busy" / "keep.txt").read_text() == "mine"


@pytest.mark.skipif(not (CACHE / brain.FILES["aal"]).is_file(),
                    reason="no brain-data cache (run tools/fetch_brain_data.sh; S2DC_BRAIN_CACHE to point at it)")
def test_real_colin27_cohort(tmp_path):
    from S2DCCore.data.check import check_cohort
    from S2DCCore.evaluation import dice_score
    from S2DCCore.io.image import read_image
    from S2DCCore.study.config import StudyConfig
    from S2DCCore.study.plan import plan_study

    out = brain.write_colin27_cohort(CACHE, tmp_path / "colin27")
    assert check_cohort(out).ok
    manifest = json.loads((out / "dataset.json").read_text())
    assert manifest["study"]["grid"]["shape"] == [91, 109, 91]
    right = read_image(out / "labelsTr" / "colin27_right.nii.gz")
    assert right.shape == (43, 109, 91) and right.spacing == pytest.approx((2.0, 2.0, 2.0))
    assert set(np.unique(right.array)) == set(range(8))
    centres_x = right.affine @ np.array([[0, 0, 0, 1], [42, 0, 0, 1]]).T
    assert centres_x[0, 0] > 4.0  # every test voxel lies right of the gap
    crop = read_image(out / "imagesTr" / "colin27_left_crop0.nii.gz")
    assert crop.shape == (43, 64, 64) and (crop.affine @ [42, 0, 0, 1])[0] < -4.0
    mirrored = read_image(out / "floors" / "colin27_right_mirrored_atlas.nii.gz").array
    dice = [dice_score(mirrored == v, right.array == v) for v in range(1, 8)]
    assert 0.5 < np.mean(dice) < 0.95  # measured 0.80: Colin27 is not symmetric
    plan = plan_study(out, StudyConfig(test_cases=1))
    assert [c.name for c in plan.test] == ["colin27_right"]
    assert sorted(p.name for p in plan.pretrain_images) == ["itk_t1.nii.gz", "mni152_t1.nii.gz"]
    assert set(plan.floors) == {"mirrored atlas"} and plan.probe_flip_axes == (0,)
