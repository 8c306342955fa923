"""The stages of a run, one module each, each reading its own config section from the run context
(:class:`repcam.context.RunContext`); :mod:`repcam.run` composes them into the recipe.

- :mod:`~repcam.stages.multiclass`: the multi-class model, B, and the baseline's budget (``multiclass``);
- :mod:`~repcam.stages.selection`: the representative classes (``selection``);
- :mod:`~repcam.stages.pairs`: the binary pair models (``pairs``);
- :mod:`~repcam.stages.maps`: the stored maps of an evaluation split (``evaluation``);
- :mod:`~repcam.stages.evaluation`: scores and tables of a split (``evaluation``).
"""
