"""Jobs, in one home: what a job is, the states it and its systems move through, and the runner
interface both ways of running them share.

    queued -> running -> rendering -> done          (a job: `JobStatus`)
          \\-> cancelled     \\-> failed
    queued -> decoding -> done | failed | cancelled  (each system: `SystemState`)

`JobRunner` keeps the jobs and their progress (versioned snapshots, waiting for changes, saving
job.json for restarts); `pipeline.LocalJobRunner` runs them in this process's thread pool and
`queue.QueueJobRunner` through Redis on worker processes: siblings with the same interface. The
API sends these vocabularies to the page (`vocabulary()`), which has no list of its own.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import threading
import time
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Protocol

from acai_omr.inference.confidence import confidence_words


class _State(str, Enum):
    """A state that is its own string: it compares, hashes, prints and goes to JSON as its value."""

    def __str__(self) -> str:
        return self.value

    __hash__ = str.__hash__  # equal to its value, so it must hash like it: "done" in TERMINAL


class JobStatus(_State):
    QUEUED = "queued"
    RUNNING = "running"
    RENDERING = "rendering"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


class SystemState(_State):
    QUEUED = "queued"
    DECODING = "decoding"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL = frozenset({JobStatus.DONE, JobStatus.FAILED, JobStatus.CANCELLED})
# what the page shows for each state (the API sends these; the JavaScript has no list of its own)
STATUS_WORDS = {JobStatus.QUEUED: "waiting", JobStatus.RUNNING: "transcribing", JobStatus.RENDERING: "engraving",
                JobStatus.DONE: "done", JobStatus.FAILED: "failed", JobStatus.CANCELLED: "cancelled"}
STATE_WORDS = {SystemState.QUEUED: "queued", SystemState.DECODING: "reading", SystemState.DONE: "done",
               SystemState.FAILED: "failed", SystemState.CANCELLED: "cancelled"}


def vocabulary() -> dict:
    """The states as the API tells the page: every job status and system state, with words, and which end a job."""
    return {"job_statuses": {s.value: STATUS_WORDS[s] for s in JobStatus},
            "system_states": {s.value: STATE_WORDS[s] for s in SystemState},
            "terminal": sorted(s.value for s in TERMINAL)}


class JobCancelled(Exception):
    """Raised inside a worker when the user cancelled the job."""


class Progress(Protocol):
    """What a running job reports through: `pipeline.LocalProgress` (straight into the `Job`) and
    `queue.QueueProgress` (into the RQ job's meta, read by the web process)."""

    def update(self, **fields) -> None: ...

    def update_system(self, index: int, **fields) -> None: ...

    def check_cancel(self) -> None:
        """Raise `JobCancelled` if the user cancelled."""


@dataclass
class SystemProgress:
    index: int
    page: int
    box: tuple[float, float, float, float]
    quad: list | None = None  # detected corners, kept while the user leaves the box unchanged
    state: SystemState = SystemState.QUEUED
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
    title: str = ""  # the score's title and the downloads' name: the uploaded file's name
    client: str = ""  # the address that started it (per-client limits)
    status: JobStatus = JobStatus.QUEUED
    message: str = ""
    render_error: str = ""
    created: float = field(default_factory=time.time)
    finished_at: float | None = None
    version: int = 0
    score_pages: int = 0
    outputs: dict[str, str] = field(default_factory=dict)  # kind -> file name in directory
    cancel_event: threading.Event = field(default_factory=threading.Event)

    SAVED_FIELDS = ("id", "title", "client", "status", "message", "render_error", "created", "finished_at",
                    "score_pages", "outputs")

    def save(self) -> None:
        """Write job.json beside the job's files (atomically), so a restarted server still knows the job."""
        record = {name: getattr(self, name) for name in self.SAVED_FIELDS}
        record["systems"] = [dataclasses.asdict(system) for system in self.systems]
        path = self.directory / "job.json"
        if not self.directory.is_dir():
            return  # deleted meanwhile
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(record))
        os.replace(temporary, path)

    @classmethod
    def load(cls, directory: Path) -> Job | None:
        """The job a job.json in `directory` describes, or None when there is none (or it is unreadable)."""
        try:
            record = json.loads((directory / "job.json").read_text())
            systems = [SystemProgress(**dict(system, box=tuple(system["box"]), state=SystemState(system["state"])))
                       for system in record.pop("systems")]
            record["status"] = JobStatus(record["status"])
            return cls(directory=directory, systems=systems, **{k: record[k] for k in cls.SAVED_FIELDS if k in record})
        except (OSError, ValueError, TypeError, KeyError):
            return None

    def snapshot(self) -> dict:
        return {
            "id": self.id,
            "status": self.status.value,
            "message": self.message,
            "render_error": self.render_error,
            "version": self.version,
            "score_pages": self.score_pages,
            "outputs": sorted(self.outputs),
            "systems": [
                {"index": s.index, "page": s.page, "box": list(s.box), "state": s.state.value, "tokens": s.tokens,
                 "confidence": s.confidence, "confidence_words": confidence_words(s.confidence),
                 "finished": s.finished, "errors": s.errors, "message": s.message,
                 "rendered": s.rendered}
                for s in self.systems
            ],
        }


