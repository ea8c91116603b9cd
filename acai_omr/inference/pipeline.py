"""Page images + system boxes -> one MusicXML score, run as background jobs.

One job = the systems a user marked on one or more pages, in reading order.
Each system is cropped, resized as in training, decoded to LMX tokens,
delinearized into a part; the parts are joined into one score
(`assemble.assemble_score`) and rendered with MuseScore. Jobs run in a small
thread pool sharing one model, loaded once under a lock and only read
afterwards (eval mode, no grad): decoding keeps all its state in local
tensors, so jobs never share mutable decoder state.

Progress is a `Job` whose fields the worker updates under the runner's
condition variable; web handlers read `snapshot()` and wait on `wait_change()`.
"""

from __future__ import annotations

import ctypes
import logging
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from acai_omr.config import DecodeConfig
from acai_omr.detect import SystemBox, crop_system
from acai_omr.inference.confidence import load_accuracy
from acai_omr.inference.jobs import (
    TERMINAL, Job, JobCancelled, JobRunner, JobStatus, Progress, SystemProgress, SystemState,
)
from acai_omr.render.formats import FORMATS, WEB_FORMATS, ScoreText, write_formats
from acai_omr.render.outputs import RenderError, render_batch

log = logging.getLogger(__name__)

# ---------------------------------------------------------------- model


class ModelHolder:
    """Loads the model once (lazily, under a lock) and hands the same read-only instance to every job.

    A failed load is not cached, so weights installed later are picked up by the next job.
    """

    def __init__(self, weights_dir: str | None, device: str = "cpu", torch_threads: int = 0, int8: bool = False,
                 compile: bool = False):
        self.weights_dir = weights_dir or None
        self.device = device
        self.torch_threads = torch_threads
        self.int8 = int8
        self.compile = compile
        self._lock = threading.Lock()
        self._loaded = None

    def get(self):
        """(model, cfg); raises `acai_omr.model.weights.WeightsError` with a clear message."""
        with self._lock:
            if self._loaded is None:
                # torch comes in here, not at import: a web process that queues to workers never needs it
                # (importing the web API: 73 MiB and no torch, against 544 MiB with it, measured)
                import torch

                from acai_omr.inference.decode import compile_decoder
                from acai_omr.model.weights import load_model

                if self.torch_threads > 0:
                    torch.set_num_threads(self.torch_threads)
                model, cfg = load_model(self.weights_dir, device=self.device, int8=self.int8)
                if self.compile:
                    model = compile_decoder(model)
                model.eval()
                for parameter in model.parameters():
                    parameter.requires_grad_(False)
                self._loaded = (model, cfg)
            return self._loaded

    def status(self, load: bool = True) -> dict:
        """{"ok": bool, "message": str, "accuracy": ...} without raising. `load=False` (a web process that
        queues to workers, which hold the model) reports the weights' measured accuracy only."""
        if not load:
            return {"ok": True, "message": "transcription runs on the queue's workers",
                    "accuracy": load_accuracy(self.weights_dir)}
        try:
            model, _ = self.get()
        except Exception as error:  # WeightsError, or a broken install
            return {"ok": False, "message": f"Model weights are not available: {error}"}
        return {"ok": True, "message": f"model loaded ({model.num_parameters():,} parameters)",
                "accuracy": load_accuracy(self.weights_dir)}


def crop_box(page: Image.Image, box: tuple[float, float, float, float], quad: list | None = None) -> Image.Image:
    """Grayscale crop of one system; a detected box's quad (exact corners) is warped upright."""
    return crop_system(page, SystemBox(*box, confidence=1.0, quad=quad or [])).convert("L")


# ---------------------------------------------------------------- jobs


@dataclass
class PipelineSettings:
    render: bool = True
    render_timeout: float = 120
    decode: DecodeConfig = field(default_factory=DecodeConfig)


