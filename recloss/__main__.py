"""``python -m recloss`` = the ``recloss`` command."""

from recloss.cli import main

raise SystemExit(main())
