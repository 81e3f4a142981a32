"""Planning makes real decisions: fingerprints and plans of DRIVE, Hippocampus, a synthetic
anisotropic CT and a dataset with a tiny structure; the rules behind them (topology, memory,
spacing); plans are validated on load with errors that name the file, the key and what is allowed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from medseg.errors import ConfigError
from medseg.io import Geometry, write_image
from medseg.planning.fingerprint import compute_fingerprint
from medseg.planning.memory import format_bytes, parse_bytes, unet_activation_values, unet_training_memory
from medseg.planning.plan import load_plan, validate_plan
from medseg.planning.planner import make_plan
from medseg.planning.topology import fit_topology, plan_topology
from tests.conftest import shared_path
from tests.helpers2d import write_disc_dataset

# --------------------------------------------------------------------------- synthetic datasets


def write_anisotropic_ct(root: Path, z_spacings=(4.0, 5.0, 5.0, 5.0, 6.0), n_xy: int = 64, n_z: int = 12) -> Path:
    """MSD-style CT: int16 HU volumes at 0.8 x 0.8 x z mm (air -1000, body ~40 HU, an organ ~90 HU as label 1)."""
    rng = np.random.default_rng(0)
    training = []
    for i, dz in enumerate(z_spacings):
        spacing = (0.8, 0.8, dz)
        g = np.meshgrid(*[(np.arange(n) - n / 2 + 0.5) * s for n, s in zip((n_xy, n_xy, n_z), spacing)], indexing="ij")
        body = (g[0] / 24) ** 2 + (g[1] / 20) ** 2 < 1
        organ = ((g[0] - 5) / 10) ** 2 + (g[1] / 8) ** 2 + (g[2] / 18) ** 2 < 1
        image = np.where(body, 40, -1000) + rng.normal(0, 15, body.shape)
        image[organ] = 90 + rng.normal(0, 10, int(organ.sum()))
        name = f"ct_{i:03d}.nii.gz"
        geom = Geometry(spacing, (0.0, 0.0, 0.0), (1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0))
        write_image(root / "imagesTr" / name, np.clip(image, -1024, 3071).astype(np.int16)[None], geom)
        write_image(root / "labelsTr" / name, organ.astype(np.uint8)[None], geom)
        training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
    (root / "dataset.json").write_text(json.dumps({"name": "AnisoCT", "modality": {"0": "CT"},
                                                   "labels": {"0": "background", "1": "organ"}, "training": training}))
    return root


def write_tiny_structure_dataset(root: Path) -> Path:
    """Plain images/ + labels/ folders: 3 cases at 0.5 mm and 4 at 1 mm (isotropic), a large
    sphere (label 1) and a ~1.5 mm cube (label 2: 3 voxels wide at 0.5 mm, 2 at 1 mm)."""
    rng = np.random.default_rng(1)
    for i, sp in enumerate((0.5, 0.5, 0.5, 1.0, 1.0, 1.0, 1.0)):
        n = int(round(24 / sp))
        g = np.meshgrid(*[(np.arange(n) + 0.5) * sp for _ in range(3)], indexing="ij")
        label = np.zeros((n, n, n), np.uint8)
        label[sum((x - 12) ** 2 for x in g) < 7.0**2] = 1
        w = max(1, int(round(1.5 / sp)))
        c = int(round(4 / sp))
        label[c:c + w, c:c + w, c:c + w] = 2
        image = rng.normal(100, 10, label.shape).astype(np.float32) + 50 * (label == 1) + 120 * (label == 2)
        geom = Geometry((sp, sp, sp), (0.0, 0.0, 0.0), (1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0))
        write_image(root / "images" / f"c{i}.nii.gz", image[None], geom)
        write_image(root / "labels" / f"c{i}.nii.gz", label[None], geom)
    return root


@pytest.fixture(scope="module")
def aniso_ct(tmp_path_factory) -> Path:
    return write_anisotropic_ct(tmp_path_factory.mktemp("aniso") / "ct")


# --------------------------------------------------------------------------- shared datasets


@pytest.mark.shared
def test_drive_plan_uses_rgb_patches_smaller_than_the_images():
    fp = compute_fingerprint(shared_path("datasets", "drive", "training"), max_cases=4, workers=1)
    assert fp["dims"] == 2 and fp["channels"] == 3 and fp["modality"] == ["rgb"] * 3
    assert fp["shape"]["median"] == [584.0, 565.0] and fp["cases_used"] == 4 and fp["num_cases"] == 20
    vessels = fp["classes"][0]
    assert 0.03 < vessels["voxel_fraction"] < 0.2 and not vessels["tiny"]  # one tree per image, beside small fragments
    assert vessels["components"]["largest_voxels_median"] > 10 * vessels["components"]["size_voxels"]["median"]
    plan = make_plan(fp, device="cpu", memory_budget="8GiB")
    assert plan["configuration"]["value"] == "2d" and plan["spacing"]["target"] is None
    assert plan["normalization"]["scheme"] == ["rgb"] * 3
    patch = plan["patch"]["size"]
    assert all(p < s for p, s in zip(patch, (584, 565))) and all(p >= 64 and p % 16 == 0 for p in patch)
    assert plan["batch"]["size"] >= 2 and "shrunk" in plan["patch"]["reason"]


@pytest.mark.shared
def test_hippocampus_plan_is_isotropic_and_covers_the_median_shape():
    fp = compute_fingerprint(shared_path("datasets", "hippocampus"), max_cases=16, workers=1)
    assert fp["dims"] == 3 and fp["modality"] == ["MRI"] and fp["spacing"]["median"] == [1.0, 1.0, 1.0]
    assert [c["name"] for c in fp["classes"]] == ["Anterior", "Posterior"]
    assert fp["anisotropy"] == 1.0
    plan = make_plan(fp, device="cpu", memory_budget="8GiB")
    assert plan["configuration"]["candidates"] == ["3d"]
    assert plan["spacing"]["target"] == [1.0, 1.0, 1.0]
    assert plan["normalization"]["scheme"] == ["zscore"]
    net = plan["network"]
    assert all(s == [2, 2, 2] for s in net["strides"]) and all(k == [3, 3, 3] for k in net["kernel_sizes"])
    median = fp["cropped_shape"]["median"]
    assert all(p >= m for p, m in zip(plan["patch"]["size"], median))
    assert all(p <= m + 16 for p, m in zip(plan["patch"]["size"], median))


# --------------------------------------------------------------------------- synthetic decisions


def test_anisotropic_ct_plan(aniso_ct):
    fp = compute_fingerprint(aniso_ct, workers=1)
    assert fp["modality"] == ["CT"] and fp["looks_like_ct"] and fp["anisotropy"] > 3
    plan = make_plan(fp, device="cpu", memory_budget="4GiB")
    target = plan["spacing"]["target"]
    assert target[:2] == [0.8, 0.8] and target[2] == pytest.approx(np.percentile([4, 5, 5, 5, 6], 10))
    assert "10th percentile" in plan["spacing"]["reason"]
    assert plan["configuration"]["value"] == "3d" and "2d" in plan["configuration"]["candidates"]
    net = plan["network"]
    assert net["strides"][0] == [2, 2, 1] and net["strides"][1] == [2, 2, 1]   # z not pooled in the first stages
    assert net["kernel_sizes"][0] == [3, 3, 1]                                  # nor convolved across slices
    assert plan["normalization"]["scheme"] == ["ct"] and "0.5-99.5" in plan["normalization"]["reason"]
    assert plan["crop_to_nonzero"]["value"] is True


def test_augmentation_warm_up_is_planned_for_time_budgeted_3d_runs(aniso_ct, tmp_path):
    """With a time budget, a 3D plan lets augmentation rise over the first half of training; without a
    budget (early stopping decides the length) and in 2D it is at full strength from the start."""
    fp3 = compute_fingerprint(aniso_ct, workers=1)
    budgeted = make_plan(fp3, device="cpu", memory_budget="4GiB", time_budget=1800)
    assert budgeted["training"]["augment_warmup"] == 0.5 and "rises from none to full" in budgeted["training"]["reason"]
    assert make_plan(fp3, device="cpu", memory_budget="4GiB")["training"]["augment_warmup"] == 0.0
    fp2 = compute_fingerprint(write_disc_dataset(tmp_path / "d", n=3, size=64), workers=1)
    assert make_plan(fp2, device="cpu", memory_budget="4GiB", time_budget=1800)["training"]["augment_warmup"] == 0.0


def test_ct_is_recognised_from_hounsfield_units_without_a_modality(tmp_path):
    from medseg.planning.normalization import plan_normalization

    fp = {"dims": 3, "channels": 1, "modality": ["unknown"], "looks_like_ct": True,
          "intensity": [{"mean": 50.0, "std": 20.0, "p005": -100.0, "p995": 300.0}]}
    schemes, stats, reason = plan_normalization(fp)
    assert schemes == ["ct"] and stats is None and "Hounsfield" in reason
    assert plan_normalization({**fp, "looks_like_ct": False})[0] == ["zscore"]


def test_tiny_structure_is_reported_and_keeps_the_fine_spacing(tmp_path):
    data = write_tiny_structure_dataset(tmp_path / "tiny")
    fp = compute_fingerprint(data, workers=2)
    big, tiny = fp["classes"]
    assert (big["value"], tiny["value"]) == (1, 2) and tiny["tiny"] and not big["tiny"]
    assert tiny["components"]["largest_voxels_median"] <= 27 and tiny["components"]["size_mm3"]["min"] < 4
    assert tiny["voxel_fraction"] < 1e-3
    odd = [p for p in fp["problems"] if p["kind"] == "odd_spacing"]
    assert odd == [] or all(p["case"] for p in odd)
    plan = make_plan(fp, device="cpu", memory_budget="8GiB")
    assert fp["spacing"]["median"] == [1.0, 1.0, 1.0]
    assert plan["spacing"]["target"] == [0.5, 0.5, 0.5]          # not the median: that would resample it away
    assert "tiny" in plan["spacing"]["reason"] and "label_2" in plan["spacing"]["reason"]
    assert plan["training"]["foreground_fraction"] == 0.5 and "label_2" in plan["training"]["reason"]


def test_problems_name_the_cases(tmp_path):
    data = write_disc_dataset(tmp_path / "d", n=5, size=32)
    from PIL import Image

    Image.fromarray(np.zeros((32, 32), np.uint8)).save(data / "masks" / "case1.png")          # empty label
    Image.fromarray(np.zeros((20, 32), np.uint8)).save(data / "masks" / "case3.png")          # wrong size
    fp = compute_fingerprint(data, workers=1)
    kinds = {(p["case"], p["kind"]) for p in fp["problems"]}
    assert ("case1", "empty_label") in kinds and ("case3", "shape_mismatch") in kinds
    assert fp["cases_used"] == 4 and fp["num_cases"] == 5


def test_problems_in_volumes_name_the_cases(tmp_path):
    from tests.helpers3d import GEOMETRY, write_msd_dataset

    data = write_msd_dataset(tmp_path / "msd", n=4)
    write_image(data / "labelsTr" / "case_001.nii.gz", np.zeros((1, 20, 20, 20), np.uint8), GEOMETRY)   # another grid
    write_image(data / "labelsTr" / "case_002.nii.gz", np.zeros((1, 24, 28, 20), np.uint8), GEOMETRY)   # empty
    fp = compute_fingerprint(data, workers=1)
    kinds = {(p["case"], p["kind"]) for p in fp["problems"]}
    assert ("case_001", "grid_mismatch") in kinds and ("case_002", "empty_label") in kinds
    assert fp["cases_used"] == 3


# --------------------------------------------------------------------------- rules


def test_topology_pools_thick_axes_late():
    iso = plan_topology((40, 56, 40), (1.0, 1.0, 1.0), 5)
    assert iso.depth == 3 and iso.divisor == (8, 8, 8)
    thick = plan_topology((128, 128, 16), (0.8, 0.8, 5.0), 5)
    assert thick.strides[:2] == ((2, 2, 1), (2, 2, 1)) and thick.strides[2] == (2, 2, 2)
    assert thick.kernel_sizes[:2] == ((3, 3, 1),) * 2 and thick.kernel_sizes[2] == (3, 3, 3)  # z 5 mm vs 3.2 mm in-plane
    patch, topo = fit_topology((584, 565), (1.0, 1.0), 4, multiple=8)
    assert topo.depth == 4 and all(p % 16 == 0 and p >= s for p, s in zip(patch, (584, 565)))


@pytest.mark.parametrize("dims, patch, features", [(2, (64, 96), 8), (3, (24, 32, 16), 4)])
def test_activation_estimate_matches_torch_saved_tensors(dims, patch, features):
    """The planner's activation count is within 30% of what autograd really keeps."""
    from medseg.models import create_model

    topo = plan_topology(patch, (1.0,) * dims, 3)
    model = create_model("unet", dims, 1, 3, features=features, **topo.to_json())
    kept: dict = {}

    def pack(t):
        kept[(t.data_ptr(), t.numel(), t.dtype)] = t.numel() * t.element_size()
        return t

    x = torch.randn(1, 1, *patch)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        torch.nn.functional.cross_entropy(model(x), torch.zeros(1, *patch, dtype=torch.long))
    measured = sum(kept.values()) / 4
    estimated = unet_activation_values(patch, 1, 3, features, topo, 1024)
    assert 0.7 < measured / estimated < 1.3
    assert unet_training_memory(patch, 4, 1, 3, features, topo, 1024) > 4 * estimated * 4


