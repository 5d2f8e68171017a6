"""preprocess layer of stxcat: spectra -> continuum-normalised model inputs (see docs/preprocessing.md).

Public entry points: :func:`preprocess_batch`, :class:`PreprocessSettings`, :class:`ModelGrid`,
:class:`Preprocessed`.
"""

from catalog_tool.preprocess.chain import (DIAGNOSTIC_COLUMNS, Preprocessed, needed_observed_range,
                                          needed_range, preprocess_batch)
from catalog_tool.preprocess.grid import ModelGrid
from catalog_tool.preprocess.settings import PreprocessSettings

__all__ = ["preprocess_batch", "Preprocessed", "PreprocessSettings", "ModelGrid",
           "DIAGNOSTIC_COLUMNS", "needed_range", "needed_observed_range"]
