"""Training machinery shared by the scripts in train/: config, accelerate run loop, data stream, flow matching,
records."""
