"""The experiments: the source side (pre-training, SWAG, source quality, loss geometry) and the downstream runs, grids, tuning and studies."""
