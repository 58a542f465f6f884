"""`torchrun --nproc_per_node N -m m3core.train --config FILE` (or `python -m m3core.train`): `m3 train`."""

import sys

from m3core.cli import main_for

if __name__ == "__main__":
    sys.exit(main_for("train"))
