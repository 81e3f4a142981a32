"""The web service of ``medseg serve``: a versioned REST API (FastAPI, OpenAPI schema at ``/openapi.json`` and
``/docs``) and the page at ``/``.

- ``GET /healthz``: liveness, queue length, whether a token is needed (open to all, like the page itself).
- ``GET /v1/models``: the model: input kind (2D/3D), channels, classes with names, label values and colours.
- ``POST /v1/jobs``: the scan as the request body (``application/octet-stream``): a NIfTI/NRRD/MHA volume, a 2D
  image or a zip of one DICOM series; 202 with the job. Refused: over the size limit (413), not a kind medseg
  reads, by content (415), unreadable or of the wrong dimensionality for the model (422), queue full (503).
- ``GET /v1/jobs/{id}``: status (queued with its position, running, done, failed with the error), QC flag.
- ``GET /v1/jobs/{id}/mask | /probabilities | /uncertainty | /seg.dcm``: the files (409 while not done, 404 if the
  job has no such file).
- ``GET /v1/jobs/{id}/view?plane=&index=&opacity=&hide=``: a PNG of one plane with the mask (:mod:`.views`).

Every ``/v1`` route needs ``Authorization: Bearer TOKEN`` when the server has a token (compared in constant time).
No request value ever becomes a path: job ids are checked against their random pattern and uploads are stored
under names the server chooses (:mod:`.uploads`). CORS is off unless origins are given.
"""

import hmac
import logging
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response

from medseg.errors import DataError, MedsegError
from medseg.serving.jobs import Job, JobStore, Worker
from medseg.serving.uploads import store
from medseg.serving.views import PLANES, render

log = logging.getLogger(__name__)
PAGE = Path(__file__).with_name("page.html")
MEDIA = {".nii.gz": "application/gzip", ".nii": "application/octet-stream", ".nrrd": "application/octet-stream",
         ".mha": "application/octet-stream", ".png": "image/png", ".npy": "application/octet-stream",
         ".dcm": "application/dicom"}


@dataclass
class ServeSettings:
    """The service's options (``medseg serve`` builds them from its flags)."""

    data_dir: Path
    token: str | None = None
    max_upload_bytes: int = 1 << 30
    queue_size: int = 16
    keep_seconds: float = 24 * 3600
    max_jobs: int = 500
    cors_origins: list[str] = field(default_factory=list)
    allowed_hosts: list[str] | None = None  # Host headers accepted (the loopback names when bound to loopback)


