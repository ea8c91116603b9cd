"""Scale-out: transcription jobs through Redis Queue (RQ) to `acai-omr worker` processes.

Without a Redis URL the web app runs jobs in its own thread pool
(`pipeline.LocalJobRunner`). With one, `QueueJobRunner` takes its place: the web
process crops the systems (cheap) and enqueues the crops; any number of
`acai-omr worker` processes, on any machine that reaches Redis, load the model
once, decode, assemble and render, and hand the files back through Redis as
the job's result. No shared file system is needed.

Progress travels in the RQ job's `meta`; cancelling is a Redis key the worker
checks while decoding. A worker beats its heartbeat every few seconds, also while
it decodes (`LiveWorker`), so a worker that dies mid-job leaves a StartedJobRegistry
entry that expires within LIVENESS_SECONDS; `StartedJobRegistry.cleanup` (called
by the web process every few seconds and by workers' maintenance) then retries it
on another worker while retries are left, else marks it failed. A job is never
silently lost, nor stuck for long. When Redis does not answer, every call of the
runner raises `QueueUnavailable` (the API answers 503); redis-py reconnects on its
own once Redis is back.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import tempfile
import threading
import time
from pathlib import Path

from PIL import Image

from acai_omr.config import DecodeConfig
from acai_omr.inference.jobs import TERMINAL, Job, JobCancelled, JobRunner, JobStatus, SystemState
from acai_omr.inference.pipeline import ModelHolder, PipelineSettings, crop_systems, give_memory_back, transcribe_job

log = logging.getLogger(__name__)

CANCEL_KEY = "acai-omr:cancel:{}"
REAP_EVERY_SECONDS = 5.0
LIVENESS_SECONDS = 45  # a worker silent this long is dead: its job is retried or failed, /api/status drops it
BEAT_SECONDS = 10  # how often a busy worker beats (an idle one beats as it waits for jobs)


class QueueUnavailable(Exception):
    """Redis does not answer: jobs can be neither queued nor followed until it is back."""

    message = "The job queue (Redis) does not answer; nothing was lost, try again in a minute."


@contextlib.contextmanager
def _redis_calls():
    from redis.exceptions import RedisError

    try:
        yield
    except RedisError as error:
        log.warning("Redis: %s", error)
        raise QueueUnavailable() from error

# ---------------------------------------------------------------- worker side

_MODEL: ModelHolder | None = None  # set by `acai-omr worker` before it starts taking jobs


def set_worker_model(holder: ModelHolder) -> None:
    global _MODEL
    _MODEL = holder


class QueueProgress:
    """Progress of a job running in a worker: kept in the RQ job's meta, read by the web process."""

    def __init__(self, rq_job, connection):
        self.rq_job, self.connection = rq_job, connection
        self.state: dict = {"outputs": {}, "systems": {}}
        self._cancel_key = CANCEL_KEY.format(rq_job.id)

    def _save(self) -> None:
        self.rq_job.meta["acai"] = self.state
        self.rq_job.save_meta()

    def update(self, **fields) -> None:
        if "outputs" in fields:
            fields["outputs"] = dict(self.state["outputs"], **fields["outputs"])
        self.state.update(fields)
        self._save()

    def update_system(self, index: int, **fields) -> None:
        self.state["systems"].setdefault(str(index), {}).update(fields)
        self._save()

    def check_cancel(self) -> None:
        if self.connection.exists(self._cancel_key):
            raise JobCancelled()


