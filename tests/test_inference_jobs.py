"""The job vocabulary and records (acai_omr.inference.jobs): one list of states, shared with the page."""

import json

from acai_omr.inference.jobs import (
    TERMINAL, Job, JobRunner, JobStatus, SystemProgress, SystemState, vocabulary,
)


def test_statuses_compare_and_hash_like_the_strings_the_api_sends():
    assert "done" in TERMINAL and JobStatus.CANCELLED in TERMINAL and "running" not in TERMINAL
    assert json.dumps({"status": JobStatus.RENDERING}) == '{"status": "rendering"}'
    assert {JobStatus.DONE: 1}["done"] == 1


def test_the_vocabulary_names_every_state_in_words_and_the_ones_that_end_a_job():
    words = vocabulary()
    assert set(words["job_statuses"]) == {s.value for s in JobStatus}
    assert set(words["system_states"]) == {s.value for s in SystemState}
    assert words["terminal"] == ["cancelled", "done", "failed"]
    assert all(isinstance(w, str) and w for w in [*words["job_statuses"].values(), *words["system_states"].values()])


def test_a_job_saved_and_loaded_is_the_same_job(tmp_path):
    runner = JobRunner()
    job = Job(id="a" * 32, directory=tmp_path, systems=[SystemProgress(0, 0, (1.0, 2.0, 3.0, 4.0))], title="Mai")
    runner.update(job, status="running")  # plain strings from a worker's JSON become statuses
    runner.update_system(job, job.systems[0], state="done", tokens=12)
    runner.update(job, status=JobStatus.DONE, outputs={"musicxml": "score.musicxml"})
    loaded = Job.load(tmp_path)
    assert loaded.snapshot() | {"version": 0} == job.snapshot() | {"version": 0}
    assert loaded.status is JobStatus.DONE and loaded.systems[0].state is SystemState.DONE
    assert Job.load(tmp_path / "nowhere") is None