class JobRunner:
    """The jobs this server knows and their progress; subclasses run them (`submit`, `cancel`, `shutdown`)."""

    def __init__(self):
        self.jobs: dict[str, Job] = {}
        self.changed = threading.Condition()

    # -- bookkeeping -------------------------------------------------

    def update(self, job: Job, **fields) -> None:
        if "status" in fields:
            fields["status"] = JobStatus(fields["status"])
        self._set(job, job, fields, save="status" in fields)

    def update_system(self, job: Job, system: SystemProgress, **fields) -> None:
        if "state" in fields:
            fields["state"] = SystemState(fields["state"])
        self._set(job, system, fields)

    def _set(self, job: Job, target, fields: dict, save: bool = False) -> None:
        """Change `target` (the job or one of its systems), bump the job's version, wake the watchers."""
        with self.changed:
            for name, value in fields.items():
                setattr(target, name, value)
            job.version += 1
            if save:
                job.save()
            self.changed.notify_all()

    def wait_change(self, job: Job, seen_version: int, timeout: float) -> dict:
        """Block until the job's version passes seen_version (or timeout); return a snapshot."""
        with self.changed:
            self.changed.wait_for(lambda: job.version > seen_version, timeout=timeout)
            return job.snapshot()

    def get(self, job_id: str) -> Job | None:
        return self.jobs.get(job_id)

    def restore(self, directory: Path) -> Job | None:
        """A job this server does not hold, from the job.json in its folder (a restart, or another instance).
        Finished jobs come back as they were; what becomes of an unfinished one is the runner's `_resume`."""
        job = Job.load(directory)
        if job is None:
            return None
        with self.changed:
            job = self.jobs.setdefault(job.id, job)
        self._resume(job)
        return job

    def _resume(self, job: Job) -> None:
        raise NotImplementedError

    def refresh(self, job: Job) -> None:
        """Bring `job` up to date (in-process jobs always are; the queue runner pulls from Redis)."""

    def snapshot(self, job: Job) -> dict:
        with self.changed:
            return job.snapshot()

    def forget(self, job_id: str) -> None:
        job = self.jobs.pop(job_id, None)
        if job is not None:
            job.cancel_event.set()
            shutil.rmtree(job.directory, ignore_errors=True)

    def submit(self, job: Job, pages: dict[int, Path]) -> None:
        raise NotImplementedError

    def cancel(self, job: Job) -> None:
        raise NotImplementedError

    def shutdown(self) -> None:
        """Stop taking jobs (in-process ones are cancelled)."""
