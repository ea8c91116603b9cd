"""Systems -> tokens -> MusicXML, for the CLI, the web app and the workers.

- `decode`: greedy / beam decoding with the LMX grammar (`grammar`) and the header reader.
- `batch`: crops -> batched decoding of their measure runs -> per-system results; `assemble`:
  per-system parts -> one coherent score; `confidence`: how far to trust a system.
- `jobs`: what a web job is and the states it moves through; `pipeline`: running jobs in this
  process (`LocalJobRunner`); `queue`, `worker_cli`: through Redis on worker processes.
- `cli`: `acai-omr transcribe`; `evaluate`: `acai-omr eval model`; `diagnose`:
  `acai-omr diagnose pitch-errors|confidence`.
"""