def test_memory_budget_limits_patch_and_batch(tmp_path):
    fp = compute_fingerprint(write_disc_dataset(tmp_path / "d", n=3, size=256), workers=1)
    roomy = make_plan(fp, device="cpu", memory_budget="8GiB")
    assert roomy["patch"]["size"] == [128, 128] and roomy["batch"]["size"] == 8
    tight = make_plan(fp, device="cpu", memory_budget="40MiB")
    assert parse_bytes(tight["batch"]["estimated_memory"].replace(" ", "")) <= parse_bytes("40MiB")
    assert np.prod(tight["patch"]["size"]) * tight["batch"]["size"] < 128 * 128 * 8
    with pytest.raises(ConfigError, match="memory budget") as e:
        make_plan(fp, device="cpu", memory_budget="100KiB")
    assert "--memory-budget" in e.value.hint
    gpu = make_plan(fp, device="cuda", memory_budget="16GiB")   # planned for a GPU without one: the budget is given
    assert gpu["network"]["features"] == 32 and gpu["patch"]["size"] == [256, 256]


def test_parse_and_format_bytes():
    assert parse_bytes("8GiB") == 8 * 2**30 and parse_bytes("512 MiB") == 512 * 2**20 and parse_bytes("2GB") == 2 * 10**9
    assert format_bytes(1.5 * 2**30) == "1.5 GiB"
    with pytest.raises(ConfigError, match="memory size"):
        parse_bytes("lots")


