/**
 * `npm run bench -- --only=pipeline`: what the pipeline costs per message, stage by stage, with no
 * kernel, no root and no socket. In the manner of pino's benchmarks, each stage runs alone in a
 * tight loop over its real inputs (recorded by bench/traffic.ts and passed through the stages
 * before it), then the whole pipeline (src/agent.ts over a ReplaySource) up to the HEP encoder's
 * output. Then hostile inputs, in ns per byte.
 */
import { pino } from 'pino';
import { GCProfiler, getHeapStatistics } from 'node:v8';
import { Agent } from '../src/agent.js';
import { decodeBatch, type CaptureRecord } from '../src/capture/record.js';
import { ReplaySource } from '../src/capture/replay.js';
import { StreamAssembler } from '../src/stream/assembler.js';
import { LocalDedup } from '../src/stream/dedup.js';
import { SipFramer } from '../src/stream/sip-framer.js';
import { DiameterFramer } from '../src/stream/diameter-framer.js';
import type { Message, ReceiverCopy } from '../src/stream/message.js';
import { parseSip, type SipInfo } from '../src/protocols/sip.js';
import { parseDiameter, type DiameterInfo } from '../src/protocols/diameter.js';
import { correlationRegex, Correlator, REGEX_SCAN_BYTES, type OperatorKey } from '../src/enrich/correlation.js';
import { redactDiameter, redactSip } from '../src/enrich/redact.js';
import { Selection, type Selectable, type SelectionOptions } from '../src/enrich/selection.js';
import { Attribution } from '../src/enrich/attribution.js';
import type { ContainerResolver } from '../src/enrich/containers.js';
import type { CaptureEvent } from '../src/enrich/event.js';
import { HepForwarder } from '../src/output/hep-forwarder.js';
import { NodeNameTemplate } from '../src/output/node-name.js';
import { diameterMessage, diameterResyncChain } from '../test/helpers/diameter.js';
import { memoryContainers, memorySender, namesKnown, PCSCF, Recorder, record, SCENARIOS, SCSCF, type Scenario } from './traffic.js';
import { median } from './median.js';

export interface Report {
  say(line?: string): void;
  table(rows: string[][]): void;
}

/** Forwarded messages recorded per scenario: enough for a pass of a few ms, small enough to keep every stage's inputs. */
const MESSAGES_PER_SCENARIO = 4000;
const PASSES = 7;
/** Passes run before measuring, so that the stage runs optimised code. */
const WARMUP_PASSES = 3;
/** Sizes every hostile case runs at, up to the 64 KiB a message or header may have: linear code costs the same ns per byte at each. */
const HOSTILE_SIZES = [4096, 16384, 65536];

interface Figure {
  nsPerMessage: number;
  /** JS heap allocated per message: heap growth plus what the GCs during the pass freed. */
  heapBytesPerMessage: number;
  gcsPer100kMessages: number;
  passesNs: number[];
}


/**
 * Times `pass` over `messages` messages: PASSES passes, each on a fresh state from
 * `setup` (untimed), after WARMUP_PASSES. Reports the median pass, and the heap allocated and GCs over all passes.
 */
function measure<T>(messages: number, setup: () => T, pass: (state: T) => void): Figure {
  for (let i = 0; i < WARMUP_PASSES; i++) pass(setup());
  const passesNs: number[] = [];
  let allocated = 0;
  let gcs = 0;
  for (let i = 0; i < PASSES; i++) {
    const state = setup();
    const profiler = new GCProfiler();
    profiler.start();
    const heapBefore = getHeapStatistics().used_heap_size;
    const t0 = process.hrtime.bigint();
    pass(state);
    const t1 = process.hrtime.bigint();
    const heapAfter = getHeapStatistics().used_heap_size;
    const { statistics } = profiler.stop();
    passesNs.push(Number(t1 - t0));
    gcs += statistics.length;
    allocated += heapAfter - heapBefore + statistics.reduce((sum, s) => sum + s.beforeGC.heapStatistics.usedHeapSize - s.afterGC.heapStatistics.usedHeapSize, 0);
  }
  return {
    nsPerMessage: median(passesNs) / messages,
    heapBytesPerMessage: allocated / (PASSES * messages),
    gcsPer100kMessages: (gcs * 100_000) / (PASSES * messages),
    passesNs,
  };
}

/** A message with its payload copied out of the batch, as a stage after the framer may keep it. */
const kept = (m: Message): Message => ({ ...m, payload: Buffer.from(m.payload) });