def run_queued_job(payload: dict) -> dict:
    """The RQ task: crops (PNG bytes) -> the job's files, returned as {name: bytes} with the final progress."""
    from rq import get_current_job

    rq_job = get_current_job()
    progress = QueueProgress(rq_job, rq_job.connection)
    holder = _MODEL or ModelHolder(None)
    progress.update(status=JobStatus.RUNNING, message="Loading the model…")
    model, _ = holder.get()
    crops = [Image.open(io.BytesIO(data)).convert("L") for data in payload["crops"]]
    systems = [(s["index"], s["page"], tuple(s["box"])) for s in payload["systems"]]
    given = payload["settings"]
    settings = PipelineSettings(render=given["render"], render_timeout=given["render_timeout"],
                                decode=DecodeConfig(**given["decode"]))
    with tempfile.TemporaryDirectory(prefix="acai-omr-job-") as tmp:
        try:
            transcribe_job(model, crops, systems, Path(tmp), settings, progress, title=payload.get("title", ""))
        except JobCancelled:  # the finished systems' score, if any, comes back with the cancellation
            return {"cancelled": True, "state": progress.state, "files": _job_files(Path(tmp))}
        finally:
            give_memory_back()
        return {"cancelled": False, "state": progress.state, "files": _job_files(Path(tmp))}


def _job_files(directory: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in directory.iterdir()
            if path.is_file() and not path.name.startswith("crop-")}


def run_worker(redis_url: str, queue_name: str, weights_dir: str | None, burst: bool = False,
               device: str = "cpu", torch_threads: int = 0, int8: bool = False, compile: bool = False) -> None:
    """Load the model once, then take jobs until stopped (or, with burst, until the queue is empty).

    A SimpleWorker runs jobs in this process: no fork after torch has started
    its thread pools, and the model stays loaded between jobs.
    """
    from redis import Redis
    from rq import Queue

    holder = ModelHolder(weights_dir, device, torch_threads, int8, compile)
    holder.get()  # fail now, with the weights error, rather than on the first job
    set_worker_model(holder)
    connection = Redis.from_url(redis_url)
    worker = live_worker_class()([Queue(queue_name, connection=connection)], connection=connection,
                                 worker_ttl=LIVENESS_SECONDS - 5)  # an idle worker beats every worker_ttl - 15 s
    worker.work(burst=burst, with_scheduler=False)


def live_worker_class():
    """RQ's SimpleWorker with a heartbeat that keeps beating while a job runs.

    RQ beats only between jobs (or from a forked horse's monitor), so a SimpleWorker killed
    mid-job was noticed only after job_timeout + 60 s (657 s seen). This one beats every
    BEAT_SECONDS from a thread and keeps its registry entries LIVENESS_SECONDS ahead.
    """
    from rq import SimpleWorker
    from rq.worker import WorkerStatus

    class LiveWorker(SimpleWorker):
        def get_heartbeat_ttl(self, job, working_time: float = 0.0) -> int:
            return LIVENESS_SECONDS

        def execute_job(self, job, queue):
            execution = self.prepare_execution(job)
            stop = threading.Event()

            def beat():
                while not stop.wait(BEAT_SECONDS):
                    try:
                        self.maintain_heartbeats(job, execution)
                    except Exception as error:  # Redis away for a moment: the next beat tries again
                        log.warning("heartbeat: %s", error)

            beating = threading.Thread(target=beat, name="acai-omr-heartbeat", daemon=True)
            beating.start()
            try:
                self.perform_job(job, queue, execution)
            finally:
                stop.set()
                beating.join()
            self.set_state(WorkerStatus.IDLE)

    return LiveWorker


def live_workers(queue) -> int:
    """Workers on `queue` that beat within LIVENESS_SECONDS (a killed one stays registered for a while)."""
    from rq import Worker

    cutoff = time.time() - LIVENESS_SECONDS
    return sum(1 for worker in Worker.all(queue=queue)
               if worker.last_heartbeat is not None and worker.last_heartbeat.timestamp() >= cutoff)


# ---------------------------------------------------------------- web side


def _png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


