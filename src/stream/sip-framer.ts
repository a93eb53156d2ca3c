/**
 * SIP framing on a byte stream (RFC 3261 18.3): a header block up to CRLFCRLF, then Content-Length
 * bytes of body. Skips keep-alive CRLFs; resynchronises on garbage at the next SIP start line.
 */

const CRLFCRLF = Buffer.from('\r\n\r\n');
const CR = 0x0d;
const LF = 0x0a;
/** A header block longer than this is not SIP we can frame: resynchronise. */
const MAX_HEADER_BYTES = 64 * 1024;
/** A Content-Length beyond this is a lie or an attack, not a message to buffer: resynchronise. */
const MAX_MESSAGE_BYTES = 1024 * 1024;

const METHODS = ['INVITE', 'ACK', 'BYE', 'CANCEL', 'OPTIONS', 'REGISTER', 'PRACK', 'SUBSCRIBE', 'NOTIFY', 'PUBLISH', 'INFO', 'REFER', 'MESSAGE', 'UPDATE'];
const START_TOKENS = [...METHODS.map((m) => Buffer.from(m + ' ')), Buffer.from('SIP/2.0 ')];
// RFC 3261 says a method is any token; the list above is what a start line must begin with for us to trust it.

/** True if `buf[off..]` begins like a SIP request or status line. Needs at most 10 bytes. */
export function startsLikeSip(buf: Buffer, off = 0): boolean {
  for (const tok of START_TOKENS) {
    if (buf.length - off >= tok.length && buf.compare(tok, 0, tok.length, off, off + tok.length) === 0) return true;
  }
  return false;
}

/** Could `buf[off..]` still turn into a SIP start line once more bytes arrive? */
function couldStartSip(buf: Buffer, off: number): boolean {
  const n = buf.length - off;
  return START_TOKENS.some((tok) => n < tok.length && buf.compare(tok, 0, n, off, buf.length) === 0);
}

/** Content-Length (or compact `l`) of a header block, or -1 if absent or malformed. */
export function contentLength(buf: Buffer, headerEnd: number): number {
  let line = buf.indexOf(LF) + 1; // skip the start line
  while (line > 0 && line < headerEnd) {
    const next = buf.indexOf(LF, line) + 1 || headerEnd;
    const c = buf[line] | 0x20;
    if (c === 0x6c /* l */ || c === 0x63 /* c */) {
      const colon = buf.indexOf(0x3a, line);
      if (colon > 0 && colon < next) {
        const name = buf.toString('latin1', line, colon).trim().toLowerCase();
        if (name === 'content-length' || name === 'l') {
          const value = buf.toString('latin1', colon + 1, next).trim();
          return /^\d+$/.test(value) ? Number(value) : -1;
        }
      }
    }
    line = next;
  }
  return -1;
}

export interface FramerStats {
  messages: number;
  discardedBytes: number;
  truncatedMessages: number;
}

export type FrameSink = (payload: Buffer, size: number, truncated: boolean) => void;

/** Frames one direction of one connection. */
export class SipFramer {
  private pending: Buffer = Buffer.alloc(0);
  /** Bytes of a cut message still to arrive; they are skipped so framing resumes on the next boundary. */
  private skipping = 0;

  constructor(
    private readonly stats: FramerStats,
    private readonly sink: FrameSink,
  ) {}

  /** Feeds `data`; `missing` is how many bytes followed it on the wire that the kernel did not copy. */
  push(data: Buffer, missing = 0): void {
    if (this.skipping > 0) {
      const skip = Math.min(this.skipping, data.length);
      this.skipping -= skip;
      this.stats.discardedBytes += skip;
      data = data.subarray(skip);
    }
    const buf = this.pending.length ? Buffer.concat([this.pending, data]) : data;
    const used = this.frame(buf);
    const rest = buf.subarray(used);
    this.pending = Buffer.alloc(0);
    if (missing === 0) {
      // Keep the unframed tail; copy it, since `data` is a view into a batch that is reused.
      if (rest.length) this.pending = Buffer.from(rest);
      return;
    }
    this.cut(rest, missing);
  }

  /** The kernel cut the stream after `rest`: emit the message it starts, flagged, and find the next boundary. */
  private cut(rest: Buffer, missing: number): void {
    const headerEnd = rest.indexOf(CRLFCRLF);
    const cl = headerEnd < 0 ? -1 : contentLength(rest, headerEnd);
    if (rest.length === 0 || !startsLikeSip(rest) || headerEnd < 0) {
      // Nothing we can frame: drop it; garbage skipping resynchronises on the next start line.
      this.stats.discardedBytes += rest.length;
      return;
    }
    const total = headerEnd + 4 + Math.max(cl, 0);
    this.stats.messages++;
    this.stats.truncatedMessages++;
    this.sink(rest, total, true);
    // If the message goes on past the missing bytes, skip its remainder to land on the next boundary.
    this.skipping = Math.max(0, total - rest.length - missing);
  }

  /** Emits every complete message in buf; returns the bytes consumed. */
  private frame(buf: Buffer): number {
    let off = 0;
    for (;;) {
      while (off < buf.length && (buf[off] === CR || buf[off] === LF)) off++;
      if (off >= buf.length) return off;
      if (!startsLikeSip(buf, off)) {
        if (couldStartSip(buf, off)) return off;
        const next = nextStartLine(buf, off);
        this.stats.discardedBytes += next - off;
        off = next;
        continue;
      }
      const headerEnd = buf.indexOf(CRLFCRLF, off);
      if (headerEnd < 0) {
        if (buf.length - off <= MAX_HEADER_BYTES) return off;
        this.stats.discardedBytes += buf.length - off;
        return buf.length;
      }
      const cl = contentLength(buf.subarray(off, headerEnd + 4), headerEnd - off);
      const total = headerEnd + 4 - off + Math.max(cl, 0);
      if (total > MAX_MESSAGE_BYTES) {
        this.stats.discardedBytes += headerEnd + 4 - off;
        off = headerEnd + 4;
        continue;
      }
      if (off + total > buf.length) return off;
      this.stats.messages++;
      this.sink(buf.subarray(off, off + total), total, false);
      off += total;
    }
  }
}

/** Offset of the next line after `off` that starts (or may start) like SIP; else the end, minus a possible partial start. */
function nextStartLine(buf: Buffer, off: number): number {
  for (let at = off; ; ) {
    const lf = buf.indexOf(LF, at);
    if (lf < 0) {
      for (let tail = Math.max(off + 1, buf.length - 9); tail < buf.length; tail++) if (couldStartSip(buf, tail)) return tail;
      return buf.length;
    }
    if (startsLikeSip(buf, lf + 1) || couldStartSip(buf, lf + 1)) return lf + 1;
    at = lf + 1;
  }
}