interface Parsed {
  message: Message;
  sip?: SipInfo;
  diameter?: DiameterInfo;
}

/** Every copy the assembler hands on, in order: messages, and header-only receiver's copies. */
type Copy = Message | ReceiverCopy;
const isMessage = (c: Copy): c is Message => 'payload' in c;

/** What one stage hands the next, recorded once (untimed) from the stages themselves. */
function stageInputs(batches: Buffer[], resolver: ContainerResolver) {
  const copies: Copy[] = [];
  const assembler = new StreamAssembler((m) => copies.push(kept(m)), (c) => copies.push({ ...c }));
  for (const b of batches) decodeBatch(b, (r) => assembler.push(r));
  const dedup = new LocalDedup();
  const unique: Message[] = [];
  for (const c of copies) {
    if (!isMessage(c)) dedup.pairReceiverCopy(c);
    else if (dedup.accept(c)) unique.push(c);
  }
  const parsed: Parsed[] = unique.map((message) =>
    message.proto === 'diameter' ? { message, diameter: parseDiameter(message.payload)! } : { message, sip: parseSip(message.payload)! },
  );
  const events: CaptureEvent[] = [];
  attribute(new Attribution(resolver, (ev) => events.push({ ...ev, payload: Buffer.from(ev.payload) })), attributionOps(copies));
  return { copies, parsed, events };
}

interface AttributionOp {
  learn: Copy;
  /** The copy seen first, when `learn` is its other side (dedup paired them). */
  counterpart?: Message;
  submit?: CaptureEvent;
}

/** What the agent asks of Attribution for each copy, on fresh message objects (attribution writes the peer into them). */
function attributionOps(copies: Copy[]): AttributionOp[] {
  const dedup = new LocalDedup();
  const ops: AttributionOp[] = [];
  for (const original of copies) {
    if (!isMessage(original)) {
      ops.push({ learn: original, counterpart: dedup.pairReceiverCopy(original) });
      continue;
    }
    const m = { ...original };
    if (dedup.accept(m)) ops.push({ learn: m, submit: { message: m, payload: m.payload, summary: '', wallUs: 0, correlationId: '', container: null, peerContainer: null } });
    else ops.push({ learn: m, counterpart: dedup.matched! });
  }
  return ops;
}

/** As the agent does: every copy names its local side; the first is submitted, the other names its peer. */
function attribute(a: Attribution, ops: AttributionOp[]): void {
  for (const op of ops) {
    a.learn(op.learn);
    if (op.submit) a.submit(op.submit);
    else if (op.counterpart) a.counterpart(op.counterpart, op.learn);
  }
  a.flush();
}

const forwarder = () => new HepForwarder([memorySender()], { captureId: 2001 }, { nodeName: new NodeNameTemplate('{project}/{container}') });

/**
 * Ten filters, each looked at for every message, that keep every message of the recorded traffic
 * (all on 127.0.0.1): the cost of filtering without the saving of forwarding less. Dialog mode, so
 * that every message also looks up and refreshes its dialog's entry.
 */
const TEN_FILTERS: SelectionOptions = {
  excludeMethod: ['OPTIONS', 'NOTIFY'],
  excludeUser: ['monitor*', 'test-?????'],
  excludeCallId: ['probe-*'],
  excludeAddress: ['192.0.2.0/24', '2001:db8::/32'],
  excludePort: [9],
  address: ['127.0.0.0/8', '::1'],
  selectionMode: 'dialog',
};

/** The composition root over a ReplaySource, forwarding to a HEP sender without a socket; started (synchronously). */
function replayAgent(resolver: ContainerResolver, selection?: SelectionOptions) {
  const source = new ReplaySource();
  const hep = forwarder();
  const agent = new Agent({ source, log: pino({ level: 'silent' }), containers: resolver, selection: selection && new Selection(selection), sink: (ev) => hep.forward(ev) });
  void agent.start();
  return { source, agent };
}

/** An operator's key the recorded traffic has: the INVITE's User-Agent (its responses and the Rx tied to it inherit it). */
const KEY_HEADER: OperatorKey = { header: 'User-Agent' };
const KEY_REGEX: OperatorKey = { regex: correlationRegex('User-Agent: *([^\\r\\n]+)') };

