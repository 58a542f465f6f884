"""Sub-commands of `m3` (see `m3core.cli`)."""
