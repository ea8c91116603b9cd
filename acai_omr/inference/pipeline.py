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

import logging
import shutil
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from acai_omr.inference.assemble import BREAK_PAGE, BREAK_SYSTEM, assemble_score

log = logging.getLogger(__name__)

TERMINAL = ("done", "failed", "cancelled")


class JobCancelled(Exception):
    """Raised inside a worker when the user cancelled the job."""


# ---------------------------------------------------------------- model


class ModelHolder:
    """Loads the model once (lazily, under a lock) and hands the same read-only instance to every job.

    A failed load is not cached, so weights installed later are picked up by the next job.
    """

    def __init__(self, weights_dir: str | None, device: str = "cpu", torch_threads: int = 0):
        self.weights_dir = weights_dir or None
        self.device = device
        self.torch_threads = torch_threads
        self._lock = threading.Lock()
        self._loaded = None

    def get(self):
        """(model, cfg); raises `acai_omr.model.weights.WeightsError` with a clear message."""
        with self._lock:
            if self._loaded is None:
                import torch

                from acai_omr.model.weights import load_model

                if self.torch_threads > 0:
                    torch.set_num_threads(self.torch_threads)
                model, cfg = load_model(self.weights_dir, device=self.device)
                model.eval()
                for parameter in model.parameters():
                    parameter.requires_grad_(False)
                self._loaded = (model, cfg)
            return self._loaded

    def status(self) -> dict:
        """{"ok": bool, "message": str} without raising."""
        try:
            model, _ = self.get()
        except Exception as error:  # WeightsError, or a broken install
            return {"ok": False, "message": f"Model weights are not available: {error}"}
        return {"ok": True, "message": f"model loaded ({model.num_parameters():,} parameters)"}


def crop_box(page: Image.Image, box: tuple[float, float, float, float], quad: list | None = None) -> Image.Image:
    """Grayscale crop of one system; a detected box's quad (exact corners) is warped upright."""
    from acai_omr.detect import SystemBox, crop_system

    return crop_system(page, SystemBox(*box, confidence=1.0, quad=quad or [])).convert("L")


def system_tensor(gray: Image.Image, cfg):
    """([1, 1, H, W] float tensor, [valid width]) preprocessed exactly as `acai-omr transcribe` does."""
    import torch

    from acai_omr.inference.transcribe import prepare_image

    image, width = prepare_image(gray, cfg)
    return image[None], torch.tensor([width])


# ---------------------------------------------------------------- jobs


@dataclass
class SystemProgress:
    index: int
    page: int
    box: tuple[float, float, float, float]
    quad: list | None = None  # detected corners, kept while the user leaves the box unchanged
    state: str = "queued"  # queued, encoding, decoding, done, failed, cancelled
    tokens: int = 0
    confidence: float | None = None
    finished: bool | None = None  # the decoder produced <eos> (False: cut at the token limit)
    errors: int = 0  # delinearizer soft errors
    message: str = ""
    rendered: bool = False


@dataclass
class Job:
    id: str
    directory: Path
    systems: list[SystemProgress]
    status: str = "queued"  # queued, running, rendering, done, failed, cancelled
    message: str = ""
    render_error: str = ""
    created: float = field(default_factory=time.time)
    finished_at: float | None = None
    version: int = 0
    score_pages: int = 0
    outputs: dict[str, str] = field(default_factory=dict)  # kind -> file name in directory
    cancel_event: threading.Event = field(default_factory=threading.Event)

    def snapshot(self) -> dict:
        return {
            "id": self.id,
            "status": self.status,
            "message": self.message,
            "render_error": self.render_error,
            "version": self.version,
            "score_pages": self.score_pages,
            "outputs": sorted(self.outputs),
            "systems": [
                {"index": s.index, "page": s.page, "box": list(s.box), "state": s.state, "tokens": s.tokens,
                 "confidence": s.confidence, "finished": s.finished, "errors": s.errors, "message": s.message,
                 "rendered": s.rendered}
                for s in self.systems
            ],
        }


@dataclass
class PipelineSettings:
    render: bool = True
    render_timeout: float = 120
    max_tokens: int = 0
    constrained: bool = True


class JobRunner:
    """Runs jobs in a bounded thread pool and tracks their progress."""

    def __init__(self, model: ModelHolder, settings: PipelineSettings, pool_size: int = 1):
        self.model = model
        self.settings = settings
        self.pool = ThreadPoolExecutor(max_workers=max(1, pool_size), thread_name_prefix="acai-job")
        self.jobs: dict[str, Job] = {}
        self.changed = threading.Condition()

    # -- bookkeeping -------------------------------------------------

    def update(self, job: Job, **fields) -> None:
        with self.changed:
            for name, value in fields.items():
                setattr(job, name, value)
            job.version += 1
            self.changed.notify_all()

    def update_system(self, job: Job, system: SystemProgress, **fields) -> None:
        with self.changed:
            for name, value in fields.items():
                setattr(system, name, value)
            job.version += 1
            self.changed.notify_all()

    def wait_change(self, job: Job, seen_version: int, timeout: float) -> dict:
        """Block until the job's version passes seen_version (or timeout); return a snapshot."""
        with self.changed:
            self.changed.wait_for(lambda: job.version > seen_version, timeout=timeout)
            return job.snapshot()

    def get(self, job_id: str) -> Job | None:
        return self.jobs.get(job_id)

    def snapshot(self, job: Job) -> dict:
        with self.changed:
            return job.snapshot()

    # -- lifecycle ---------------------------------------------------

    def submit(self, job: Job, pages: dict[int, Path]) -> None:
        self.jobs[job.id] = job
        self.pool.submit(self._run_safely, job, pages)

    def cancel(self, job: Job) -> None:
        """Stop a job: a queued one at once, a running one after its current system."""
        with self.changed:
            job.cancel_event.set()
            if job.status == "queued":  # its worker will return as soon as it is picked up
                for system in job.systems:
                    system.state = "cancelled"
                self.update(job, status="cancelled", message="Cancelled.", finished_at=time.time())

    def forget(self, job_id: str) -> None:
        job = self.jobs.pop(job_id, None)
        if job is not None:
            job.cancel_event.set()
            shutil.rmtree(job.directory, ignore_errors=True)

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
                if system.state not in ("done", "failed"):
                    system.state = "cancelled"
            self.update(job, status="cancelled", message="Cancelled.", finished_at=time.time())
        except Exception as error:
            log.error("job %s failed:\n%s", job.id, traceback.format_exc())
            self.update(job, status="failed", message=_user_message(error), finished_at=time.time())


