"""Evaluation metrics for predicted systems.

- `acai_omr.metrics.tedn`: TEDn (spec §4): `tedn`, `tedn_lmx`, `prepare_gold`,
  `corpus_tedn`, `well_formedness`, `TednResult`.
- `acai_omr.metrics.ser`: SER and SERnotuplets (spec §4.5): `token_edit_distance`,
  `ser`, `corpus_ser`.
- `acai_omr.metrics.zhang_shasha`: the compiled ordered tree edit distance under TEDn.
- `acai_omr.metrics.cli`: `acai-omr eval score`.

Submodules are not imported here, so importing the package stays cheap (numba
loads only when a metric module is imported).
"""
