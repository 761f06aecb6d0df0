"""Segment, embed and propagate through the logic on real MRML, each in a real worker process with a tiny
random-weight model. The jobs run side by side (they are non-blocking) while ``s2dc segment`` and
``s2dc propagate`` run on the same image as references. The input is an oblique, flipped grid under a
linear parent transform."""

from __future__ import annotations

import json
import sys
import time

import numpy as np
import pytest
import slicer

from S2DCExtensionLib import Commands, MRMLBridge, Segmentations
from S2DCExtensionLib.Logic import S2DCLogic, WorkerError

SHAPE = (24, 20, 16)


def _affine() -> np.ndarray:
    angle = 0.3
    affine = np.eye(4)
    affine[:3, :3] = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]]) \
        @ np.diag([-2.0, -1.8, 2.5])
    affine[:3, 3] = [30.0, 25.0, -20.0]
    return affine


def _parent() -> np.ndarray:
    matrix = np.eye(4)
    matrix[:3, :3] = [[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]]
    matrix[:3, 3] = [5.0, -3.0, 7.0]
    return matrix


@pytest.fixture(scope="module")
def runs(helpers, model_dirs, worker_env, tmp_path_factory):
    """All jobs started at once, polled until done (as the widget's timer does)."""
    scene = helpers.make_scene()
    work = tmp_path_factory.mktemp("inference")
    local = _affine()
    world = _parent() @ local
    image = helpers.cone(SHAPE, world)  # the structure sits in world space, where the core looks
    volume = MRMLBridge.addVolume(scene, image, local, "input")
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "move")
    transform.SetMatrixTransformToParent(MRMLBridge.matrixFromArray(_parent()))
    volume.SetAndObserveTransformNodeID(transform.GetID())

    import nibabel as nib  # the reference run reads the same image written independently of the bridge

    rng = np.random.default_rng(0)
    scribbles = np.zeros(SHAPE, dtype=np.int32)
    for value, mask in ((1, image < -60), (2, image > 40)):
        scribbles.reshape(-1)[rng.choice(np.flatnonzero(mask.reshape(-1)), 25, replace=False)] = value
    nib.save(nib.Nifti1Image(image, world), str(work / "reference_input.nii.gz"))
    nib.save(nib.Nifti1Image(scribbles, world), str(work / "reference_scribbles.nii.gz"))
    scribbleNode = Segmentations.labelmapToSegmentation(
        scene, scribbles, [Segmentations.LabelEntry(1, "outside", (20, 40, 60)),
                           Segmentations.LabelEntry(2, "ball", (250, 200, 0))], volume, name="scribbles")
    seed = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "seed")
    seedIjk = (12, 10, 8)
    seed.AddControlPoint(*(world @ [*seedIjk, 1.0])[:3])

    logic = S2DCLogic(scene=scene, python=sys.executable, env=worker_env)
    before = slicer.util.arrayFromVolume(volume).copy()
    jobs = {"segment": logic.startSegment(volume, model_dirs["segmenter"], device="cpu",
                                          options=("--sw-batch-size", "2")),
            "embed": logic.startEmbed(volume, model_dirs["encoder"], pca=True, clusters=3, seed=seed, device="cpu"),
            "propagate": logic.startPropagate(volume, model_dirs["encoder"], scribbleNode, device="cpu"),
            "not a model": logic.startSegment(volume, work, device="cpu"),  # fails fast, in the core's words
            # No model chosen: the encoder shipped with the core.
            # (structures only: a PCA volume would become the views' foreground, which the test above checks)
            "embed, default encoder": logic.startEmbed(volume, None, pca=False, clusters=2, device="cpu"),
            "propagate, default encoder": logic.startPropagate(volume, None, scribbleNode, device="cpu")}
    events = {name: [] for name in jobs}
    for job in jobs.values():
        job.start()
    # The references: `s2dc segment` and `s2dc propagate` on files written without the bridge, run in this
    # process (torch is imported here already) while the workers run.
    from S2DCCore.cli.main import main as s2dc

    source = str(work / "reference_input.nii.gz")
    assert s2dc(["segment", source, "--model", str(model_dirs["segmenter"]), "-o", str(work / "reference.nii.gz"),
                 "--device", "cpu"]) == 0
    assert s2dc(["propagate", source, "--model", str(model_dirs["encoder"]), "--scribbles",
                 str(work / "reference_scribbles.nii.gz"), "-o", str(work / "reference_propagated.nii.gz"),
                 "--device", "cpu"]) == 0
    deadline = time.monotonic() + 400
    while any(job.running for job in jobs.values()) and time.monotonic() < deadline:
        for name, job in jobs.items():
            events[name] += job.poll()
        time.sleep(0.1)
    results = {}
    for name, job in jobs.items():
        try:
            results[name] = job.result()
        except WorkerError as exc:
            results[name] = exc
    yield {"scene": scene, "volume": volume, "image": image, "world": world, "results": results, "events": events,
           "jobs": jobs, "before": before, "work": work, "scribbles": scribbles, "seedIjk": seedIjk}
    scene.Clear(1)


