"""Training: MAE pretraining and supervised image -> LMX (see common.Trainer)."""
