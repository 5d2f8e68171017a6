"""stxcat: stellar-parameter value-added catalogues from DESI and LAMOST spectra.

The method follows Zhao, Ting, Wyse et al. (arXiv:2602.15021): MLPs pre-trained on LAMOST
low-resolution spectra, fine-tuned on DESI, applied to whole data releases.
"""

__version__ = "0.1.0.dev0"

__all__ = ["__version__"]
