"""Faces and the age model: what the till and the training pipeline share (detection, alignment, quality gate, TFLite runtime)."""
