"""Hypothesis strategies for arrays of features and class ids, shared by
the property-based tests of the host-side checks (test_backend) and of the
network's as_input/as_target (test_network)."""

import numpy as np
from helpers import INF, NAN
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

SMALL = settings(max_examples=50, deadline=None)
dims = st.integers(1, 6)
finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False, width=32)
not_finite = st.sampled_from([NAN, INF, -INF])


@st.composite
def features(draw, dtype=np.float64):
    shape = draw(st.tuples(dims, dims))
    if np.issubdtype(dtype, np.integer):
        return draw(hnp.arrays(dtype, shape, elements=st.integers(-100, 100)))
    return draw(hnp.arrays(dtype, shape, elements=finite))


@st.composite
def class_ids(draw):
    k = draw(st.integers(1, 6))
    ids = draw(hnp.arrays(np.int64, st.integers(1, 8), elements=st.integers(0, k - 1)))
    return ids, k
