"""batchrun's version: the one place it is written (pyproject.toml reads it from here).

A module of its own so that no module below the package root has to import the root
(which imports the whole API) to learn it.
"""

__version__ = "0.1.0"