# --------------------------------------------------------------------------- validation


@pytest.fixture(scope="module")
def plan_json(aniso_ct) -> dict:
    return make_plan(compute_fingerprint(aniso_ct, workers=1), device="cpu", memory_budget="2GiB").to_json()


def _edited(plan_json: dict, tmp_path: Path, edit) -> Path:
    raw = json.loads(json.dumps(plan_json))
    edit(raw)
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(raw))
    return path


def test_plan_round_trips(plan_json, tmp_path):
    path = _edited(plan_json, tmp_path, lambda r: None)
    assert load_plan(path).to_json() == plan_json


@pytest.mark.parametrize("edit, key, allowed", [
    (lambda r: r["patch"].update(size=[64, 64]), "patch.size", "3 values"),
    (lambda r: r["patch"].update(size=[60, 60, 12]), "patch.size", "multiples of the network's downsampling"),
    (lambda r: r["batch"].update(szie=4), "batch.szie", "size"),
    (lambda r: r["normalization"].update(scheme=["hu"]), "normalization.scheme", "zscore | ct | minmax | none"),
    (lambda r: r["configuration"].update(value="2d"), "configuration.value", "3d"),
    (lambda r: r["training"].update(time_budget="soon"), "training.time_budget", '"30m"'),
    (lambda r: r["network"].update(model="unet9"), "network.model", "unet"),
    (lambda r: r["network"].update(kernel_sizes=[[3, 3, 2]] * (r["network"]["depth"] + 1)), "network.kernel_sizes", "odd"),
    (lambda r: r.update(plan_version=2), "plan_version", "1"),
    (lambda r: r.pop("spacing"), "spacing", "target"),
    (lambda r: r["training"].pop("max_epochs"), "training.max_epochs", "integer"),
    (lambda r: r["crop_to_nonzero"].update(value="yes"), "crop_to_nonzero.value", "true | false"),
])
def test_invalid_edits_name_file_key_and_allowed_values(plan_json, tmp_path, edit, key, allowed):
    path = _edited(plan_json, tmp_path, edit)
    with pytest.raises(ConfigError) as e:
        load_plan(path)
    assert e.value.path == path and f"'{key}'" in e.value.message and allowed in e.value.hint


