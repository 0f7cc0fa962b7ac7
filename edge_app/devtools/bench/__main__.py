"""`python -m edge_app.devtools.bench --worker ...`: the benchmark's pinned worker processes."""

from edge_app.devtools.bench.throughput import worker_main

raise SystemExit(worker_main())
