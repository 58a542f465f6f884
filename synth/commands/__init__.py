"""`m3 synth` and `m3 llm`: the sub-commands synth contributes to the `m3` front door (entry points in pyproject)."""