def test_segmentation_matches_the_cli_voxel_for_voxel_on_the_input_grid(runs):
    import nibabel as nib

    scene, volume, segmentation = runs["scene"], runs["volume"], runs["results"]["segment"]
    reference = nib.load(str(runs["work"] / "reference.nii.gz"))
    expected = np.asarray(reference.dataobj)
    assert len(np.unique(expected)) >= 2  # a comparison with some structure in it
    info = Segmentations.segmentInfo(segmentation)
    sidecar = json.loads((runs["work"] / "reference.json").read_text())["labels"]
    assert [(name, colour) for _, name, colour in info] == \
        [(entry["name"], tuple(entry["color"])) for entry in sidecar if entry["value"] != 0]
    # Segment n holds label value n here (labels 1, 2): read back on the input's own grid.
    labels = Segmentations.segmentsToLabels(scene, segmentation, volume)
    assert np.array_equal(labels, expected)
    np.testing.assert_allclose(reference.affine, runs["world"], atol=1e-4)  # the CLI's grid is the input's
    assert segmentation.GetParentTransformNode() is volume.GetParentTransformNode()
    assert segmentation.GetNodeReference(segmentation.GetReferenceImageGeometryReferenceRole()) is volume
    assert np.array_equal(slicer.util.arrayFromVolume(volume), runs["before"])  # input untouched
    progress = [e for e in runs["events"]["segment"] if type(e).__name__ == "ProgressEvent"]
    assert progress and progress[-1].step == progress[-1].total and progress[-1].phase == "segment"
    assert runs["jobs"]["segment"].process.args[-2:] == ["--sw-batch-size", "2"]  # extra CLI options pass through
    assert not runs["jobs"]["segment"].workDir.exists()  # temporary files removed


def test_embedding_overlays_are_nodes_on_the_input_grid(runs):
    volume, nodes = runs["volume"], runs["results"]["embed"]
    for node in (nodes.pca, nodes.similarity):
        np.testing.assert_allclose(MRMLBridge.ijkToRas(node), MRMLBridge.ijkToRas(volume), atol=1e-9)
        assert node.GetParentTransformNode() is volume.GetParentTransformNode()
    rgb, _ = MRMLBridge.volumeToArray(nodes.pca)
    assert rgb.shape == (*SHAPE, 3) and rgb.dtype == np.uint8 and rgb.std(axis=(0, 1, 2)).min() > 1
    structures = Segmentations.segmentInfo(nodes.structures)
    assert [name for _, name, _ in structures] == ["structure 1", "structure 2", "structure 3"]
    assert nodes.structures.GetParentTransformNode() is volume.GetParentTransformNode()
    similarity, _ = MRMLBridge.volumeToArray(nodes.similarity)
    assert similarity.min() >= -1.0001 and similarity.max() <= 1.0001
    # Trilinear sampling blurs the token grid (stride 4 voxels here): the seed is in the top 2 %, not at 1.
    assert similarity[runs["seedIjk"]] >= np.percentile(similarity, 98)
    peak = np.unravel_index(similarity.argmax(), similarity.shape)
    assert np.abs(np.subtract(peak, runs["seedIjk"])).max() <= 4
    composite = runs["scene"].GetFirstNodeByClass("vtkMRMLSliceCompositeNode")
    assert composite.GetForegroundVolumeID() == nodes.similarity.GetID()
    assert nodes.similarity.GetDisplayNode().GetColorNodeID() in MRMLBridge.SIMILARITY_COLOR_NODE_IDS


