import numpy as np
from hypothesis import given, settings, strategies as st

from charlm.text.batching import LaneLayout

EOD = 2


def make_stream(doc_lengths, rng=None):
    """EOD d d d EOD d d ... EOD with distinct-ish symbol ids >= 3."""
    parts, starts, pos = [], [], 0
    for n in doc_lengths:
        starts.append(pos)
        parts.append([EOD] + [3 + (i % 50) for i in range(n)])
        pos += n + 1
    parts.append([EOD])
    return np.concatenate([np.asarray(p) for p in parts]), np.asarray(starts)


def check_layout(doc_lengths, lanes, bptt, burn_in=0):
    tokens, starts = make_stream(doc_lengths)
    layout = LaneLayout(tokens, starts, lanes, bptt, EOD, burn_in=burn_in)
    seen = np.zeros(len(tokens), dtype=int)
    doc_start_set = set(starts.tolist())
    for chunk in range(layout.chunks_per_epoch):
        b = layout.batch(chunk)
        pos = layout.reads[:, None] + chunk * bptt + np.arange(bptt)[None, :]
        valid = pos < layout.ends[:, None]
        # Targets that are scored are the stream's next symbols; PAD elsewhere.
        scored = b.targets != 0
        np.testing.assert_array_equal(b.targets[scored], tokens[pos[scored] + 1])
        np.testing.assert_array_equal(b.inputs[valid], tokens[pos[valid]])
        # PAD only after a lane's end.
        assert (b.inputs[~valid] == 0).all() and (b.targets[~valid] == 0).all()
        # Resets exactly at document starts and at each lane's first read.
        expect = valid & (np.isin(pos, list(doc_start_set)) | (pos == layout.reads[:, None]))
        np.testing.assert_array_equal(b.reset, expect)
        np.add.at(seen, pos[scored] + 1, 1)
        np.testing.assert_array_equal(np.sort(layout.target_positions(chunk)),
                                      np.sort(pos[scored] + 1))
    # Every target (positions 1..N-1) exactly once per epoch; position 0 is never a target.
    assert seen[0] == 0 and (seen[1:] == 1).all()
    return layout


def test_single_long_document():
    layout = check_layout([10_000], lanes=8, bptt=64)
    assert layout.num_lanes == 8
    assert layout.lengths.max() - layout.lengths.min() <= 1


def test_many_short_documents_pack_and_cuts_snap_to_document_starts():
    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 12, size=500).tolist()
    layout = check_layout(lengths, lanes=16, bptt=32)
    tokens, starts = make_stream(lengths)
    # Every lane begins at a document start (EOD), so lanes read whole documents.
    assert set(layout.starts.tolist()) <= set(starts.tolist())


def test_burn_in_scores_each_target_once():
    layout = check_layout([3000, 50, 2000], lanes=6, bptt=40, burn_in=100)
    assert (layout.reads <= layout.starts).all()
    assert (layout.starts - layout.reads <= 100).all()


def test_more_lanes_than_symbols():
    layout = check_layout([5], lanes=32, bptt=4)
    assert layout.num_lanes == 6  # one lane per input symbol at most


def test_select_partitions_lanes():
    tokens, starts = make_stream([400, 300, 500])
    layout = LaneLayout(tokens, starts, 6, 16, EOD)
    halves = [layout.select(range(0, 6, 2)), layout.select(range(1, 6, 2))]
    seen = []
    for part in halves:
        for chunk in range(layout.chunks_per_epoch):
            seen += part.target_positions(chunk).tolist()
    assert sorted(seen) == list(range(1, len(tokens)))


@settings(max_examples=60, deadline=None)
@given(doc_lengths=st.lists(st.integers(1, 80), min_size=1, max_size=40),
       lanes=st.integers(1, 12), bptt=st.integers(1, 33), burn_in=st.sampled_from([0, 7]))
def test_layout_invariants_property(doc_lengths, lanes, bptt, burn_in):
    check_layout(doc_lengths, lanes, bptt, burn_in)
