"""``python -m x2ct.compare outputs/``: the run comparison command (code in ``x2ct.evaluation.comparison``)."""
