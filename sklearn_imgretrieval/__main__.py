"""``python -m sklearn_imgretrieval`` runs the ``imgretrieval`` command."""

from .cli import main

raise SystemExit(main())