class LocalJobRunner(JobRunner):
    """Runs jobs in this process: a bounded thread pool sharing one model."""

    def __init__(self, model: ModelHolder, settings: PipelineSettings, pool_size: int = 1):
        super().__init__()
        self.model = model
        self.settings = settings
        self.pool = ThreadPoolExecutor(max_workers=max(1, pool_size), thread_name_prefix="acai-job")

    def submit(self, job: Job, pages: dict[int, Path]) -> None:
        self.jobs[job.id] = job
        job.save()
        self.pool.submit(self._run_safely, job, pages)

    def _resume(self, job: Job) -> None:
        """A job queued or running in this process when it stopped cannot go on: it ends failed, saying so."""
        if job.status not in TERMINAL:
            self.update(job, status=JobStatus.FAILED, finished_at=time.time(),
                        message="The server restarted while this job was being transcribed; please start it again.")

    def cancel(self, job: Job) -> None:
        """Stop a job: a queued one at once, a running one after its current system."""
        with self.changed:
            job.cancel_event.set()
            if job.status == JobStatus.QUEUED:  # its worker will return as soon as it is picked up
                for system in job.systems:
                    system.state = SystemState.CANCELLED
                self.update(job, status=JobStatus.CANCELLED, message="Cancelled.", finished_at=time.time())

    def shutdown(self) -> None:
        for job in list(self.jobs.values()):
            job.cancel_event.set()
        self.pool.shutdown(wait=False, cancel_futures=True)

    def _run_safely(self, job: Job, pages: dict[int, Path]) -> None:
        with self.changed:
            if job.status in TERMINAL:  # cancelled while queued
                return
        try:
            run_job(job, pages, self)
        except JobCancelled:
            for system in job.systems:
                if system.state not in (SystemState.DONE, SystemState.FAILED):
                    system.state = SystemState.CANCELLED
            kept = sum(system.state == SystemState.DONE for system in job.systems)
            message = f"Cancelled; the {kept} finished system(s) can be downloaded." if job.outputs else "Cancelled."
            self.update(job, status=JobStatus.CANCELLED, message=message, finished_at=time.time())
        except Exception as error:
            log.error("job %s failed:\n%s", job.id, traceback.format_exc())
            self.update(job, status=JobStatus.FAILED, message=_user_message(error), finished_at=time.time())
        finally:
            give_memory_back()


def give_memory_back() -> None:
    """Hand the freed heap of a finished job (page images, crops, decoder caches) back to the system.

    glibc keeps freed memory in its arenas (one per thread that allocated), so a long-lived server's
    resident size only grows; `malloc_trim` returns what is free. A no-op off glibc.
    """
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _user_message(error: Exception) -> str:
    name = type(error).__name__
    if name == "WeightsError":
        return f"Model weights are missing or unreadable: {error}"
    return f"Transcription failed: {error}" if str(error) else f"Transcription failed ({name})."


def _check_cancel(job: Job) -> None:
    if job.cancel_event.is_set():
        raise JobCancelled()


class LocalProgress:
    """Progress reports of an in-process job: straight into its `Job`, under the runner's condition."""

    def __init__(self, job: Job, runner: LocalJobRunner):
        self.job, self.runner = job, runner
        self.by_index = {s.index: s for s in job.systems}

    def update(self, **fields) -> None:
        if "outputs" in fields:
            fields["outputs"] = dict(self.job.outputs, **fields["outputs"])
        self.runner.update(self.job, **fields)

    def update_system(self, index: int, **fields) -> None:
        self.runner.update_system(self.job, self.by_index[index], **fields)

    def check_cancel(self) -> None:
        _check_cancel(self.job)


def crop_systems(systems: list[SystemProgress], pages: dict[int, Path], directory: Path) -> list[Image.Image]:
    """Grayscale crops of the job's systems (also saved as crop-<index>.png); one page open at a time."""
    crops, open_pages = [], {}
    for system in systems:
        if system.page not in open_pages:
            open_pages.clear()
            with Image.open(pages[system.page]) as page:
                open_pages[system.page] = page.copy()
        crop = crop_box(open_pages[system.page], system.box, system.quad)
        crop.save(directory / f"crop-{system.index}.png")
        crops.append(crop)
    return crops


def run_job(job: Job, pages: dict[int, Path], runner: LocalJobRunner) -> None:
    """Transcribe every system of an in-process job, join them, write and render the outputs."""
    _check_cancel(job)
    runner.update(job, status=JobStatus.RUNNING, message="Loading the model…")
    model, _ = runner.model.get()
    crops = crop_systems(job.systems, pages, job.directory)
    transcribe_job(model, crops, [(s.index, s.page, s.box) for s in job.systems], job.directory,
                   runner.settings, LocalProgress(job, runner), title=job.title)


