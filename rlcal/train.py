"""`python -m rlcal.train` / `accelerate launch -m rlcal.train --config RECIPE.yaml [--key value ...]`.

The launcher-facing name of `rlcal train`: accelerate and SLURM start a module, and this is the stable one. All the
work is in `rlcal.training`.
"""

import sys

from rlcal.training.train import main

if __name__ == "__main__":
    sys.exit(main())
