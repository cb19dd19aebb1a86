from lsbench.cli import main

raise SystemExit(main())
