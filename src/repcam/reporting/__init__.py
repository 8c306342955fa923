"""What a finished run shows: figures, the run's figures, tables, the paper's Table 4/5 layouts, the HTML report and
its headless browser; and :func:`~repcam.reporting.overlay.overlay` (``repcam.overlay``), a map over its image for
user figures. The package imports nothing, so ``repcam.overlay`` stays light."""
