"""Segmentation jobs of ``medseg serve``: kept on disk, run one at a time by one worker holding the model.

Layout under the data folder: ``jobs/<id>/job.json`` (the job's state, written atomically), its input
(:mod:`medseg.serving.uploads`) and ``out/`` (the files ``medseg predict`` writes for it: the mask in the input's
format, the class probabilities, the entropy map, and for DICOM series a DICOM SEG when highdicom is installed),
plus ``view/`` (8-bit image and class ids for the viewer). Job ids are random (128 bits) and checked against their
pattern before any path is made from them.

- **Queue:** bounded; a job that does not fit is refused (the API answers 503), never dropped later.
- **Restart:** finished jobs are found again with their results; a job that was queued or running when the server
  stopped is marked failed ("submit it again"): its input is kept only until retention removes it.
- **Retention:** finished jobs older than ``keep_seconds`` and the oldest beyond ``max_jobs`` are deleted, at start
  and after each job.
- Logs name jobs by id, kind and size only: no file names, no patient data.
"""

from __future__ import annotations

import logging
import queue
import re
import secrets
import shutil
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from medseg.errors import MedsegError
from medseg.inference.inputs import InputCase, read_input
from medseg.io.atomic import claim_folder, write_json
from medseg.io.json_file import read_json_object

log = logging.getLogger(__name__)

JOB_ID = re.compile(r"^[A-Za-z0-9_-]{22}$")
FINISHED = ("done", "failed")


@dataclass
class Job:
    id: str
    kind: str
    dims: int
    size: int
    input: str                  # the stored input, relative to the job's folder
    status: str = "queued"      # queued | running | done | failed
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    error: str | None = None
    files: dict = field(default_factory=dict)   # mask / probabilities / uncertainty / seg.dcm -> file in out/
    shape: list | None = None                   # the viewer's grid (spatial axes)
    spacing: list | None = None
    classes: list = field(default_factory=list)  # class ids present in the mask
    check: bool | None = None                   # the quality-control flag, when the run has a quality model
    reasons: list = field(default_factory=list)

    def public(self, position: int | None = None) -> dict:
        d = {k: v for k, v in asdict(self).items() if k not in ("input", "files")}
        d["downloads"] = sorted(self.files)
        if position is not None:
            d["queue_position"] = position
        return d


class JobStore:
    def __init__(self, root: Path, keep_seconds: float = 24 * 3600, max_jobs: int = 500):
        self.root = Path(root)
        self.jobs_dir = self.root / "jobs"
        self.incoming = self.root / "incoming"
        self.keep_seconds, self.max_jobs = keep_seconds, max_jobs
        self.jobs: dict[str, Job] = {}
        self.lock = threading.Lock()
        claim_folder(self.root, "serve")  # a folder of the user's is never written into, nor cleaned
        self.jobs_dir.mkdir(exist_ok=True)
        shutil.rmtree(self.incoming, ignore_errors=True)  # uploads cut off by a stop
        self.incoming.mkdir()
        self._recover()
        self.purge()

    def _recover(self) -> None:
        for folder in sorted(self.jobs_dir.iterdir()):
            if not JOB_ID.match(folder.name) or not (folder / "job.json").is_file():
                continue
            try:
                job = Job(**read_json_object(folder / "job.json"))
            except (MedsegError, TypeError):
                log.warning("job %s: unreadable job.json; left alone", folder.name)
                continue
            if job.status not in FINISHED:
                job.status, job.finished = "failed", time.time()
                job.error = "the server stopped before this job finished; submit the scan again"
                self.save(job)
            self.jobs[job.id] = job
        if self.jobs:
            log.info("found %d earlier job(s)", len(self.jobs))

    def folder(self, job_id: str) -> Path:
        if not JOB_ID.match(job_id):
            raise KeyError(job_id)
        return self.jobs_dir / job_id

    def new_id(self) -> str:
        while True:
            job_id = secrets.token_urlsafe(16)
            if JOB_ID.match(job_id) and job_id not in self.jobs:
                return job_id

    def add(self, job: Job) -> None:
        with self.lock:
            self.jobs[job.id] = job
        self.save(job)

    def get(self, job_id: str) -> Job | None:
        return self.jobs.get(job_id) if JOB_ID.match(job_id or "") else None

    def save(self, job: Job) -> None:
        write_json(self.folder(job.id) / "job.json", asdict(job))

    def remove(self, job_id: str) -> None:
        with self.lock:
            self.jobs.pop(job_id, None)
        shutil.rmtree(self.folder(job_id), ignore_errors=True)

    def purge(self) -> None:
        now = time.time()
        finished = sorted((j for j in list(self.jobs.values()) if j.status in FINISHED), key=lambda j: j.finished or j.created)
        old = [j for j in finished if now - (j.finished or j.created) > self.keep_seconds]
        excess = len(self.jobs) - len(old) - self.max_jobs
        old += [j for j in finished if j not in old][:max(excess, 0)]
        for j in old:
            self.remove(j.id)
        if old:
            log.info("retention: removed %d finished job(s)", len(old))


