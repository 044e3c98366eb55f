"""``python -m vault`` is ``dvault``."""

from vault.cli.main import main

raise SystemExit(main())
