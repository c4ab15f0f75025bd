"""Foresight's hot-swappable strategy modules.

Each module here (except the helper ``indicators``) is one strategy: it defines
``Params``, ``warmup(params)``, ``STATE_SCHEMA`` and ``evaluate(ctx)`` and imports
only ``kernel.strategy_api``, the standard library, numpy, and its siblings through
relative imports. The kernel loads every generation of this folder as its own
synthetic package, so this file must stay free of code.
"""
