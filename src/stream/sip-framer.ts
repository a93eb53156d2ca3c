/**
 * SIP framing on a byte stream (RFC 3261 18.3): a header block up to CRLFCRLF, then Content-Length
 * bytes of body. Skips keep-alive CRLFs; resynchronises on garbage at the next SIP start line.
 */

import { MAX_MESSAGE_BYTES, StreamFramer } from './framer.js';

const CRLFCRLF = Buffer.from('\r\n\r\n');
const CR = 0x0d;
const LF = 0x0a;
/** A header block longer than this is not SIP we can frame: resynchronise. */
const MAX_HEADER_BYTES = 64 * 1024;
/** A Content-Length beyond this is a lie or an attack, not a message: resynchronise instead of skipping it. */
const MAX_PLAUSIBLE_BYTES = 1024 * 1024;

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

/** Where the header name of the line buf[line..next) ends (its colon), or -1: looks no further than the line. */
export function colonInLine(buf: Buffer, line: number, next: number): number {
  for (let p = line; p < next; p++) if (buf[p] === 0x3a) return p;
  return -1;
}

/** Content-Length (or compact `l`) of a header block, or -1 if absent or malformed. Reads each line once. */
export function contentLength(buf: Buffer, headerEnd: number): number {
  let line = buf.indexOf(LF) + 1; // skip the start line
  while (line > 0 && line < headerEnd) {
    const next = buf.indexOf(LF, line) + 1 || headerEnd;
    const c = buf[line] | 0x20;
    if (c === 0x6c /* l */ || c === 0x63 /* c */) {
      const colon = colonInLine(buf, line, next);
      if (colon > 0) {
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

/** Frames one direction of one SIP connection. */
export class SipFramer extends StreamFramer {
  // Of the message waiting at the start of the held bytes (frame() returned at it), so that each
  // push reads only the new bytes: how far its header was searched for CRLFCRLF, and its length
  // once its header is complete.
  private headerSearched = 0;
  private waitingTotal = -1;

  /** The kernel cut the stream after `rest`: emit the message it starts, flagged, and find the next boundary. */
  protected cut(rest: Buffer, missing: number): void {
    this.headerSearched = 0;
    this.waitingTotal = -1;
    const headerEnd = rest.indexOf(CRLFCRLF);
    // The same start-line test as frame(): bytes it kept as a possible start are not a message yet.
    if (headerEnd < 0 || startLineAt(rest, 0) !== 1) {
      // Nothing we can frame: drop it; garbage skipping resynchronises on the next start line.
      this.stats.discardedBytes += rest.length;
      return;
    }
    const total = headerEnd + 4 + Math.max(contentLength(rest, headerEnd), 0);
    this.emitCut(rest, total);
    // If the message goes on past the missing bytes, skip its remainder to land on the next boundary.
    this.skipping = Math.max(0, total - rest.length - missing);
  }

  /** Emits every complete message in buf; returns the bytes consumed. */
  protected frame(buf: Buffer): number {
    let off = 0;
    // What is known of a message at buf[0], from the pushes before this one.
    let searched = this.headerSearched;
    let known = this.waitingTotal;
    this.headerSearched = 0;
    this.waitingTotal = -1;
    for (;; searched = 0, known = -1) {
      while (off < buf.length && (buf[off] === CR || buf[off] === LF)) off++;
      if (off >= buf.length) return off;
      const start = startLineAt(buf, off);
      if (start === 0) return off;
      if (start < 0) {
        const next = findStartLine(buf, off + 1);
        const to = next >= 0 ? next : Math.max(off, buf.length - RESYNC_TAIL);
        this.stats.discardedBytes += to - off;
        off = to;
        if (next < 0) return off;
        continue;
      }
      let total = off === 0 ? known : -1;
      if (total < 0) {
        const headerEnd = buf.indexOf(CRLFCRLF, off + (off === 0 ? searched : 0));
        if (headerEnd < 0) {
          if (buf.length - off > MAX_HEADER_BYTES) {
            this.stats.discardedBytes += buf.length - off;
            return buf.length;
          }
          this.headerSearched = Math.max(0, buf.length - off - 3);
          return off;
        }
        const cl = contentLength(buf.subarray(off, headerEnd + 4), headerEnd - off);
        total = headerEnd + 4 - off + Math.max(cl, 0);
        if (total > MAX_PLAUSIBLE_BYTES) {
          this.stats.discardedBytes += headerEnd + 4 - off;
          off = headerEnd + 4;
          continue;
        }
      }
      if (total > MAX_MESSAGE_BYTES) {
        const next = this.emitLong(buf, off, total);
        if (next < 0) {
          this.waitingTotal = total;
          return off;
        }
        off = next;
        continue;
      }
      if (off + total > buf.length) {
        this.waitingTotal = total;
        return off;
      }
      this.emit(buf.subarray(off, off + total), total);
      off += total;
    }
  }
}

const SIP_VERSION = Buffer.from('SIP/2.0');
const SP = 0x20;
/** Longest request-URI looked back over when resynchronising on a request line. */
const MAX_URI_BYTES = 4096;
/** Bytes kept after garbage that may hold the beginning of a start line whose end has not arrived. */
const RESYNC_TAIL = MAX_URI_BYTES + 32;

/**
 * Where the first complete SIP start line at or after `from` begins, or -1. A message on a stream
 * follows the previous body with no separator, so this looks anywhere, not only at line starts;
 * a whole start line is required (`SIP/2.0 ddd ` or `METHOD uri SIP/2.0` CRLF), not just a token.
 */
function findStartLine(buf: Buffer, from: number): number {
  for (let p = buf.indexOf(SIP_VERSION, from); p >= 0; p = buf.indexOf(SIP_VERSION, p + 1)) {
    if (buf[p + 7] === SP && isDigit(buf[p + 8]) && isDigit(buf[p + 9]) && isDigit(buf[p + 10]) && buf[p + 11] === SP) return p;
    if (buf[p - 1] !== SP || buf[p + 7] !== CR || buf[p + 8] !== LF) continue;
    let uri = p - 2;
    while (uri > from && p - uri < MAX_URI_BYTES && buf[uri] !== SP && buf[uri] !== LF && buf[uri] !== CR) uri--;
    if (buf[uri] !== SP || uri === p - 2) continue;
    for (const tok of START_TOKENS) {
      const at = uri + 1 - tok.length;
      if (at >= from && buf.compare(tok, 0, tok.length, at, uri + 1) === 0) return at;
    }
  }
  return -1;
}

/** 1: a whole SIP start line begins at `off`; 0: it may, once more bytes arrive; -1: it does not. */
function startLineAt(buf: Buffer, off: number): 1 | 0 | -1 {
  if (!startsLikeSip(buf, off)) return couldStartSip(buf, off) ? 0 : -1;
  if (buf[off] === 0x53 && buf[off + 1] === 0x49 && buf[off + 2] === 0x50 && buf[off + 3] === 0x2f) {
    // SIP/2.0 ddd SP
    if (buf.length - off < 12) return 0;
    return isDigit(buf[off + 8]) && isDigit(buf[off + 9]) && isDigit(buf[off + 10]) && buf[off + 11] === SP ? 1 : -1;
  }
  // METHOD SP Request-URI SP SIP/2.0 CRLF
  const lf = buf.indexOf(LF, off);
  if (lf < 0) return buf.length - off > RESYNC_TAIL ? -1 : 0;
  const uri = buf.indexOf(SP, off) + 1;
  const versionAt = lf - 8;
  if (buf[lf - 1] !== CR || buf[versionAt - 1] !== SP || versionAt - 1 <= uri) return -1;
  if (buf.compare(SIP_VERSION, 0, SIP_VERSION.length, versionAt, lf - 1) !== 0) return -1;
  const space = buf.indexOf(SP, uri);
  return space === versionAt - 1 ? 1 : -1;
}

function isDigit(c: number): boolean {
  return c >= 0x30 && c <= 0x39;
}
