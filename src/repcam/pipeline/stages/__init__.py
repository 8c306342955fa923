"""The stages of a run, one module each, each reading its own config section from the run context
(:class:`repcam.pipeline.context.RunContext`); :mod:`repcam.pipeline.run` composes them into the recipe.

- :mod:`~repcam.pipeline.stages.multiclass`: the multi-class model, B, and the baseline's budget (``multiclass``);
- :mod:`~repcam.pipeline.stages.selection`: the representative classes (``selection``);
- :mod:`~repcam.pipeline.stages.pairs`: the binary pair models (``pairs``);
- :mod:`~repcam.pipeline.stages.maps`: the stored maps of an evaluation split (``evaluation``);
- :mod:`~repcam.pipeline.stages.evaluation`: scores and tables of a split (``evaluation``).
"""
