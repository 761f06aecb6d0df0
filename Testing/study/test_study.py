"""``s2dc study`` end to end on tiny phantoms: the split, every cell, the results, resuming, errors."""

import json
import shutil

import numpy as np
import pytest

from S2DCCore.cli.main import main
from S2DCCore.data.phantoms import PhantomConfig, write_phantom_cohort
from S2DCCore.errors import DataError, UsageError
from S2DCCore.study.config import StudyConfig
from S2DCCore.study.plan import plan_study, write_cohorts
from S2DCCore.study.runner import run_study


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    return write_phantom_cohort(tmp_path_factory.mktemp("study") / "cohort", cases=4, seed=3,
                                config=PhantomConfig(size=64))


TINY = StudyConfig(methods=("scratch", "s2dc"), label_counts=(1, 2), finetune_label_counts=(1,), seeds=(0, 1),
                   pretrain_steps=2, finetune_steps=2, test_cases=1, probe_voxels=50, device="cpu")


def test_plan_holds_out_test_cases_from_pretraining(cohort, tmp_path):
    plan = plan_study(cohort, TINY)
    assert [c.name for c in plan.labelled] == ["case_000", "case_001", "case_002"]
    assert [c.name for c in plan.test] == ["case_003"]
    assert plan.test[0].image.resolve() not in {p.resolve() for p in plan.pretrain_images}
    assert len(plan.pretrain_images) == 3 and plan.intensity == "ct"
    paths = write_cohorts(plan, tmp_path, (1, 2))
    k2 = json.loads((paths["k2"] / "dataset.json").read_text())
    assert [e["image"] for e in k2["training"]] == [str(c.image) for c in plan.labelled[:2]]
    assert [e["image"] for e in k2["test"]] == [str(plan.test[0].image)]
    assert "label" not in json.dumps(json.loads((paths["pretrain"] / "dataset.json").read_text()))


