"""``python -m pervma``."""

from pervma.cli import main

raise SystemExit(main())