class Worker(threading.Thread):
    """Runs queued jobs one at a time with the one predictor (the network's windows of a scan are batched; scans
    are not batched together)."""

    def __init__(self, predictor, store: JobStore, queue_size: int = 16):
        super().__init__(daemon=True, name="medseg-serve-worker")
        self.predictor, self.store = predictor, store
        self.queue: queue.Queue[str] = queue.Queue(maxsize=queue_size)
        self.waiting: list[str] = []
        self.stopping = threading.Event()

    def submit(self, job: Job) -> bool:
        """Queue a job; ``False`` when the queue is full."""
        try:
            self.queue.put_nowait(job.id)
        except queue.Full:
            return False
        self.waiting.append(job.id)
        return True

    def position(self, job_id: str) -> int | None:
        try:
            return self.waiting.index(job_id) + 1
        except ValueError:
            return None

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                job_id = self.queue.get(timeout=0.2)
            except queue.Empty:
                continue
            if job_id in self.waiting:
                self.waiting.remove(job_id)
            job = self.store.get(job_id)
            if job is not None:
                self._run(job)
            self.store.purge()

    def _run(self, job: Job) -> None:
        job.status, job.started = "running", time.time()
        self.store.save(job)
        try:
            self._predict(job)
            job.status = "done"
        except MedsegError as e:
            job.status, job.error = "failed", str(e)
        except (OSError, RuntimeError, ValueError, MemoryError) as e:
            job.status, job.error = "failed", f"prediction failed: {type(e).__name__}: {e}"
        job.finished = time.time()
        self.store.save(job)
        log.info("job %s (%s, %d bytes): %s in %.1f s", job.id, job.kind, job.size, job.status, job.finished - job.started)

    def _predict(self, job: Job) -> None:
        from medseg.inference.overlays import to_rgb

        p = self.predictor
        folder = self.store.folder(job.id)
        out = folder / "out"
        out.mkdir(exist_ok=True)
        case = InputCase("scan", (folder / job.input,))
        image = read_input(case, p.dims, p.num_channels)
        writer = p.make_writer("native", overlays=False)
        target, entropy, pred = p.predict_case(case, out, writer, save_probabilities=True, uncertainty=True,
                                               quality=p.quality is not None, image=image)
        job.files["mask"] = target.name
        job.files["probabilities"] = writer.targets(out, case, True, False)[1].name
        if entropy:
            job.files["uncertainty"] = entropy
        if job.kind == "dicom-zip":
            self._seg(job, case, image, pred, out)
        if pred.quality is not None:
            job.check, job.reasons = bool(pred.quality.check), list(pred.quality.reasons)
        view = folder / "view"
        view.mkdir(exist_ok=True)
        arr = image.array
        if p.dims == 2:
            picture = to_rgb(arr, pred.labels.shape)
        else:
            lo, hi = np.percentile(arr[0], (0.5, 99.5))
            picture = np.clip((arr[0] - lo) / max(hi - lo, 1e-6) * 255, 0, 255).astype(np.uint8)
        np.save(view / "image.npy", picture)
        np.save(view / "labels.npy", pred.labels.astype(np.uint8))
        job.shape = list(pred.labels.shape)
        job.spacing = [float(s) for s in image.geometry.spacing][:len(job.shape)]
        job.classes = [int(c) for c in np.unique(pred.labels) if c > 0]

    def _seg(self, job: Job, case: InputCase, image, pred, out: Path) -> None:
        """A DICOM SEG beside the mask, when highdicom is installed and something was predicted."""
        try:
            import highdicom  # noqa: F401
        except ImportError:
            return
        from medseg.inference.writers import NothingToWrite, VolumeWriter

        p = self.predictor
        try:
            seg, _ = VolumeWriter(p.scheme, "dicom-seg", p.identity, p.label_codes).write(out, case, image, pred)
            job.files["seg.dcm"] = seg.name
        except NothingToWrite:
            pass
