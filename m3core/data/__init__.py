"""The data layer: sources → cleaning → language ID → dedup → DuckDB warehouse → training/eval exports.

Import the concept you need from its module (`m3core.data.warehouse`, `m3core.data.sources.gettext`, ...);
this package imports nothing heavy on its own.
"""
