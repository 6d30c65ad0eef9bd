"""`python -m sessionctl`: the sessionctl command line."""

from sessionctl.cli import main

raise SystemExit(main())
