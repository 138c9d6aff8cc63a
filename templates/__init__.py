"""Jinja2 templates of the standalone training script that `ftr compile` writes."""