def test_broken_json_and_missing_file(tmp_path):
    (tmp_path / "plan.json").write_text('{"plan_version": 1,}')
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_plan(tmp_path / "plan.json")
    with pytest.raises(ConfigError, match="not found"):
        load_plan(tmp_path / "none.json")
    with pytest.raises(ConfigError, match="JSON object"):
        validate_plan([1, 2])


def test_human_units_are_accepted_in_edits(plan_json, tmp_path):
    def edit(r):
        r["training"]["time_budget"] = "1h30m"
        r["device"]["memory_budget"] = "6GiB"

    plan = load_plan(_edited(plan_json, tmp_path, edit))
    assert plan["training"]["time_budget"] == 5400 and plan["device"]["memory_budget"] == "6.0 GiB"


def test_small_2d_patches_grow_the_cpu_batch_up_to_the_reference_step():
    from medseg.planning.planner import PROFILES, size_patch_and_batch

    cpu = PROFILES["cpu"]
    small, notes = size_patch_and_batch([48, 40], [1.0, 1.0], 2, 1, 3, cpu, 8 * 2**30, dataset_voxels=4000 * 48 * 40)
    assert small.patch == (48, 40) and 8 < small.batch <= 64
    assert any("batch grown" in n for n in notes)
    ref, _ = size_patch_and_batch([128, 128], [1.0, 1.0], 2, 1, 3, cpu, 8 * 2**30, dataset_voxels=4000 * 128 * 128)
    assert ref.batch == 8 and small.flops <= ref.flops * 1.02
    # a tiny dataset caps the batch at a share of it
    few, _ = size_patch_and_batch([48, 40], [1.0, 1.0], 2, 1, 3, cpu, 8 * 2**30, dataset_voxels=20 * 48 * 40)
    assert few.batch == 8
