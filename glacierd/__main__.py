from glacierd.cli import main

raise SystemExit(main())
