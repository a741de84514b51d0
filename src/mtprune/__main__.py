"""``python -m mtprune`` (what ``accelerate launch -m mtprune`` runs)."""
import sys

from .cli.main import main

sys.exit(main())
