"""The networks around model.py's TextureNet: backbones, checkpoints, training, evaluation, the feed-forward generator."""
