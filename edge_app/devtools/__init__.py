"""Developer tools: the self-contained demo, photo commands, the benchmark and the simulation kit they and the tests share."""
