"""Expected failures: problems with the user's input, data, run directory or machine (torch-free).

``fusion3d.cli.main`` turns a :class:`FusionError` into one line on stderr (``fusion3d: error: ...``)
and exit code 2; anything else is a bug and keeps its traceback. A FusionError is a RuntimeError, so
code that caught the RuntimeErrors these failures used to be still catches them.
"""

from __future__ import annotations


class FusionError(RuntimeError):
    """An expected failure, with a message that names the file, key or process at fault."""


class NonFiniteError(FusionError):
    """Training produced a non-finite loss, gradient norm, drop logit or weight."""
