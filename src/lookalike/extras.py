"""Optional parts behind pip extras: the core (index, search, the Python API) needs none.

pip install 'lookalike[serve]'   # lookalike serve: the HTTP API and the web page
pip install 'lookalike[plots]'   # lookalike eval --plot: precision-recall curves
pip install 'lookalike[parquet]' # lookalike embed --out / import: vectors as Parquet files
pip install 'lookalike[all]'     # both, and the larger models (lite1, lite2)
"""

from __future__ import annotations

import importlib

#: extra -> the modules it brings (import names).
EXTRAS: dict[str, tuple[str, ...]] = {
    "serve": ("fastapi", "uvicorn", "multipart", "swagger_ui_bundle"),
    "plots": ("matplotlib",),
    "parquet": ("pyarrow", "pyarrow.parquet"),
}


class MissingExtraError(RuntimeError):
    """A feature needs an extra that is not installed; the message says how to install it."""

    def __init__(self, extra: str, feature: str, missing: str) -> None:
        self.extra = extra
        super().__init__(
            f"{feature} needs the '{extra}' extra: pip install 'lookalike[{extra}]' "
            f"(missing: {missing})"
        )


def require(extra: str, feature: str) -> None:
    """Import what ``extra`` brings, or raise :class:`MissingExtraError` naming it."""
    for module in EXTRAS[extra]:
        try:
            importlib.import_module(module)
        except ImportError:
            raise MissingExtraError(extra, feature, module) from None