def create_app(predictor, settings: ServeSettings):
    """The FastAPI application for ``predictor`` (started with its worker on the app's start-up)."""
    jobs = JobStore(settings.data_dir, settings.keep_seconds, settings.max_jobs)
    worker = Worker(predictor, jobs, settings.queue_size)
    worker.start()

    @asynccontextmanager
    async def lifespan(_app):
        yield
        worker.stopping.set()

    app = FastAPI(title="medseg", version="1", description="Segmentation jobs for one trained medseg model.", lifespan=lifespan)
    app.state.jobs, app.state.worker = jobs, worker
    if settings.allowed_hosts:  # a page elsewhere cannot reach a loopback server through a rebound DNS name
        from starlette.middleware.trustedhost import TrustedHostMiddleware

        app.add_middleware(TrustedHostMiddleware, allowed_hosts=settings.allowed_hosts)
    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"])

    def authorized(request: Request) -> None:
        if settings.token is None:
            return
        given = request.headers.get("authorization", "")
        scheme, _, token = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), settings.token.encode()):
            raise HTTPException(401, "a valid bearer token is needed (Authorization: Bearer TOKEN)",
                                headers={"WWW-Authenticate": "Bearer"})

    def job_or_404(job_id: str) -> Job:
        job = jobs.get(job_id)
        if job is None:
            raise HTTPException(404, "no such job (ids are the ones POST /v1/jobs returned; finished jobs are kept "
                                     f"{settings.keep_seconds / 3600:g} h)")
        return job

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> str:
        return PAGE.read_text(encoding="utf-8")

    @app.get("/healthz")
    def healthz():
        alive = worker.is_alive() and not worker.stopping.is_set()
        body = {"status": "ok" if alive else "the worker has stopped", "queued": worker.queue.qsize(),
                "token_required": settings.token is not None}
        return JSONResponse(body, status_code=200 if alive else 503)

    @app.get("/v1/models", dependencies=[Depends(authorized)])
    def models() -> dict:
        scheme = predictor.scheme
        return {"models": [{"name": predictor.identity or "medseg model", "dims": predictor.dims,
                            "channels": predictor.num_channels, "tta": bool(predictor.mirror),
                            "quality_control": predictor.quality is not None,
                            "classes": [{"id": i, "name": scheme.names[i], "value": scheme.codes[i],
                                         "color": list(predictor.colors[i]) if i < len(predictor.colors) else None}
                                        for i in range(scheme.num_classes)]}]}

    uploading = [0]  # uploads being received now: at most as many as the queue holds

    @app.post("/v1/jobs", status_code=202, dependencies=[Depends(authorized)])
    async def create_job(request: Request):
        from starlette.concurrency import run_in_threadpool

        if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/octet-stream":
            raise HTTPException(415, "send the scan's bytes as the body with Content-Type: application/octet-stream")
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > settings.max_upload_bytes:
            raise HTTPException(413, f"the upload is larger than the limit of {settings.max_upload_bytes} bytes")
        if worker.full() or uploading[0] >= settings.queue_size:
            raise HTTPException(503, f"the queue is full ({settings.queue_size} jobs); try again shortly",
                                headers={"Retry-After": "5"})
        uploading[0] += 1
        job_id = jobs.new_id()
        received = jobs.incoming / job_id
        try:
            size = 0
            with received.open("wb") as f:
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > settings.max_upload_bytes:
                        raise HTTPException(413, f"the upload is larger than the limit of {settings.max_upload_bytes} bytes")
                    f.write(chunk)
            if size == 0:
                raise HTTPException(422, "the request body is empty: send the scan's bytes as the body")
            folder = jobs.folder(job_id)
            folder.mkdir()
            try:
                upload = await run_in_threadpool(_store_and_check, received, folder, predictor)
            except DataError as e:
                jobs.remove(job_id)
                raise HTTPException(415 if "not a file medseg reads" in e.message else 422, e.message) from None
            except Exception as e:  # noqa: BLE001 - whatever a malformed upload raises, it is refused, not a 500
                jobs.remove(job_id)
                log.warning("upload refused: %s", type(e).__name__)
                raise HTTPException(422, f"the scan cannot be read ({type(e).__name__})") from None
        finally:
            uploading[0] -= 1
            received.unlink(missing_ok=True)
        job = Job(job_id, upload.kind, upload.dims, size, str(upload.path.relative_to(folder)))
        jobs.add(job)
        if not worker.submit(job):
            jobs.remove(job_id)
            raise HTTPException(503, f"the queue is full ({settings.queue_size} jobs); try again shortly",
                                headers={"Retry-After": "5"})
        log.info("job %s queued (%s, %d bytes)", job_id, upload.kind, size)
        return JSONResponse(jobs.public(job, worker.position(job_id)), status_code=202)

    @app.get("/v1/jobs/{job_id}", dependencies=[Depends(authorized)])
    def job_status(job_id: str) -> dict:
        return jobs.public(job_or_404(job_id), worker.position(job_id))

    def result(job_id: str, what: str):
        job = job_or_404(job_id)
        if job.status != "done":
            raise HTTPException(409, f"job is {job.status}" + (f": {job.error}" if job.error else "; wait until it is done"))
        name = job.files.get(what)
        if name is None:
            raise HTTPException(404, f"this job has no {what}" + (" (a DICOM SEG needs a DICOM series input, highdicom "
                                                                 "installed and a predicted segment)" if what == "seg.dcm" else ""))
        path = jobs.folder(job_id) / "out" / name
        if not path.is_file():  # removed by retention a moment ago
            raise HTTPException(404, "no such job (removed by retention)")
        ending = next((e for e in MEDIA if name.endswith(e)), "")
        return FileResponse(path, media_type=MEDIA.get(ending, "application/octet-stream"), filename=f"{what.split('.')[0]}{ending}")

    @app.get("/v1/jobs/{job_id}/mask", dependencies=[Depends(authorized)])
    def mask(job_id: str):
        return result(job_id, "mask")

    @app.get("/v1/jobs/{job_id}/probabilities", dependencies=[Depends(authorized)])
    def probabilities(job_id: str):
        return result(job_id, "probabilities")

    @app.get("/v1/jobs/{job_id}/uncertainty", dependencies=[Depends(authorized)])
    def uncertainty(job_id: str):
        return result(job_id, "uncertainty")

    @app.get("/v1/jobs/{job_id}/seg.dcm", dependencies=[Depends(authorized)])
    def seg(job_id: str):
        return result(job_id, "seg.dcm")

    @app.get("/v1/jobs/{job_id}/view", dependencies=[Depends(authorized)])
    def view(job_id: str, plane: str = Query("axial"), index: int | None = Query(None, ge=0),
             opacity: float = Query(0.45, ge=0.0, le=1.0), hide: str = Query("", max_length=64, pattern=r"^[0-9,]*$")):
        job = job_or_404(job_id)
        if job.status != "done":
            raise HTTPException(409, f"job is {job.status}")
        if plane not in PLANES:
            raise HTTPException(422, f"plane must be one of {', '.join(PLANES)}")
        hidden = [int(c) for c in hide.split(",") if c]
        try:
            png = render(jobs.folder(job_id) / "view", job.dims, job.spacing or [], predictor.colors, plane, index, opacity, hidden)
        except FileNotFoundError:
            raise HTTPException(404, "no such job (removed by retention)") from None
        return Response(png, media_type="image/png", headers={"Cache-Control": "no-store"})

    return app


def _store_and_check(received: Path, folder: Path, predictor):
    upload = store(received, folder)
    _check_readable(upload, predictor)
    return upload


def _check_readable(upload, predictor) -> None:
    """Refuse, before queueing, an upload of the wrong dimensionality or whose header cannot be read."""
    if upload.dims != predictor.dims:
        what = "a 2D image" if upload.dims == 2 else "a 3D volume"
        raise DataError(f"this is {what}, but the model segments {predictor.dims}D "
                        f"{'images' if predictor.dims == 2 else 'volumes'}")
    try:
        if upload.kind == "dicom-zip":
            from medseg.io.dicom import series_files

            series_files(upload.path, None)
        elif upload.dims == 3:
            from medseg.io.volume import read_volume_header

            read_volume_header(upload.path)
        else:
            from PIL import Image

            with Image.open(upload.path) as im:
                im.verify()
    except MedsegError as e:
        raise DataError(f"the scan cannot be read: {e.message}") from None
    except (OSError, ValueError, SyntaxError) as e:
        raise DataError(f"the scan cannot be read: {type(e).__name__}: {e}") from None
