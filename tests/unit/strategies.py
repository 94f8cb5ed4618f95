"""Hypothesis strategies shared by the core unit tests (test_core_*.py)."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from worker.limiter import Rate

# JSON values that can appear where an id is expected: strings (valid or not) and every
# other JSON type. Integers stay within 64 bits so the body stays parseable JSON.
DATOCMS_ID_ALPHABET = "ABCabcXYZxyz0189_-"
valid_datocms_ids = st.text(alphabet=DATOCMS_ID_ALPHABET, min_size=1, max_size=8)
awkward_strings = st.sampled_from(
    ["", "a/b", "/", "a b", "a,b", "tab\there", "nl\n", "del\x7f", "é", "x" * 65, "ok", "1"]
)
id_strings = st.one_of(valid_datocms_ids, awkward_strings, st.text(max_size=6))
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
)
json_ids: st.SearchStrategy[Any] = st.one_of(
    id_strings,
    json_scalars,
    st.lists(json_scalars, max_size=3),
    st.dictionaries(st.text(max_size=3), json_scalars, max_size=2),
)

rates = st.builds(
    Rate,
    requests=st.integers(min_value=1, max_value=12),
    seconds=st.sampled_from([0.1, 0.5, 1.0, 3.0, 10.0]) | st.floats(0.01, 20.0),
)
margins = st.sampled_from([0.0, 0.05, 0.25]) | st.floats(0.0, 2.0)
