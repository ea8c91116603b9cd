"""Training, each phase a command (`acai-omr train ...`).

- `common`: the `Trainer` loop every phase shares (schedule, time limit, checkpoints, resume, DDP).
- `mae`: masked-autoencoder pretraining of the encoder.
- `supervised`: image -> LMX, teacher forcing then scheduled sampling, with the auxiliary losses.
- `grpo`, `reward`, `grpo_cli`: reinforcement with a TEDn-based reward.
- `export`: checkpoints -> weights folders (one, or the mean of several).
- `diagnose`: `acai-omr diagnose image-use` (does a model read the image?).
"""
