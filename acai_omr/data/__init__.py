"""Data engine: corpora -> rendered, degraded, labelled system images."""
