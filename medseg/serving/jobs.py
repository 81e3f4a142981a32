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
            if not JOB_ID.match(folder.name):
                continue
            if not (folder / "job.json").is_file():  # an upload cut off before its job was made
                shutil.rmtree(folder, ignore_errors=True)
                continue
            try:
                job = Job(**read_json_object(folder / "job.json"))
            except (MedsegError, TypeError):
                log.warning("job %s: unreadable job.json; left alone", folder.name)
                continue
            self.jobs[job.id] = job
            if job.status not in FINISHED:
                self.update(job, status="failed", finished=time.time(),
                            error="the server stopped before this job finished; submit the scan again")
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

    def public(self, job: Job, position: int | None = None) -> dict:
        """The job as the API shows it, read while the worker cannot change it."""
        with self.lock:
            return job.public(position)

    def update(self, job: Job, **changes) -> None:
        """Change a job (under the lock, so readers see all or none of the change) and save it."""
        with self.lock:
            for k, v in changes.items():
                setattr(job, k, v)
            record = asdict(job)
        write_json(self.folder(job.id) / "job.json", record)

    def save(self, job: Job) -> None:
        with self.lock:
            record = asdict(job)
        write_json(self.folder(job.id) / "job.json", record)

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
    are not batched together). Retention runs after each job and every minute."""

    PURGE_EVERY = 60.0

    def __init__(self, predictor, store: JobStore, queue_size: int = 16):
        super().__init__(daemon=True, name="medseg-serve-worker")
        self.predictor, self.store = predictor, store
        self.queue: queue.Queue[str] = queue.Queue(maxsize=queue_size)
        self.waiting: list[str] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()

    def submit(self, job: Job) -> bool:
        """Queue a job; ``False`` when the queue is full."""
        with self.lock:
            self.waiting.append(job.id)
            try:
                self.queue.put_nowait(job.id)
            except queue.Full:
                self.waiting.remove(job.id)
                return False
        return True

    def full(self) -> bool:
        return self.queue.full()

    def position(self, job_id: str) -> int | None:
        with self.lock:
            return self.waiting.index(job_id) + 1 if job_id in self.waiting else None

    def run(self) -> None:
        purged = time.monotonic()
        while not self.stopping.is_set():
            try:
                job_id = self.queue.get(timeout=0.2)
            except queue.Empty:
                job_id = None
            try:
                if job_id is not None:
                    with self.lock:
                        if job_id in self.waiting:
                            self.waiting.remove(job_id)
                    job = self.store.get(job_id)
                    if job is not None:
                        self._run(job)
                if job_id is not None or time.monotonic() - purged > self.PURGE_EVERY:
                    self.store.purge()
                    purged = time.monotonic()
            except Exception as e:  # noqa: BLE001 - the worker must outlive any one job
                log.error("worker: %s (the job, if any, is marked failed)", type(e).__name__)

    def _run(self, job: Job) -> None:
        self.store.update(job, status="running", started=time.time())
        results: dict = {}
        try:
            self._predict(job, results)
            status, error = "done", None
        except MedsegError as e:
            status, error = "failed", e.message + (f" (fix: {e.hint})" if e.hint else "")
        except Exception as e:  # noqa: BLE001 - any error fails this job, never the server
            status, error = "failed", f"prediction failed: {type(e).__name__}"
            log.error("job %s failed: %s", job.id, type(e).__name__)
        self.store.update(job, status=status, error=error, finished=time.time(), **(results if status == "done" else {}))
        log.info("job %s (%s, %d bytes): %s in %.1f s", job.id, job.kind, job.size, job.status, job.finished - job.started)

    def _predict(self, job: Job, results: dict) -> None:
        """Predict the job's scan and write its files; what the job shows of them goes into ``results``, published
        with the job's end."""
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
        files = {"mask": target.name, "probabilities": writer.targets(out, case, True, False)[1].name}
        if entropy:
            files["uncertainty"] = entropy
        if job.kind == "dicom-zip":
            seg = self._seg(case, image, pred, out)
            if seg:
                files["seg.dcm"] = seg
        if pred.quality is not None:
            results.update(check=bool(pred.quality.check), reasons=list(pred.quality.reasons))
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
        shape = list(pred.labels.shape)
        results.update(files=files, shape=shape, spacing=[float(s) for s in image.geometry.spacing][:len(shape)],
                       classes=[int(c) for c in np.unique(pred.labels) if c > 0])

    def _seg(self, case: InputCase, image, pred, out: Path) -> str | None:
        """A DICOM SEG beside the mask, when highdicom is installed and something was predicted."""
        try:
            import highdicom  # noqa: F401
        except ImportError:
            return None
        from medseg.inference.writers import NothingToWrite, VolumeWriter

        p = self.predictor
        try:
            seg, _ = VolumeWriter(p.scheme, "dicom-seg", p.identity, p.label_codes).write(out, case, image, pred)
        except NothingToWrite:
            return None
        return seg.name
