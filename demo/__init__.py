"""The embedded CPU demo: generated videos of a moving shape (`synthetic`) and the study of when the sampler
learns where the motion is (`python -m demo.study`)."""