def test_plan_rejects_a_pool_that_holds_a_test_image(cohort, tmp_path):
    data = tmp_path / "c"
    shutil.copytree(cohort, data)
    manifest = json.loads((data / "dataset.json").read_text())
    manifest["test"] = [manifest["training"].pop()]
    (data / "pool").mkdir()
    shutil.copy(data / manifest["test"][0]["image"], data / "pool" / "leak.nii.gz")
    manifest["study"] = {"pretrain": "imagesTr"}  # the test image still lives in imagesTr
    (data / "dataset.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match="pretraining pool holds test image"):
        plan_study(data, TINY)
    manifest["study"] = {"pretrain": "pool"}  # a copy under another name is a different file: allowed
    (data / "dataset.json").write_text(json.dumps(manifest))
    assert [p.name for p in plan_study(data, TINY).pretrain_images] == ["leak.nii.gz"]


def test_plan_reads_probe_flip_axes(cohort, tmp_path):
    data = tmp_path / "c"
    shutil.copytree(cohort, data)
    manifest = json.loads((data / "dataset.json").read_text())
    assert plan_study(data, TINY).probe_flip_axes == ()
    manifest["study"] = {"probe_flip_axes": [0]}
    (data / "dataset.json").write_text(json.dumps(manifest))
    assert plan_study(data, TINY).probe_flip_axes == (0,)
    manifest["study"] = {"probe_flip_axes": [3]}
    (data / "dataset.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match="probe_flip_axes"):
        plan_study(data, TINY)


def test_mirrored_case_keeps_the_grid_and_flips_the_anatomy():
    from S2DCCore.io.image import Image
    from S2DCCore.study.runner import _mirrored

    array = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    affine = np.diag([2.0, 1.0, 1.0, 1.0])
    flipped = _mirrored(Image(array, affine), 0)
    np.testing.assert_array_equal(flipped.array, array[::-1])
    np.testing.assert_array_equal(flipped.affine, affine)


def test_plan_needs_enough_labelled_cases(cohort):
    with pytest.raises(DataError, match="label count 4"):
        plan_study(cohort, StudyConfig(label_counts=(1, 4), test_cases=1))
    with pytest.raises(UsageError, match="unknown method"):
        StudyConfig(methods=("mae",))
    with pytest.raises(UsageError, match="not among the label counts"):
        StudyConfig(label_counts=(1, 2), finetune_label_counts=(4,))


def _cells(out):
    return {p: (p.stat().st_mtime_ns, p.read_text()) for p in out.rglob("*.json")
            if p.parent.name != "results" and "cohorts" not in p.parts and p.name != "model.json"
            and "checkpoints" not in p.parts and "encoder" not in p.parts and p.name != "config.json"}


@pytest.mark.slow
def test_study_end_to_end_resumes_without_recomputing(cohort, tmp_path):
    out = tmp_path / "study"
    summary = run_study(cohort, out, TINY)
    for kind, ks in (("probe", (1, 2)), ("finetune", (1,))):
        for method in ("scratch", "s2dc"):
            table = summary[kind][method]
            assert sorted(table) == list(ks)
            for k in ks:
                assert len(table[k]["values"]) == 2 and 0.0 <= table[k]["mean"] <= 1.0
    assert set(summary["floors"]) == {"intensity-only (floor)"}
    assert set(summary["probe_delta_vs_scratch"]) == {"s2dc"}
    delta = summary["probe_delta_vs_scratch"]["s2dc"][1]
    np.testing.assert_allclose(delta["mean"], summary["probe"]["s2dc"][1]["mean"] - summary["probe"]["scratch"][1]["mean"],
                               atol=1e-12)
    results = out / "results"
    for name in ("results.csv", "table.md", "learning_curve.png", "report.html", "summary.json"):
        assert (results / name).stat().st_size > 0
    rows = (results / "results.csv").read_text().splitlines()
    assert rows[0].startswith("evaluation,method,k,seed,structure")
    # probe: 2 methods × 2 K × 2 seeds; floor: 2 K × 2 seeds; fine-tune: 2 methods × 1 K × 2 seeds; 12 structures + mean
    assert len(rows) - 1 == (8 + 4 + 4) * 13
    pretrain = json.loads((out / "pretrain" / "s2dc" / "result.json").read_text())
    assert pretrain["steps"] == 2 and pretrain["seconds"] > 0
    assert json.loads((out / "finetune" / "s2dc" / "k1_s0" / "model" / "model.json").read_text())[
        "encoder_provenance"]["method"] == "s2dc"

    before = _cells(out)
    assert len(before) == 1 + 1 + 8 + 4 + 4  # study.json, pretrain, probes, floors, fine-tunes
    run_study(cohort, out, TINY)  # a rerun recomputes nothing
    assert _cells(out) == before

    # A stopped study continues: lost cells are recomputed, the others kept.
    lost = [out / "probe" / "s2dc" / "k2_s1.json", out / "finetune" / "scratch" / "k1_s1" / "result.json"]
    for path in lost:
        path.unlink()
    shutil.rmtree(out / "finetune" / "scratch" / "k1_s1" / "checkpoints")  # stopped before its first checkpoint
    run_study(cohort, out, TINY)
    after = _cells(out)
    assert set(after) == set(before)
    assert [p for p in before if after[p] != before[p]] == sorted(lost, key=list(before).index)
    # Same seed, same cell: the probe is deterministic.
    old, new = json.loads(before[lost[0]][1]), json.loads(after[lost[0]][1])
    assert old["summary"]["mean_dice"] == pytest.approx(new["summary"]["mean_dice"], abs=1e-6)

    with pytest.raises(UsageError, match="other settings"):
        run_study(cohort, out, StudyConfig(**{**TINY.__dict__, "seeds": (0,)}))


def test_cli_study_errors_are_one_line(cohort, tmp_path, capsys):
    unlabelled = tmp_path / "plain"
    unlabelled.mkdir()
    shutil.copy(cohort / "imagesTr" / "case_000.nii.gz", unlabelled)
    assert main(["study", "--data", str(unlabelled), "--out", str(tmp_path / "s")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(unlabelled) in err and "labelled cohort" in err
    assert not (tmp_path / "s").exists()
    assert main(["study", "--data", str(cohort), "--out", str(tmp_path / "s"), "--seeds", "a"]) == 2
    assert "--seeds" in capsys.readouterr().err
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "mine.txt").write_text("keep")
    assert main(["study", "--data", str(cohort), "--out", str(tmp_path / "busy"), "--test-cases", "1",
                 "--label-counts", "1"]) == 2
    assert (tmp_path / "busy" / "mine.txt").read_text() == "keep"


def test_probe_only_study_of_the_shipped_encoder_uses_its_own_grid(tmp_path, monkeypatch):
    """``--methods scratch,default``: no pretraining cell for the shipped encoder, and its probe reads the
    volume on the encoder's own working grid and intensity preset (the card's), not the study's."""
    from S2DCCore.inference.model_io import default_model_dir, load_model
    from S2DCCore.study import probe

    cohort = write_phantom_cohort(tmp_path / "c", cases=3, seed=5, config=PhantomConfig(size=32, fov_mm=96.0))
    card = load_model(default_model_dir()).preprocess
    seen = []
    real = probe.encoder_features

    def spy(image, encoder, preprocess, **kwargs):
        seen.append((_grid(preprocess.spacing), preprocess.preset))
        return real(image, encoder, preprocess, **kwargs)

    monkeypatch.setattr(probe, "encoder_features", spy)
    config = StudyConfig(methods=("scratch", "default"), label_counts=(1,), finetune_label_counts=(), seeds=(0,),
                         test_cases=1, probe_voxels=50, device="cpu")
    summary = run_study(cohort, tmp_path / "study", config)
    assert not (tmp_path / "study" / "pretrain").exists()
    assert 0.0 < summary["probe"]["default"][1]["mean"] <= 1.0
    assert set(summary["probe_delta_vs_scratch"]) == {"default"}
    from S2DCCore.study.runner import pretrain_config

    study = pretrain_config("s2dc", config, "ct").preprocess
    study_grid = (_grid(study.spacing), study.preset)
    assert study_grid != (_grid(card.spacing), card.preset)
    assert (_grid(card.spacing), card.preset) in seen and study_grid in seen
    with pytest.raises(UsageError, match="default"):
        StudyConfig(methods=("nope",))


def _grid(spacing):
    return None if spacing is None else tuple(float(s) for s in spacing)
