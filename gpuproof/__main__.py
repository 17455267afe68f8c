"""`python -m gpuproof` is the `gpuproof` command."""

import sys

from gpuproof.cli import main

sys.exit(main())
