"""Which model a collection's images and its queries are described with.

A new collection records the model it is built with; an existing one keeps it, since vectors
of different models (or precisions) cannot be compared. Queries go through the same model,
with the collection's localization or one asked for the queries only.
"""

from __future__ import annotations

import dataclasses
import logging
import os

from lookalike import config
from lookalike.encode.features import Localize
from lookalike.encode.models import DESCRIPTOR_VERSION, ModelSpec, builtin_spec
from lookalike.errors import InvalidInput

log = logging.getLogger(__name__)


def collection_model(
    stored: str | None, model: str | ModelSpec | None, target: str | os.PathLike[str]
) -> ModelSpec:
    """The model of the collection at ``target``: ``model`` (default
    :data:`config.DEFAULT_MODEL`) for a new one (``stored`` None), else the one recorded
    (``stored``, its JSON), which ``model``, if given, must be."""
    wanted = builtin_spec(model) if isinstance(model, str) else model
    if stored is None:
        return wanted or builtin_spec(config.DEFAULT_MODEL)
    spec = ModelSpec.from_json(stored)
    if spec.descriptor_version != DESCRIPTOR_VERSION:
        log.warning(
            "%s was indexed by another version of lookalike's image descriptors "
            "(%s, now %s): its vectors may not match new queries; index it again "
            "into a new --db",
            target,
            spec.descriptor_version,
            DESCRIPTOR_VERSION,
        )
        spec = dataclasses.replace(spec, descriptor_version=DESCRIPTOR_VERSION)
    if isinstance(model, str) and wanted is not None:
        # A model named without a precision: the collection keeps the one it was built with.
        wanted = dataclasses.replace(wanted, precision=spec.precision, calibration=spec.calibration)
    if wanted is not None and wanted != spec:
        raise InvalidInput(
            f"{target} was built with {_difference(spec, wanted)}; vectors of different "
            "models, precisions or descriptors are never mixed: use another --db"
        )
    return spec


def _difference(stored: ModelSpec, wanted: ModelSpec) -> str:
    """What differs between two model specs, for a message: their labels when those differ,
    else the differing settings (``pooling gem, not avg``)."""
    if stored.label != wanted.label:
        return f"{stored.label}, not {wanted.label}"
    changed = [
        f"{f.name} {getattr(stored, f.name)}, not {getattr(wanted, f.name)}"
        for f in dataclasses.fields(ModelSpec)
        if getattr(stored, f.name) != getattr(wanted, f.name)
    ]
    return f"{stored.label} ({'; '.join(changed)})"


def query_localization(spec: ModelSpec, localize: Localize | None) -> Localize:
    """What a query gets: ``localize`` if given, else the collection's own localization,
    or :data:`config.QUERY_LOCALIZE` for a collection indexed without one."""
    if localize is not None:
        return localize
    return config.QUERY_LOCALIZE if spec.localize == "none" else spec.localize


def query_spec(spec: ModelSpec, localize: Localize | None) -> ModelSpec:
    """The model queries are described with: the collection's own, or with ``localize`` other
    than the collection's, one that localizes the queries only (the collection's vectors stay
    as they are: same model, same pooling). ``border`` describes the whole photo here; the
    object's view is added by :func:`lookalike.search.engine.describe_queries`."""
    if localize is None or localize in (spec.localize, "border"):
        return spec
    return spec.with_options(localize=localize)
