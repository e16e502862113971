"""Experiment CLIs: each file is a tyro CLI with named presets that wires data -> model -> train loop."""
