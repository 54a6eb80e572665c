from fusion3d.cli import main

raise SystemExit(main())
