// The verifier's margin: each program of the agent's object, loaded alone as the agent configures it,
// must verify well under the verifier's limit of 1M processed instructions a program. Before
// classify() was a global function each emitting program took ~937k, 6% under the limit: a small
// edit could have kept the agent from loading. Today they take ~50k.
import { describe, expect, it } from 'vitest';
import { BpfObject } from '../../src/bpf/libbpf.js';
import { BPF_OBJECT_PATH } from '../../src/capture/paths.js';
import { configure } from '../../src/capture/socket-capture.js';
import { kernelSuiteSkipReason } from '../helpers/agent.js';

/** A fifth of the limit: room for growth, and a cliff (a path explosion) still shows. */
const MAX_INSNS_PROCESSED = 200_000;

const suite = kernelSuiteSkipReason('verifier margin tests') ? describe.skip : describe;

suite('verifier margin', () => {
  it(`every program of build/hepbpf.bpf.o verifies in under ${MAX_INSNS_PROCESSED} processed instructions`, () => {
    const names = BpfObject.open(BPF_OBJECT_PATH);
    const programs = names.programNames();
    names.close();
    expect(programs.length).toBeGreaterThan(0);
    const processed: Record<string, number> = {};
    for (const prog of programs) {
      const obj = BpfObject.open(BPF_OBJECT_PATH);
      try {
        configure(obj, true); // the port filter on: its lookup is verified too
        processed[prog] = obj.loadAlone(prog).insnsProcessed;
      } finally {
        obj.close();
      }
    }
    const over = Object.entries(processed).filter(([, n]) => n >= MAX_INSNS_PROCESSED);
    expect(over, `instructions processed per program: ${JSON.stringify(processed)}`).toEqual([]);
  });
});
