"""A self-contained deployment bundle: the network as ONNX plus everything the prediction around it needs.

``medseg export RUN --out BUNDLE`` (:func:`export_bundle`) writes two files:

- ``model.onnx``: the network at the run's patch size, input ``image`` ``(N, C, *patch)`` float32 with a dynamic
  batch axis, output ``logits`` ``(N, K, *patch)`` float32 (before softmax). Exported with PyTorch's
  ``torch.export``-based ONNX exporter at opset :data:`OPSET`.
- ``bundle.json`` (:data:`BUNDLE_FILE`): the format, the medseg and torch versions, the SHA-256 of
  ``model.onnx``, the input/output names and shapes, the preprocessing (as the run folder stores it), the
  sliding window (patch, overlap, Gaussian weighting, batch), the mirroring axes, the label values and names,
  the display colours, the calibration temperature, the post-processing (``null``: none) and the largest
  difference from the PyTorch network measured right after the export. The README documents every field, so
  that a deployment in another language knows what to do around the network.

:func:`read_bundle` checks a bundle (its JSON, its format and the checksum of its network) before anything
runs; :class:`OnnxNetwork` runs ``model.onnx`` in ONNX Runtime behind the interface of a PyTorch module, so the
same sliding window, mirroring, restoration and writers serve both backends.
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

import medseg
from medseg.errors import ConfigError, MedsegError, RunFolderError
from medseg.inference.sliding_window import GAUSSIAN_SIGMA_SCALE
from medseg.inference.quality import quality_models, write_quality_models
from medseg.inference.label_codes import label_codes as _label_codes
from medseg.io.atomic import atomic_path, claim_folder, write_json
from medseg.io.checksum import file_sha256
from medseg.io.json_file import read_json_object
from medseg.models.registry import model_config
from medseg.models.weights import load_model
from medseg.runfolder import read_run_info, run_dims, run_temperature

log = logging.getLogger(__name__)

BUNDLE_FILE = "bundle.json"
NETWORK_FILE = "model.onnx"
BUNDLE_FORMAT = 1
#: the ONNX opset of exported networks
OPSET = 18
#: the largest absolute logit difference from PyTorch float32 accepted right after an export
EXPORT_TOLERANCE = 1e-3


def export_network(model: nn.Module, example: torch.Tensor, target: Path, name: str) -> None:
    """Write ``model`` (in eval mode) as ONNX to ``target``: input ``image``, output ``logits``, shapes those of
    ``example`` with a dynamic batch axis (give ``example`` a batch of 2 or more: a batch of 1 would be fixed)."""
    try:
        import onnxscript  # noqa: F401  (the exporter needs it; say which extra brings it)
    except ImportError:
        raise ConfigError("exporting to ONNX needs onnx and onnxscript", hint='pip install "medseg[onnx]"') from None
    exporter_log = logging.getLogger("torch.onnx")
    level = exporter_log.level
    exporter_log.setLevel(logging.ERROR)  # "torchvision is not installed. Skipping torchvision::nms" and the like
    try:
        with warnings.catch_warnings():  # the exporter's own deprecation notices are not the user's concern
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            program = torch.onnx.export(model, (example,), dynamo=True, input_names=["image"], output_names=["logits"],
                                        dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=1024)},),
                                        opset_version=OPSET, optimize=True, verbose=False)
    except Exception as e:  # the exporter raises many kinds; name the network and the first line of its reason
        first = next((line for line in str(e).splitlines() if line.strip()), type(e).__name__)
        raise ConfigError(f"the {name} network cannot be exported to ONNX: {first[:300]}",
                          hint="run `medseg --debug export ...` for the exporter's full report") from e
    finally:
        exporter_log.setLevel(level)
    with atomic_path(target) as tmp:
        program.save(str(tmp), external_data=False)  # one file: the checksum covers every weight


def export_bundle(run_dir: str | Path, out_dir: str | Path, *, overlap: float = 0.5) -> Path:
    """Export the run ``run_dir`` as a bundle in ``out_dir`` (a new or empty folder, or one ``export`` made);
    returns the bundle's JSON path. The exported network is checked against PyTorch on a random input."""
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    info = read_run_info(run_dir)
    model = load_model(run_dir).eval()
    config = model_config(model)  # model.json as load_model read and checked it
    patch = [int(p) for p in info["train"]["patch_size"]]
    channels, classes = int(config["in_channels"]), int(config["num_classes"])
    example = torch.randn(2, channels, *patch, generator=torch.Generator().manual_seed(0))  # batch 2: kept dynamic
    with torch.no_grad():
        reference = model(example).float().numpy()
    claim_folder(out_dir, "export")
    network = out_dir / NETWORK_FILE
    export_network(model, example, network, config.get("name", "?"))
    session = onnx_session(network)
    got = session.run(["logits"], {"image": example.numpy()})[0]
    difference = float(np.abs(got - reference).max())
    if not difference <= EXPORT_TOLERANCE:
        network.unlink()
        raise ConfigError(f"the exported {config.get('name')} network differs from PyTorch by {difference:.3g} "
                          f"(more than {EXPORT_TOLERANCE:g})", path=run_dir, hint="report it; predict with --backend torch")
    dims = run_dims(info)
    bundle = {
        "format": "medseg-bundle", "format_version": BUNDLE_FORMAT, "medseg_version": medseg.__version__,
        "torch_version": torch.__version__, "opset": OPSET, "task": info["task"], "spatial_dims": dims,
        "network": {"file": NETWORK_FILE, "sha256": file_sha256(network), "model": config.get("name"),
                    "input": {"name": "image", "shape": ["batch", channels, *patch], "dtype": "float32"},
                    "output": {"name": "logits", "shape": ["batch", classes, *patch], "dtype": "float32",
                               "activation": "softmax over axis 1, after blending the windows"},
                    "max_abs_difference_from_torch": difference},
        "preprocess": info["preprocess"],
        "channels": channels,
        "sliding_window": {"patch_size": patch, "overlap": overlap, "blend": "gaussian",
                           "gaussian_sigma_scale": GAUSSIAN_SIGMA_SCALE, "padding": "constant 0",
                           "batch_size": int(info["train"].get("batch_size", 2))},
        "mirror_axes": list(range(dims)),
        "labels": info["labels"],
        "display_colors": info.get("display_colors"),
        "temperature": run_temperature(run_dir, True),
        "label_codes": _label_codes(run_dir),
        "postprocessing": None,
        "source_run": {"path": str(run_dir.resolve()), "written": info.get("written")},
    }
    models = quality_models(run_dir)
    if models:  # the bundle's predictions get the same quality control
        write_quality_models(out_dir, models)
    write_json(out_dir / BUNDLE_FILE, bundle)
    log.info("exported %s (%s, %dD, patch %s) to %s; largest logit difference from PyTorch %.2g",
             run_dir, config.get("name"), dims, "x".join(map(str, patch)), out_dir, difference)
    return out_dir / BUNDLE_FILE


