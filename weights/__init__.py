"""Checkpoints in other layouts: the authors' and VideoMAE's released weights read into this project's classes."""
