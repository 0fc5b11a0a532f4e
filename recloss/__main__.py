"""``python -m recloss`` = the ``recloss`` command."""

from recloss.cli import main

if __name__ == "__main__":   # importing the module (documentation tools do) runs nothing
    raise SystemExit(main())
