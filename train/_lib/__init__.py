"""Shared machinery of the training scripts in train/ (config, accelerate run loop, data stream, records)."""
