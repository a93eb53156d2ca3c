import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    // BPF and end-to-end tests share the kernel and loopback: run files one at a time.
    fileParallelism: false,
    testTimeout: 120_000,
    hookTimeout: 120_000,
    // The fuzz targets check that memory returns to its level after a run: they need a real GC.
    execArgv: ['--expose-gc'],
  },
});
