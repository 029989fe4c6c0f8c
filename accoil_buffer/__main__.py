"""``python -m accoil_buffer`` runs the command line."""

from accoil_buffer.cli import main

main()