class QueueJobRunner(JobRunner):
    """The web app's job runner when a Redis URL is configured: a sibling of `LocalJobRunner`.

    Jobs are enqueued to RQ; their state is pulled from Redis whenever a handler
    looks at them (`refresh`), and the result files are written into the job's
    folder once it finishes.
    """

    def __init__(self, redis_url: str, settings: PipelineSettings, queue_name: str = "acai-omr",
                 job_timeout: int = 600, retries: int = 1, result_ttl: int = 3600):
        from redis import Redis
        from rq import Queue

        super().__init__()
        self.settings = settings
        self.connection = Redis.from_url(redis_url)
        self.queue = Queue(queue_name, connection=self.connection)
        self.job_timeout, self.retries, self.result_ttl = job_timeout, retries, result_ttl
        self._last_reap = 0.0

    def ping(self) -> bool:
        try:
            return bool(self.connection.ping())
        except Exception:
            return False

    def submit(self, job: Job, pages: dict[int, Path]) -> None:
        try:
            with _redis_calls():
                self._enqueue(job, pages)
        except QueueUnavailable:
            self.jobs.pop(job.id, None)
            raise

    def _enqueue(self, job: Job, pages: dict[int, Path]) -> None:
        from rq import Retry

        self.jobs[job.id] = job
        job.save()
        crops = crop_systems(job.systems, pages, job.directory)
        s = self.settings
        payload = {
            "crops": [_png_bytes(crop) for crop in crops],
            "systems": [{"index": x.index, "page": x.page, "box": list(x.box)} for x in job.systems],
            "title": job.title,
            "settings": {"render": s.render, "render_timeout": s.render_timeout,
                         "decode": dataclasses.asdict(s.decode)},
        }
        self.queue.enqueue("acai_omr.inference.queue.run_queued_job", payload, job_id=job.id,
                           job_timeout=self.job_timeout, result_ttl=self.result_ttl, failure_ttl=self.result_ttl,
                           retry=Retry(max=self.retries) if self.retries > 0 else None)
        self.update(job, message="Waiting for a worker…")

    # -- state from Redis ----------------------------------------------

    def reap_abandoned(self, timestamp: float | None = None) -> None:
        """Retry (or fail) jobs whose worker died: RQ's own clean-up of its started-job registry."""
        from rq.registry import StartedJobRegistry

        StartedJobRegistry(queue=self.queue).cleanup(timestamp)
        self._last_reap = time.time()

    def refresh(self, job: Job) -> None:
        """Pull the job's state from Redis into `job` (a no-op once the job has ended)."""
        with _redis_calls():
            self._pull(job)

    def _pull(self, job: Job) -> None:
        from rq.exceptions import NoSuchJobError
        from rq.job import Job as RqJob
        from rq.job import JobStatus as RqStatus

        if job.status in TERMINAL:
            return
        if time.time() - self._last_reap > REAP_EVERY_SECONDS:
            self.reap_abandoned()
        try:
            rq_job = RqJob.fetch(job.id, connection=self.connection)
        except NoSuchJobError:
            self.update(job, status=JobStatus.FAILED, message="The job was lost from the queue.", finished_at=time.time())
            return
        status = rq_job.get_status(refresh=True)
        state = rq_job.get_meta(refresh=True).get("acai", {})
        if status != RqStatus.FINISHED and state.get("status") in TERMINAL:
            # The worker writes "done" into the meta a moment before RQ stores its result (the files).
            # Only RQ's status may end the job: a job ended from the meta would never fetch its files,
            # since refresh stops at a terminal status (seen in CI as a finished job without a PDF).
            state = {k: v for k, v in state.items() if k not in ("status", "message", "finished_at")}
        if status == RqStatus.FINISHED:
            result = rq_job.return_value() or {}
            state = result.get("state", state)
            job.directory.mkdir(parents=True, exist_ok=True)
            for name, data in result.get("files", {}).items():
                (job.directory / Path(name).name).write_bytes(data)
            if result.get("cancelled"):
                message = "Cancelled; the finished systems can be downloaded." if state.get("outputs") else "Cancelled."
                self._apply(job, state, status=JobStatus.CANCELLED, message=message, finished_at=time.time())
                return
            self._apply(job, state, status=JobStatus.DONE, message="Done.", finished_at=time.time())
        elif status == RqStatus.FAILED:
            self._apply(job, state, status=JobStatus.FAILED, message=self._failure_message(rq_job), finished_at=time.time())
        elif status in (RqStatus.CANCELED, RqStatus.STOPPED):
            self._apply(job, state, status=JobStatus.CANCELLED, message="Cancelled.", finished_at=time.time())
        elif status == RqStatus.STARTED:
            self._apply(job, state)
        else:  # queued, or queued again after a retry (_apply changes nothing if it already says so)
            self._apply(job, {}, status=JobStatus.QUEUED, message="Waiting for a worker…")

    def _apply(self, job: Job, state: dict, **final) -> None:
        fields = {k: state[k] for k in ("status", "message", "render_error", "score_pages") if k in state}
        if "outputs" in state:
            fields["outputs"] = dict(state["outputs"])
        fields.update(final)
        if "status" in fields:
            fields["status"] = JobStatus(fields["status"])  # the worker's meta is JSON: plain strings
        with self.changed:
            changed = any(getattr(job, k) != v for k, v in fields.items() if k != "finished_at")
            for system in job.systems:
                for name, value in state.get("systems", {}).get(str(system.index), {}).items():
                    if name == "state":
                        value = SystemState(value)
                    if getattr(system, name) != value:
                        setattr(system, name, value)
                        changed = True
            if changed:
                status_before = job.status
                for name, value in fields.items():
                    setattr(job, name, value)
                job.version += 1
                if job.status != status_before:
                    job.save()
                self.changed.notify_all()

    @staticmethod
    def _failure_message(rq_job) -> str:
        result = rq_job.latest_result()
        text = (result.exc_string or "") if result is not None else ""
        if "AbandonedJobError" in text:
            return "The worker transcribing this job stopped unexpectedly; please submit it again."
        last = text.strip().splitlines()[-1] if text.strip() else "unknown error"
        return f"Transcription failed: {last}"

    # -- the JobRunner interface ------------------------------------------

    def get(self, job_id: str) -> Job | None:
        job = self.jobs.get(job_id)
        if job is not None:
            self.refresh(job)
        return job

    def _resume(self, job: Job) -> None:
        """Its worker does not depend on this process: Redis has the job's state."""
        self.refresh(job)

    def snapshot(self, job: Job) -> dict:
        self.refresh(job)
        return super().snapshot(job)

    def wait_change(self, job: Job, seen_version: int, timeout: float) -> dict:
        deadline = time.time() + timeout
        while True:
            self.refresh(job)
            if job.version > seen_version or time.time() >= deadline:
                return super().snapshot(job)
            time.sleep(min(0.25, max(0.0, deadline - time.time())))

    def cancel(self, job: Job) -> None:
        """Queued: removed from the queue at once. Running: the worker stops within a few decoding steps."""
        from rq.job import Job as RqJob
        from rq.job import JobStatus as RqStatus

        with _redis_calls():
            self.connection.set(CANCEL_KEY.format(job.id), 1, ex=self.result_ttl)
        try:
            rq_job = RqJob.fetch(job.id, connection=self.connection)
            if rq_job.get_status(refresh=True) in (RqStatus.QUEUED, RqStatus.SCHEDULED, RqStatus.DEFERRED):
                rq_job.cancel()
                self.update(job, status=JobStatus.CANCELLED, message="Cancelled.", finished_at=time.time())
        except Exception as error:  # the job may have finished meanwhile; refresh will tell
            log.info("cancel %s: %s", job.id, error)

    def forget(self, job_id: str) -> None:
        from rq.job import Job as RqJob

        super().forget(job_id)
        try:
            RqJob.fetch(job_id, connection=self.connection).delete()
        except Exception:
            pass

    def shutdown(self) -> None:
        """Nothing runs here: the workers go on with their jobs."""
