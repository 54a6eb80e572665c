"""The run directory: its file names (``layout``), the strategies table (``strategies``), typed
readers (``io``), run loading (``loading``) and the training seeds of ``retrain.csv`` rows
(``retrains``). The only package that spells run file names."""

from fusion3d.run.layout import RunDir

__all__ = ["RunDir"]