def test_propagation_from_scribble_segments_matches_the_cli_and_keeps_their_names(runs):
    import nibabel as nib

    scene, volume, result = runs["scene"], runs["volume"], runs["results"]["propagate"]
    assert [(name, colour) for _, name, colour in Segmentations.segmentInfo(result)] == \
        [("outside", (20, 40, 60)), ("ball", (250, 200, 0))]
    # The scribble segments went to the worker as labels 1, 2 on the input grid; the result comes back
    # as the same segments: equal to the CLI run on the scribble array written directly.
    expected = np.asarray(nib.load(str(runs["work"] / "reference_propagated.nii.gz")).dataobj)
    assert set(np.unique(expected)) == {1, 2}
    assert np.array_equal(Segmentations.segmentsToLabels(scene, result, volume), expected)
    assert result.GetParentTransformNode() is volume.GetParentTransformNode()


def test_embed_and_propagate_with_no_model_selected_use_the_default_encoder(runs):
    volume = runs["volume"]
    for name in ("embed, default encoder", "propagate, default encoder"):
        assert "--model" not in runs["jobs"][name].process.args
    nodes = runs["results"]["embed, default encoder"]
    assert nodes.pca is None
    assert [name for _, name, _ in Segmentations.segmentInfo(nodes.structures)] == ["structure 1", "structure 2"]
    clusters = Segmentations.segmentsToLabels(runs["scene"], nodes.structures, volume)
    assert clusters.shape == SHAPE and set(np.unique(clusters)) == {1, 2}  # on the input grid, every voxel
    grown = Segmentations.segmentsToLabels(runs["scene"], runs["results"]["propagate, default encoder"], volume)
    scribbles = runs["scribbles"]
    assert np.array_equal(grown[scribbles > 0], scribbles[scribbles > 0])  # every scribble keeps its class
    ball = runs["image"] > 40
    assert (grown[ball] == 2).mean() > 0.8 and (grown[runs["image"] < -60] == 1).mean() > 0.8


def test_a_worker_failure_is_one_readable_message(runs):
    error = runs["results"]["not a model"]
    assert isinstance(error, WorkerError)
    assert str(error).startswith("segment failed: ") and "model.json" in str(error) and "\n" not in str(error)
    assert not runs["jobs"]["not a model"].workDir.exists()


def test_bad_requests_fail_before_any_worker_starts_and_leave_no_files(scene, model_dirs, tmp_path):
    logic = S2DCLogic(scene=scene, python=sys.executable, tempRoot=tmp_path)
    volume = MRMLBridge.addVolume(scene, np.zeros(SHAPE, np.int16), np.eye(4), "v")
    with pytest.raises(Commands.CommandError, match="at least one overlay"):
        logic.startEmbed(volume, model_dirs["encoder"], pca=False)
    rgb = MRMLBridge.addVolume(scene, np.zeros((*SHAPE, 3), np.uint8), np.eye(4), "rgb", "vtkMRMLVectorVolumeNode")
    with pytest.raises(MRMLBridge.BridgeError, match="scalar"):
        logic.startSegment(rgb, model_dirs["segmenter"])
    one = Segmentations.labelmapToSegmentation(scene, np.ones(SHAPE, np.int32), [], volume)
    with pytest.raises(MRMLBridge.BridgeError, match="at least two segments"):
        logic.startPropagate(volume, model_dirs["encoder"], one)
    with pytest.raises(MRMLBridge.BridgeError, match="place a point"):
        logic.startEmbed(volume, model_dirs["encoder"], seed=scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode"))
    assert list(tmp_path.iterdir()) == []  # temporary folders of failed starts are removed