def is_bundle(path: str | Path) -> bool:
    """Whether ``path`` is (or was meant to be) a bundle: it holds ``bundle.json`` or ``model.onnx``."""
    return (Path(path) / BUNDLE_FILE).is_file() or (Path(path) / NETWORK_FILE).is_file()


def read_bundle(folder: str | Path) -> dict:
    """The bundle's JSON, after checking its format and its network's checksum."""
    folder = Path(folder)
    path = folder / BUNDLE_FILE
    if not path.is_file():
        raise RunFolderError(f"no {BUNDLE_FILE} here; this is not a medseg bundle", path=folder,
                             hint="make one with `medseg export RUN --out BUNDLE`")
    bundle = read_json_object(path, RunFolderError)
    if bundle.get("format") != "medseg-bundle":
        raise RunFolderError(f"{BUNDLE_FILE} is not a medseg bundle description", path=path)
    if bundle.get("format_version") != BUNDLE_FORMAT:
        raise RunFolderError(f"bundle format {bundle.get('format_version')} cannot be read by medseg "
                             f"{medseg.__version__}, which reads format {BUNDLE_FORMAT}", path=path,
                             hint="export the run again with this version")
    try:
        network = folder / bundle["network"]["file"]
        expected = bundle["network"]["sha256"]
        _ = (bundle["preprocess"], bundle["labels"], bundle["sliding_window"]["patch_size"], bundle["channels"])
    except (KeyError, TypeError) as e:
        raise RunFolderError(f"{BUNDLE_FILE} lacks the entry {e}", path=path, hint="export the run again") from None
    if not network.is_file():
        raise RunFolderError(f"the bundle's network {network.name} is missing", path=network, hint="export the run again")
    if file_sha256(network) != expected:
        raise RunFolderError("the network's checksum does not match the bundle's JSON: the file was changed or "
                             "damaged after the export", path=network, hint="export the run again")
    return bundle


def onnx_session(path: Path, threads: int | None = None):
    """An ONNX Runtime session on the CPU (``onnxruntime`` is the ``onnx`` extra)."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise ConfigError("ONNX needs onnxruntime", hint='pip install "medseg[onnx]"') from None
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime's own error types
        raise RunFolderError(f"ONNX Runtime cannot load the network: {str(e).splitlines()[0][:300]}", path=path,
                             hint="export the run again") from None


class OnnxNetwork(nn.Module):
    """``model.onnx`` run by ONNX Runtime, called like the PyTorch network (float32 in, logits out)."""

    def __init__(self, path: Path, channels: int, patch_size: tuple[int, ...]):
        super().__init__()
        self.path = path
        self.session = onnx_session(path)
        declared = self.session.get_inputs()[0].shape
        if [d if isinstance(d, int) else None for d in declared[1:]] != [channels, *patch_size]:
            raise RunFolderError(f"the network takes inputs of shape {declared}, the bundle says {[channels, *patch_size]}",
                                 path=path, hint="export the run again")
        self.input_name, self.output_name = self.session.get_inputs()[0].name, self.session.get_outputs()[0].name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.session.run([self.output_name], {self.input_name: x.detach().float().cpu().numpy()})[0]
        return torch.from_numpy(out)


def temporary_bundle(run_dir: str | Path) -> tuple[Path, tempfile.TemporaryDirectory]:
    """A bundle of ``run_dir`` exported into a temporary folder (for ``predict RUN --backend onnxruntime``);
    the folder goes when the returned handle is cleaned up."""
    handle = tempfile.TemporaryDirectory(prefix="medseg_bundle_")
    try:
        export_bundle(run_dir, Path(handle.name) / "bundle")
    except MedsegError:
        handle.cleanup()
        raise
    return Path(handle.name) / "bundle", handle
