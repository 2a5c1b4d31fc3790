"""Command-line tools around the recipes, each run from the repository root as `python -m tools.NAME`."""
