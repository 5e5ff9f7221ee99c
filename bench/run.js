// Benchmarks are their own issue and not written yet: say so instead of printing made-up figures.
process.stderr.write('npm run bench: benchmarks are not implemented yet (see the benchmarks issue)\n');
process.exit(1);
