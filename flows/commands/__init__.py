"""Sub-commands `flows` contributes to the `m3` front door (entry points in pyproject)."""
