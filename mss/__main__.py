"""``python -m mss`` runs the admin CLI."""

from mss.cli import main

main()
