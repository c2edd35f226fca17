"""Classifier heads: one vector per clip (openSMILE functionals, an encoder's pooled states) -> calibrated
class probabilities, shared by every vector member (``members.base.VectorMember``).

One class per kind, each in its own module: ``LogisticHead`` ('logreg'), ``SvmHead`` ('svm', RBF) and
``MlpHead`` ('mlp'); what they share (standardisation, Gaussianisation, the inner grouped CV, calibration,
the pickle-free state) is ``heads.base.Head``. A new head is one subclass with a ``kind``: it registers
itself, and ``model.<member>.kind`` can then name it.

>>> sorted(HEAD_KINDS)
['logreg', 'mlp', 'svm']
"""

from __future__ import annotations

from .base import KINDS, STATE_FORMAT, Head, fit_quantiles, gaussianise, state_scores
from .calibration import CALIBRATIONS, fit_matrix_calibration, fit_temperature_calibration, softmax
from .logreg import LogisticHead, row_basis
from .mlp import MlpHead
from .svm import SvmHead, rbf_decision_function, rbf_ovo, sq_distances

HEAD_KINDS = ("svm", "logreg", "mlp")  # as listed in config help; every one registered in KINDS
DEFAULT_KIND = "logreg"  # EmoDB 5-fold: UAR level with svm/mlp, lowest log-loss, 0.5 MB state (peers_emodb.md)

__all__ = ["CALIBRATIONS", "DEFAULT_KIND", "HEAD_KINDS", "Head", "LogisticHead", "MlpHead", "STATE_FORMAT",
           "SvmHead", "fit_matrix_calibration", "fit_quantiles", "fit_temperature_calibration", "gaussianise",
           "make_head", "rbf_decision_function", "rbf_ovo", "row_basis", "softmax", "sq_distances",
           "state_scores"]


def make_head(kind: str = DEFAULT_KIND, feature_set: str | None = None, quantiles: int = 0,
              calibration: str = "temperature", repeats: int = 1) -> Head:
    """A new, unfitted head of ``kind`` (``Head.create``)."""
    return Head.create(kind, feature_set, quantiles, calibration, repeats)


assert set(HEAD_KINDS) == set(KINDS)