const STAGES = [
  'decode',
  'stream/framing',
  'dedup',
  'SIP/Diameter parse',
  'correlation',
  'correlation, --correlation-header',
  'correlation, --correlation-regex',
  'redaction',
  'attribution',
  'HEP encode',
  'whole pipeline',
  'selection, 10 filters',
  'selection, 10 filters, --correlation-header',
  'whole pipeline, 10 filters',
] as const;
type Stage = (typeof STAGES)[number];

async function scenarioFigures(name: string, rec: Recorder): Promise<Record<Stage, Figure>> {
  const batches = rec.batches();
  const n = rec.messages;
  const resolver = memoryContainers();
  await namesKnown(resolver);
  const { copies, parsed, events } = stageInputs(batches, resolver);
  if (events.length !== n) throw new Error(`${name}: the stages forwarded ${events.length} of ${n} recorded messages`);
  const noop = (r: CaptureRecord) => r.dataLen;
  const correlate = (c: Correlator) => {
    for (const p of parsed) if (p.diameter) c.diameter(p.message, p.diameter);
    else c.sip(p.message, p.sip!);
  };
  // What selection is handed: with an operator's key, the keyed dialogs lead it to their Call-IDs.
  const selectablesOf = (correlator: Correlator): Selectable[] => parsed.map(({ message: m, sip, diameter }) => ({
    src: m.src, dst: m.dst, payload: m.payload, sip, correlationId: sip ? correlator.sip(m, sip) : correlator.diameter(m, diameter!).id, nowMs: Number(m.tsNs / 1_000_000n),
  }));
  const selectables = selectablesOf(new Correlator());
  const keyedSelectables = selectablesOf(new Correlator(KEY_HEADER));
  for (const s of [selectables, keyedSelectables]) {
    const selection = new Selection(TEN_FILTERS);
    if (s.some((m) => !selection.select(m))) throw new Error(`${name}: the bench's filters must keep every message`);
  }
  const decode = measure(n, () => undefined, () => {
    for (const b of batches) decodeBatch(b, noop);
  });
  const decodeAndStream = measure(n, () => new StreamAssembler(() => {}), (asm) => {
    for (const b of batches) decodeBatch(b, (r) => asm.push(r));
  });
  const figures: Record<Stage, Figure> = {
    decode,
    // Framing needs decoded records, which live only during decode's callback: decode is timed with it and taken off.
    'stream/framing': { ...decodeAndStream, nsPerMessage: decodeAndStream.nsPerMessage - decode.nsPerMessage, heapBytesPerMessage: decodeAndStream.heapBytesPerMessage - decode.heapBytesPerMessage },
    dedup: measure(n, () => new LocalDedup(), (d) => {
      for (const c of copies) if (isMessage(c)) d.accept(c);
      else d.pairReceiverCopy(c);
    }),
    'SIP/Diameter parse': measure(n, () => undefined, () => {
      for (const { message: m } of parsed) if (m.proto === 'diameter') parseDiameter(m.payload);
      else parseSip(m.payload);
    }),
    correlation: measure(n, () => new Correlator(), correlate),
    'correlation, --correlation-header': measure(n, () => new Correlator(KEY_HEADER), correlate),
    'correlation, --correlation-regex': measure(n, () => new Correlator(KEY_REGEX), correlate),
    redaction: measure(n, () => undefined, () => {
      for (const p of parsed) if (p.diameter) redactDiameter(p.message.payload, p.diameter.avps);
      else redactSip(p.message.payload);
    }),
    attribution: measure(n, () => ({ a: new Attribution(resolver, () => {}), ops: attributionOps(copies) }), ({ a, ops }) => attribute(a, ops)),
    'HEP encode': measure(n, forwarder, (f) => {
      for (const ev of events) f.forward(ev);
    }),
    'whole pipeline': measure(n, () => replayAgent(resolver), ({ source, agent }) => {
      for (const b of batches) source.replay(b);
      void agent.stop();
    }),
    'selection, 10 filters': measure(n, () => new Selection(TEN_FILTERS), (s) => {
      for (const m of selectables) s.select(m);
    }),
    'selection, 10 filters, --correlation-header': measure(n, () => new Selection(TEN_FILTERS), (s) => {
      for (const m of keyedSelectables) s.select(m);
    }),
    'whole pipeline, 10 filters': measure(n, () => replayAgent(resolver, TEN_FILTERS), ({ source, agent }) => {
      for (const b of batches) source.replay(b);
      void agent.stop();
    }),
  };
  return figures;
}

interface Hostile {
  sizes: number[];
  nsPerByte: number[];
  /** The stage threw on this size, so the larger ones were not run. */
  stopped?: string;
}

