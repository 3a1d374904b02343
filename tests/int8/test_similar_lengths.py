"""The int8 variant's batches: every row once, in batches of similar token counts that keep every core busy."""

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from sentiment_flow.int8.model import PADDING_TOLERANCE, similar_lengths


@given(
    lengths=st.lists(st.integers(1, 128), max_size=80),
    per_core=st.integers(1, 40),
    batch_size=st.integers(1, 40),
)
def test_every_row_once_in_short_batches_padded_within_the_tolerance(lengths, per_core, batch_size):
    batches = similar_lengths(lengths, per_core, batch_size)
    assert sorted(np.concatenate(batches).tolist() if batches else []) == list(range(len(lengths)))
    most = min(batch_size, per_core)
    widths = [np.asarray(lengths)[batch] for batch in batches]
    for width, following in zip(widths, widths[1:] + [None]):
        assert 1 <= len(width) <= most
        assert len(width) == 1 or len(width) * width.max() <= (1 + PADDING_TOLERANCE) * width.sum()
        if following is not None:  # cut only where the next row would break a limit
            assert following.min() >= width.max()
            joined = np.append(width, following.min())
            assert len(joined) > most or len(joined) * joined.max() > (1 + PADDING_TOLERANCE) * joined.sum()


def test_equal_lengths_split_over_the_cores_and_mixed_ones_by_length():
    assert [len(b) for b in similar_lengths([10] * 7, per_core=3, batch_size=32)] == [3, 3, 1]
    batches = similar_lengths([40, 8, 41, 8, 39, 9], per_core=6, batch_size=16)
    assert [sorted(b.tolist()) for b in batches] == [[1, 3, 5], [0, 2, 4]]  # short texts apart from long ones
