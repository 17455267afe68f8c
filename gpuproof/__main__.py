"""`python -m gpuproof` is the `gpuproof` command."""

import sys

from gpuproof.agent.cli import main

sys.exit(main())