def transcribe_job(model, crops: list[Image.Image], systems: list[tuple[int, int, tuple]], directory: Path,
                   settings: PipelineSettings, progress: Progress, title: str = "") -> None:
    """Crops -> batched decoding -> per-system and whole-score files in `directory`, then rendering.

    `systems` holds (index, page, box) per crop. `progress` (LocalProgress, or the
    queue worker's) receives job and per-system updates and may raise to cancel.
    Shared by in-process jobs and queue workers, so both write the same files.
    """
    from acai_omr.inference.batch import decode_crops, system_results  # torch: see ModelHolder.get

    progress.update(status=JobStatus.RUNNING, message="Transcribing…")
    for index, _, _ in systems:
        progress.update_system(index, state=SystemState.DECODING)
    finished: dict[int, object] = {}  # row -> SystemResult, as batches finish

    def on_tokens(counts: dict[int, int]) -> None:  # live "decoding, N tokens" while a batch runs
        for row, count in counts.items():
            if row not in finished:
                progress.update_system(systems[row][0], tokens=count)
        progress.check_cancel()  # a cancel stops a long batch mid-way, not only between batches

    def on_batch(rows, decoded):
        results = system_results(decoded, [systems[r][1] for r in rows], [systems[r][2] for r in rows])
        for row, result in zip(rows, results):
            finished[row] = result
            index = systems[row][0]
            (directory / f"system-{index}.musicxml").write_text(result.musicxml(), encoding="utf-8")
            message = "" if result.part is not None else "the model's output could not be read as music"
            progress.update_system(index, state=SystemState.DONE, tokens=len(result.tokens),
                                   confidence=round(result.confidence, 4), finished=result.finished,
                                   errors=len(result.errors), message=message)
        progress.check_cancel()

    try:
        progress.check_cancel()
        decoded = decode_crops(model, crops, read_measures=settings.decode.pieces, on_batch=on_batch,
                               on_tokens=on_tokens, **settings.decode.options(model.cfg.max_tokens))
        progress.check_cancel()
    except JobCancelled:
        if finished:  # cancelling keeps what was already read: the finished systems, in reading order
            write_score([finished[row] for row in sorted(finished)], directory, title, progress)
        raise
    results = system_results(decoded, [p for _, p, _ in systems], [b for _, _, b in systems])
    score = write_score(results, directory, title, progress)

    if settings.render:
        # a cancel while rendering ends the job there: the score written above stays downloadable
        progress.check_cancel()
        progress.update(status=JobStatus.RENDERING, message="Rendering the score with MuseScore…")
        readable = [index for (index, _, _), result in zip(systems, results) if result.part is not None]
        render_outputs(score, directory, readable, settings.render_timeout, progress)
    progress.update(status=JobStatus.DONE, message="Done.", finished_at=time.time())


def write_score(results: list, directory: Path, title: str, progress: Progress) -> ScoreText:
    """The joined score of these systems in every in-process web format (MusicXML, .mxl, LMX), offered
    for download at once; MuseScore's formats follow in `render_outputs`."""
    from acai_omr.inference.batch import assemble  # torch: see ModelHolder.get

    score = ScoreText(assemble(results, title=title), [" ".join(r.tokens) for r in results])
    keys = [f.key for f in WEB_FORMATS if not f.by_musescore]
    write_formats(score, directory / "score", keys)
    progress.update(outputs={key: FORMATS[key].job_file for key in keys})
    return score


def render_outputs(score: ScoreText, directory: Path, readable: list[int], timeout: float,
                   progress: Progress) -> None:
    """The score in MuseScore's web formats (PNG pages, PDF, MIDI), then each readable system alone
    (trimmed PNG).

    Two MuseScore calls, so that a system MuseScore cannot draw costs only its own
    picture; a failure of the score itself is reported as the job's render_error.
    """
    keys = [f.key for f in WEB_FORMATS if f.by_musescore]
    try:
        write_formats(score, directory / "score", keys, timeout=timeout)
    except RenderError as error:
        progress.update(render_error=f"Rendering failed: {error}. The MusicXML is still available.")
        return
    progress.update(outputs={key: FORMATS[key].job_file for key in keys},
                    score_pages=len(list(directory.glob("score-*.png"))))
    progress.check_cancel()  # before the second MuseScore call, the systems' pictures

    batch = [(directory / f"system-{index}.musicxml", directory / f"render-{index}", ("png",)) for index in readable]
    try:
        rendered = render_batch(batch, timeout=timeout, trim_from=0)
    except RenderError as error:
        log.warning("system renderings failed in %s: %s", directory, error)
        return
    for index, result in zip(readable, rendered):
        result.pngs[0].rename(directory / f"render-{index}.png")
        for extra in result.pngs[1:]:
            extra.unlink(missing_ok=True)
        progress.update_system(index, rendered=True)
