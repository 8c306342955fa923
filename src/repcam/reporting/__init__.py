"""What a finished run shows: figures, the run's figures, tables, the paper's Table 4/5 layouts, the HTML report and
its headless browser."""