/**
 * Runs `run` on inputs of each of HOSTILE_SIZES (`build` says how many bytes of hostile message
 * each holds), each size repeatedly for at least 50 ms.
 */
function hostile<T>(build: (size: number) => { input: T; bytes: number }, run: (input: T) => void): Hostile {
  const out: Hostile = { sizes: [], nsPerByte: [] };
  run(build(HOSTILE_SIZES[0]).input); // warm-up: the first size is not timed with the compiler
  for (const size of HOSTILE_SIZES) {
    const { input, bytes } = build(size);
    let runs = 0;
    const t0 = process.hrtime.bigint();
    try {
      do {
        run(input);
        runs++;
      } while (Number(process.hrtime.bigint() - t0) < 50e6);
    } catch (err) {
      out.stopped = `${bytes} B: threw "${(err as Error).message}"`;
      break;
    }
    const ns = Number(process.hrtime.bigint() - t0) / runs;
    out.sizes.push(bytes);
    out.nsPerByte.push(ns / bytes);
  }
  return out;
}

const framerStats = () => ({ messages: 0, discardedBytes: 0, truncatedMessages: 0 });
const whole = (input: Buffer) => ({ input, bytes: input.length });
const oneBytePerWrite = (framer: { push(b: Buffer): void }, input: Buffer) => {
  for (let i = 0; i < input.length; i++) framer.push(input.subarray(i, i + 1));
};
const sipHead = 'INVITE sip:bob@ims.test SIP/2.0\r\nCall-ID: hostile\r\nCSeq: 1 INVITE\r\n';

function hostileFigures(resolver: ContainerResolver): Record<string, Hostile> {
  const message = (payload: Buffer): Message => ({
    tsNs: 1n, proto: 'sip', transport: 'udp', family: 4, src: { ip: '127.0.0.1', port: 5070 }, dst: { ip: '127.0.0.1', port: 5060 }, pid: 1, tid: 1, comm: 'x',
    cgroupId: 0n, netns: 0, sockId: 0n, direction: 'egress', payload, size: payload.length, truncated: false, peerUnknown: false, connectionUnknown: false,
  });
  return {
    'redaction: SIP body of `a=crypto:inline:A` with no line feed': hostile((size) => {
      const body = 'a=crypto:inline:A'.repeat(Math.floor(size / 17));
      return whole(Buffer.from(`${sipHead}Content-Length: ${body.length}\r\n\r\n${body}`));
    }, (input) => redactSip(input)),
    'SIP framer: header of colon-less lines, then a body, one byte per write': hostile((size) => {
      // up to the 64 KiB a header may have
      const lines = 'call it a header without a colon, as long as a line can be\r\n'.repeat(Math.floor((size - 256) / 60));
      return whole(Buffer.from(`${sipHead}${lines}Content-Length: 64\r\n\r\n${'b'.repeat(64)}`));
    }, (input) => oneBytePerWrite(new SipFramer(framerStats(), () => {}), input)),
    'SIP framer: garbage of start-line-like pieces with no LF, one byte per write': hostile(
      (size) => whole(Buffer.from('INVITE sip:b@x SIP/2.1 SIP/2.0 '.repeat(Math.floor(size / 31)))),
      (input) => oneBytePerWrite(new SipFramer(framerStats(), () => {}), input),
    ),
    'Diameter framer: a valid message, one byte per write': hostile((size) =>
      // AVPs of 64 bytes: as many as fit
      whole(diameterMessage({ request: true, command: 272, app: 4, hopByHop: 1, endToEnd: 1, avps: Array.from({ length: Math.floor((size - 20) / 64) }, () => ({ code: 873, value: Buffer.alloc(56, 0x61) })) })),
    (input) => oneBytePerWrite(new DiameterFramer(framerStats(), { malformed: 0 }, () => {}), input)),
    'Diameter framer: 1 MiB header claims whose AVP chains all run to one bad AVP at the end, one write': hostile(
      (size) => whole(diameterResyncChain(size)),
      (input) => new DiameterFramer(framerStats(), { malformed: 0 }, () => {}).push(input),
    ),
    'correlation: P-Charging-Vector line with no icid-value': hostile((size) =>
      whole(Buffer.from(`${sipHead}${'P-Charging-Vector: '.repeat(Math.floor(size / 19))}\r\nContent-Length: 17\r\n\r\nicid-value=nobody`)),
    (input) => new Correlator().sip(message(input), parseSip(input)!)),
    // Each run of a before a ! makes (a+)+$ backtrack exponentially; the regex sees the first REGEX_SCAN_BYTES only.
    [`correlation: --correlation-regex (a+)+$ over a header of (a{200}!)*, ns per byte of the first ${REGEX_SCAN_BYTES} B`]: hostile((size) => ({
      input: Buffer.from(`${sipHead}X-Pad: ${`${'a'.repeat(200)}!`.repeat(Math.floor((size - 80) / 201))}\r\nContent-Length: 0\r\n\r\n`),
      bytes: Math.min(size, REGEX_SCAN_BYTES),
    }),
    (input) => new Correlator({ regex: correlationRegex('(a+)+$') }).sip(message(input), parseSip(input)!)),
    'whole pipeline: Diameter CCR whose Session-Id is 0xff bytes': hostile((size) => {
      const ccr = diameterMessage({ request: true, proxiable: true, command: 272, app: 4, hopByHop: 9, endToEnd: 9, avps: [{ code: 263, value: Buffer.alloc(size - 64, 0xff) }, { code: 416, value: 1 }] });
      const rec = new Recorder();
      rec.exchange({ from: PCSCF, to: SCSCF, fromPort: 40001, toPort: 3868, ipProto: 6, l7: 2, writes: [ccr], messages: 1 });
      // both copies, the sender's and the receiver's, as the kernel records them; ns per byte of the message
      return { input: rec.batches()[0], bytes: ccr.length };
    }, (batch) => {
      const { source, agent } = replayAgent(resolver);
      source.replay(batch);
      void agent.stop();
    }),
  };
}

