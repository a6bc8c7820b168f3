from lrstudy.cli import main

raise SystemExit(main())
