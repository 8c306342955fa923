"""Selection methods beyond the built-in ones of :mod:`repcam.method.methods`, one module each.

Every module in this folder is imported when :mod:`repcam.method` is, so a module that decorates a function with
:func:`~repcam.method.methods.register_selection` is a new ``selection.methods`` value, a new table row family and a
new CLI choice without an edit anywhere else (the way timm's ``register_model`` makes a model file its own entry).
"""

import importlib
import pkgutil

for _module in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    importlib.import_module(f"{__name__}.{_module.name}")
