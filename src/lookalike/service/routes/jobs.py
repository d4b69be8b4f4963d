"""/jobs: index server-side folders in the background, follow and cancel them."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body

from lookalike.errors import NotFound
from lookalike.service.routes.common import ERRORS, WRITE, Name, ServiceDep
from lookalike.service.schemas import IndexJobRequest, JobInfo, JobList

router = APIRouter(tags=["jobs"], responses=ERRORS)


@router.post("/collections/{name}/jobs/index", status_code=202, dependencies=WRITE)
def start_index_job(
    name: Name, body: Annotated[IndexJobRequest, Body()], service: ServiceDep
) -> JobInfo:
    """Index folders or files on the server (inside a --root) in the background; follow
    it at /jobs/{id}."""
    return service.submit_index_job(name, body.paths, all_files=body.all_files).info()


@router.get("/jobs")
def list_jobs(service: ServiceDep) -> JobList:
    assert service.jobs is not None
    return JobList(jobs=[job.info() for job in service.jobs.all()])


@router.get("/jobs/{job_id}")
def get_job(job_id: str, service: ServiceDep) -> JobInfo:
    assert service.jobs is not None
    job = service.jobs.get(job_id)
    if job is None:
        raise NotFound(f"no job {job_id!r}")
    return job.info()


@router.delete("/jobs/{job_id}", dependencies=WRITE)
def cancel_job(job_id: str, service: ServiceDep) -> JobInfo:
    """Cancel a job: what it indexed so far is kept."""
    assert service.jobs is not None
    job = service.jobs.get(job_id)
    if job is None:
        raise NotFound(f"no job {job_id!r}")
    service.jobs.cancel(job)
    return job.info()