def _user_message(error: Exception) -> str:
    name = type(error).__name__
    if name == "WeightsError":
        return f"Model weights are missing or unreadable: {error}"
    return f"Transcription failed: {error}" if str(error) else f"Transcription failed ({name})."


def _check_cancel(job: Job) -> None:
    if job.cancel_event.is_set():
        raise JobCancelled()


def run_job(job: Job, pages: dict[int, Path], runner: JobRunner) -> None:
    """Transcribe every system of the job, join them, write and render the outputs."""
    from acai_omr.inference.decode import greedy_decode
    from acai_omr.lmx.delinearize import delinearize
    from acai_omr.lmx.vocab import VOCAB

    _check_cancel(job)
    runner.update(job, status="running", message="Loading the model…")
    model, cfg = runner.model.get()
    settings = runner.settings
    max_len = settings.max_tokens or None
    if max_len is not None:
        max_len = min(max_len, model.cfg.max_tokens - 1)
    runner.update(job, message="Transcribing…")

    directory = job.directory
    token_lines: list[str] = []
    parts = []
    breaks = []
    open_pages: dict[int, Image.Image] = {}
    previous_page = None
    for system in job.systems:
        _check_cancel(job)
        runner.update_system(job, system, state="encoding")
        if system.page not in open_pages:
            open_pages.clear()  # keep at most one decoded page in memory
            with Image.open(pages[system.page]) as page:
                open_pages[system.page] = page.copy()
        crop = crop_box(open_pages[system.page], system.box, system.quad)
        crop.save(directory / f"crop-{system.index}.png")
        images, widths = system_tensor(crop, cfg)
        images, widths = images.to(runner.model.device), widths.to(runner.model.device)
        runner.update_system(job, system, state="decoding")
        result = greedy_decode(model, images, widths, max_len=max_len, constrained=settings.constrained)[0]
        tokens = VOCAB.decode(result.token_ids)
        part = delinearize(tokens)
        (directory / f"system-{system.index}.musicxml").write_text(part.to_musicxml(), encoding="utf-8")
        token_lines.append(" ".join(tokens))
        parts.append(part.part)
        breaks.append(BREAK_PAGE if previous_page is not None and system.page != previous_page else BREAK_SYSTEM)
        previous_page = system.page
        message = "" if part.part is not None else "the model's output could not be read as music"
        runner.update_system(job, system, state="done", tokens=len(tokens), confidence=round(result.confidence, 4),
                             finished=result.finished, errors=len(part.errors), message=message)

    _check_cancel(job)
    from acai_omr.render.outputs import write_mxl

    musicxml = assemble_score(parts, breaks)
    (directory / "score.musicxml").write_text(musicxml, encoding="utf-8")
    (directory / "score.lmx").write_text("\n".join(token_lines) + "\n", encoding="utf-8")
    write_mxl(musicxml, directory / "score.mxl")
    runner.update(job, outputs={"musicxml": "score.musicxml", "lmx": "score.lmx", "mxl": "score.mxl"})

    if settings.render:
        runner.update(job, status="rendering", message="Rendering the score with MuseScore…")
        render_outputs(job, runner, [part is not None for part in parts])
    runner.update(job, status="done", message="Done.", finished_at=time.time())


def render_outputs(job: Job, runner: JobRunner, readable: list[bool]) -> None:
    """The score as PNG pages, PDF and MIDI, then each readable system alone (trimmed PNG).

    Two MuseScore calls, so that a system MuseScore cannot draw costs only its own
    picture; a failure of the score itself is reported in `job.render_error`.
    """
    from acai_omr.render.outputs import RenderError, render_batch

    directory = job.directory
    timeout = runner.settings.render_timeout
    try:
        score = render_batch([(directory / "score.musicxml", directory / "score", ("png", "pdf", "mid"))],
                             timeout=timeout)[0]
    except RenderError as error:
        runner.update(job, render_error=f"Rendering failed: {error}. The MusicXML is still available.")
        return
    runner.update(job, outputs=dict(job.outputs, pdf="score.pdf", mid="score.mid", png="score-1.png"),
                  score_pages=len(score.pngs))

    systems = [s for s, ok in zip(job.systems, readable) if ok]
    batch = [(directory / f"system-{s.index}.musicxml", directory / f"render-{s.index}", ("png",)) for s in systems]
    try:
        rendered = render_batch(batch, timeout=timeout, trim_from=0)
    except RenderError as error:
        log.warning("job %s: system renderings failed: %s", job.id, error)
        return
    for system, result in zip(systems, rendered):
        result.pngs[0].rename(directory / f"render-{system.index}.png")
        for extra in result.pngs[1:]:
            extra.unlink(missing_ok=True)
        runner.update_system(job, system, rendered=True)
