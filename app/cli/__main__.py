"""``python -m app.cli``: the ``timer-service`` command."""

from app.cli import main

main()
