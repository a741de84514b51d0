"""``python -m mtprune`` (what ``accelerate launch -m mtprune`` runs)."""
import sys

from .cli import main

sys.exit(main())
