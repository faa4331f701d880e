from more4d.cli import main

raise SystemExit(main())
