"""Weight initialisers: the standard deviation of the normal draw for a
``(n_in, n_out)`` weight matrix."""

from __future__ import annotations

import math


def glorot_std(n_in, n_out):
    """Glorot (Xavier) normal: variance ``2 / (n_in + n_out)``, so the standard
    deviation is its square root (the study passed the variance as the std)."""
    return math.sqrt(2.0 / (n_in + n_out))


def he_std(n_in, n_out):
    """He normal, for ReLU-family activations: variance ``2 / n_in``."""
    return math.sqrt(2.0 / n_in)


def standard_std(n_in, n_out):
    """Plain standard normal, as in the study's first steps."""
    return 1.0


INITIALIZERS = {"glorot": glorot_std, "he": he_std, "standard": standard_std}
