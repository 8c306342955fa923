"""A resumable run: the recipe, the context every stage shares, the stages, work units and executors, map extraction,
the evaluation grid, preflight checks and several seeds."""
