/**
 * `tail --flow`: the messages as a ladder, as sngrep draws a call: one column per endpoint
 * (address:port, with its process or container), one arrow per message with its method or status
 * and the time since the first message. Drawn as messages arrive (as sngrep's call view follows a
 * live call): an endpoint not seen before adds a column (or a name to one), and the header is
 * printed again with it.
 */
import type { TailEventFields } from './tail-protocol.js';
import { containerLabel, epochNs, escapeControl, hostPort } from './tail-record.js';

const COLUMN = 24;
const TIME = 12; // at least COLUMN / 2: the first column's header is centred on its lifeline

/** Microseconds since the epoch of tail's ts. */
const micros = (ts: string): number => Number(epochNs(ts) / 1000n);

/** What the arrow says: a SIP request's method, a response's status, a Diameter command (and result). */
function arrowLabel(ev: TailEventFields): string {
  if (ev.proto === 'sip' && !/^\d{3}\b/.test(ev.summary)) return ev.summary.split(' ')[0];
  return ev.summary.replace(/ \(\d+ ms\)$/, '');
}

/** SGR colour of an arrow: requests cyan, 1xx yellow, 2xx green, other responses red, Diameter magenta (failures red). */
function colourOf(ev: TailEventFields, label: string): number {
  const status = /^(\d)\d\d\b/.exec(label)?.[1];
  if (ev.proto === 'diameter') return / [3-5]\d{3}$/.test(label) ? 31 : 35;
  if (!status) return 36;
  return status === '1' ? 33 : status === '2' ? 32 : 31;
}

const centred = (text: string, width: number) => {
  const t = text.length > width ? text.slice(0, width - 1) + '~' : text;
  const left = Math.floor((width - t.length) / 2);
  return ' '.repeat(left) + t + ' '.repeat(width - t.length - left);
};

/** Colour only on a terminal, and not when NO_COLOR is set to anything but '' (no-color.org). */
export const colourWanted = (tty: boolean, env: NodeJS.ProcessEnv = process.env): boolean => tty && !env.NO_COLOR;

export class FlowLadder {
  private readonly columns = new Map<string, { address: string; name: string }>();
  private startUs: number | undefined;

  constructor(private readonly colour: boolean) {}

  /** The lines to print for one message: the header again when it adds an endpoint, then its arrow. */
  lines(ev: TailEventFields): string[] {
    const out: string[] = [];
    const srcChanged = this.column(ev.src, containerLabel(ev.container) ?? ev.comm);
    const dstChanged = this.column(ev.dst, containerLabel(ev.peerContainer) ?? '');
    if (srcChanged || dstChanged) out.push(...this.header());
    this.startUs ??= micros(ev.ts);
    const keys = [...this.columns.keys()];
    const from = keys.indexOf(hostPort(ev.src));
    const to = keys.indexOf(hostPort(ev.dst));
    const time = `+${((micros(ev.ts) - this.startUs) / 1e6).toFixed(3)}`.padEnd(TIME);
    out.push(time + this.arrow(from, to, escapeControl(arrowLabel(ev)), colourOf(ev, arrowLabel(ev)), ev.transport));
    return out;
  }

  /** Adds or names an endpoint's column; true when the header changed. */
  private column(endpoint: { ip: string; port: number }, name: string): boolean {
    const address = hostPort(endpoint);
    const known = this.columns.get(address);
    if (known && (known.name || !name)) return false;
    this.columns.set(address, { address, name });
    return true;
  }

  private header(): string[] {
    const cols = [...this.columns.values()];
    const row = (text: (c: { address: string; name: string }) => string) =>
      (' '.repeat(TIME - COLUMN / 2) + cols.map((c) => centred(escapeControl(text(c)), COLUMN)).join('')).trimEnd();
    const rule = ' '.repeat(TIME) + cols.map(() => '│'.padEnd(COLUMN)).join('');
    return [row((c) => c.address), row((c) => c.name), rule.trimEnd()];
  }

  /** Lifelines with one arrow from column `from` to `to`, the label in the middle of it. */
  private arrow(from: number, to: number, label: string, sgr: number, transport: string): string {
    const n = this.columns.size;
    const cells = Array.from({ length: (n - 1) * COLUMN + 1 }, (_, i) => (i % COLUMN === 0 ? '│' : ' '));
    const lo = Math.min(from, to) * COLUMN;
    const hi = Math.max(from, to) * COLUMN;
    const paint = (text: string) => (this.colour ? `\x1b[${sgr}m${text}\x1b[0m` : text);
    const tls = transport === 'tls' ? ' (TLS)' : '';
    const before = cells.slice(0, lo + 1).join('');
    // To itself (both ends one address): the label beside the lifeline.
    if (lo === hi) return before + paint(` ⟲ ${label}`) + tls;
    const width = hi - lo - 1;
    const text = ` ${label} `.length <= width - 2 ? ` ${label} ` : ` ${label.slice(0, Math.max(0, width - 5))}~ `;
    const dashes = width - 1 - text.length;
    const body = '─'.repeat(Math.floor(dashes / 2)) + text + '─'.repeat(dashes - Math.floor(dashes / 2));
    return (before + paint(from < to ? body + '>' : '<' + body) + cells.slice(hi).join('')).trimEnd() + tls;
  }
}
