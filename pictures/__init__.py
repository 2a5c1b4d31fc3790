"""Pictures: the paper's Fig. 4 / Fig. 1 for a model and a clip, and line plots, as PNG / GIF / MP4."""
