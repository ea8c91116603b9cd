"""Data engine: corpora -> rendered, degraded, labelled system images -> the model's tensors.

- `ingest`: reading the shared corpora (MusicXML, **kern) into normalized pieces.
- `verovio_render`, `musescore_render`, `layout`, `pages`: engraving pieces into system images
  (and whole pages, for the detector's benchmark) with their LMX and note positions.
- `build`, `cli`, `stats`, `show_cli`: `acai-omr data build|stats|show`.
- `degrade`: scan and phone-photo looks (one engine, for training and benchmarks).
- `preprocess`: the one path from any image to the model's input tensor (training and serving).
- `measures`: measure crops of training systems and their LMX; `dataset`, `sampler`: the
  training `Dataset` and width-bucketed batches.
"""