export async function pipelineBench(out: Report): Promise<Record<string, unknown>> {
  out.say('\n(pipeline) ns per forwarded message per stage, recorded records, no kernel and no socket');
  out.say(`    (each message seen on both sides, two records; median of ${PASSES} passes over ${MESSAGES_PER_SCENARIO} messages per scenario,`);
  out.say('     between two containers whose names are known; stream/framing is timed with decode and decode taken off)');
  const perMessage: Record<Scenario, number> = { 'SIP/UDP': 2, 'SIP/UDP local': 2, 'SIP/TCP': 4, 'SIP/TCP local': 4, 'SIP/TLS': 4, 'SIP/WS': 2, Diameter: 3 };
  const columns: Record<string, Record<Stage, Figure>> = {};
  const mixed = new Recorder();
  // SIP/UDP local and SIP/TCP local (the receiver's copies header only, as the kernel sends them) have columns of their own, outside the mix.
  const scenarios: Scenario[] = ['SIP/UDP', 'SIP/UDP local', 'SIP/TCP', 'SIP/TCP local', 'SIP/TLS', 'SIP/WS', 'Diameter'];
  for (const s of scenarios) {
    const rec = new Recorder();
    record(rec, s, Math.round(MESSAGES_PER_SCENARIO / perMessage[s]));
    if (SCENARIOS.includes(s)) record(mixed, s, Math.round(MESSAGES_PER_SCENARIO / perMessage[s] / SCENARIOS.length));
    columns[s] = await scenarioFigures(s, rec);
  }
  columns['mix'] = await scenarioFigures('mix', mixed);
  const names = Object.keys(columns);
  out.table([['stage', ...names], ...STAGES.map((st) => [st, ...names.map((c) => `${columns[c][st].nsPerMessage.toFixed(0)} ns`)])]);
  out.say('\n    JS heap allocated per message (GCs per 100k messages)');
  out.table([
    ['stage', ...names],
    ...STAGES.map((st) => [st, ...names.map((c) => `${Math.max(0, columns[c][st].heapBytesPerMessage).toFixed(0)} B (${columns[c][st].gcsPer100kMessages.toFixed(0)})`)]),
  ]);

  out.say('\n(pipeline) hostile inputs, ns per byte by input size (linear work: the same at every size)');
  const resolver = memoryContainers();
  await namesKnown(resolver);
  const hostileCases = hostileFigures(resolver);
  const rows = [['case', 'size', 'ns/byte']];
  for (const [name, h] of Object.entries(hostileCases)) {
    h.sizes.forEach((size, i) => rows.push([i === 0 ? name : '', `${size} B`, h.nsPerByte[i].toFixed(1)]));
    if (h.stopped) rows.push([h.sizes.length ? '' : name, '-', h.stopped]);
  }
  out.table(rows);
  return { perStage: columns, hostile: hostileCases };
}
