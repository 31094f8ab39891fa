from cellbox.cli import main

raise SystemExit(main())
