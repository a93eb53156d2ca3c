/**
 * SIP framing on a byte stream (RFC 3261 18.3): a header block up to CRLFCRLF, then Content-Length
 * bytes of body. Reports each run of keep-alive CR/LF bytes (RFC 5626 CRLFCRLF ping, CRLF pong) at a
 * message boundary and skips it; resynchronises on garbage at the next SIP start line.
 */

import { FrameSink, FramerStats, MAX_MESSAGE_BYTES, StreamFramer } from './framer.js';
import { contentLength, findStartLine, headerBlock, HeaderLines, MAX_START_LINE_BYTES, START_LINE_LOOKAHEAD, startLineAt } from '../protocols/sip.js';

const CRLFCRLF = Buffer.from('\r\n\r\n');
const CR = 0x0d;
const LF = 0x0a;
/** A header block longer than this is not SIP we can frame: resynchronise. */
const MAX_HEADER_BYTES = 64 * 1024;
/** A Content-Length beyond this is a lie or an attack, not a message: resynchronise instead of skipping it. */
const MAX_PLAUSIBLE_BYTES = 1024 * 1024;
/** Bytes kept after garbage that may hold the beginning of a start line whose end has not arrived. */
const RESYNC_TAIL = MAX_START_LINE_BYTES;

/**
 * The line feeds headerBlock() found in the header of the message being framed, handed on with it.
 * One for all SIP streams (not 300 bytes each of up to 65536): the sink reads them during its call,
 * before any other stream is framed.
 */
const headerLines = new HeaderLines();

/** Frames one direction of one SIP connection. */
export class SipFramer extends StreamFramer {
  // Of the message waiting at the start of the held bytes (frame() returned at it), so that each
  // push reads only the new bytes: how far its header was searched for CRLFCRLF, and its length
  // once its header is complete.
  private headerSearched = 0;
  private waitingTotal = -1;
  // Of the held bytes, whatever is at their start, so that garbage arriving a byte at a time is not
  // searched again on each push: no start line's SIP/2.0 lies before `startSearched`; no LF lies in
  // [lineFrom, lineEnd), and lineEnd is an LF or the end of the bytes searched.
  private startSearched = 0;
  private lineFrom = 0;
  private lineEnd = 0;
  /** What headerBlock() found of the message being framed. */
  private readonly header = { contentLength: -1, lines: headerLines };

  /** keepAlive receives each run of CR/LF bytes between messages (a view, valid during the call), and the bytes of the push after it. */
  constructor(stats: FramerStats, sink: FrameSink, private readonly keepAlive: (run: Buffer, after: number) => void = () => {}) {
    super(stats, sink);
  }

  /** The kernel cut the stream after `rest`: emit the message it starts, flagged, and find the next boundary. */
  protected cut(rest: Buffer, missing: number): void {
    this.headerSearched = 0;
    this.waitingTotal = -1;
    this.startSearched = this.lineFrom = this.lineEnd = 0;
    const headerEnd = rest.indexOf(CRLFCRLF);
    // The same start-line test as frame(): bytes it kept as a possible start are not a message yet.
    if (headerEnd < 0 || startLineAt(rest, 0) !== 1) {
      // Nothing we can frame: drop it; garbage skipping resynchronises on the next start line.
      this.stats.discardedBytes += rest.length;
      return;
    }
    const total = headerEnd + 4 + Math.max(contentLength(rest, headerEnd), 0);
    this.emitCut(rest, total, rest.length - total);
    // If the message goes on past the missing bytes, skip its remainder to land on the next boundary.
    this.skipping = Math.max(0, total - rest.length - missing);
  }

  /** Emits every complete message in buf; returns the bytes consumed. */
  protected frame(buf: Buffer): number {
    const used = this.frameMessages(buf);
    // What was searched stays searched, counted from the bytes held after this push.
    this.startSearched = Math.max(0, this.startSearched - used);
    this.lineFrom = Math.max(0, this.lineFrom - used);
    this.lineEnd = Math.max(0, this.lineEnd - used);
    return used;
  }

  /** The first LF at or after `off`, or -1: each byte is searched once while `off` only moves forward. */
  private lfFrom(buf: Buffer, off: number): number {
    const known = this.lineFrom <= off && off <= this.lineEnd;
    const lf = buf.indexOf(LF, known ? this.lineEnd : off);
    if (!known) this.lineFrom = off;
    this.lineEnd = lf < 0 ? buf.length : lf;
    return lf;
  }

  private frameMessages(buf: Buffer): number {
    let off = 0;
    // What is known of a message at buf[0], from the pushes before this one.
    let searched = this.headerSearched;
    let known = this.waitingTotal;
    this.headerSearched = 0;
    this.waitingTotal = -1;
    for (;; searched = 0, known = -1) {
      const run = off;
      while (off < buf.length && (buf[off] === CR || buf[off] === LF)) off++;
      if (off > run) this.keepAlive(buf.subarray(run, off), buf.length - off);
      if (off >= buf.length) return off;
      const lf = this.lfFrom(buf, off);
      const start = startLineAt(buf, off, lf);
      if (start === 0) return off;
      if (start < 0) {
        const next = findStartLine(buf, off + 1, Math.max(off + 1, this.startSearched));
        const to = next >= 0 ? next : Math.max(off, buf.length - RESYNC_TAIL);
        this.stats.discardedBytes += to - off;
        off = to;
        if (next >= 0) continue;
        this.startSearched = Math.max(0, buf.length - START_LINE_LOOKAHEAD);
        return off;
      }
      let total = off === 0 ? known : -1;
      // Whether headerBlock() walked this message's header, here: its line feeds are in headerLines.
      let walked = false;
      if (total < 0) {
        // A header first looked at now is read in one walk; one searched before resumes where that search ended.
        const resumed = off === 0 && searched > 0;
        const headerEnd = resumed ? buf.indexOf(CRLFCRLF, searched) : headerBlock(buf, off, lf, this.header);
        if (headerEnd < 0) {
          if (buf.length - off > MAX_HEADER_BYTES) {
            this.stats.discardedBytes += buf.length - off;
            return buf.length;
          }
          this.headerSearched = Math.max(0, buf.length - off - 3);
          return off;
        }
        walked = !resumed;
        const cl = resumed ? contentLength(buf, headerEnd) : this.header.contentLength;
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
      const payload = this.messageAt(buf, off, total);
      if (walked) headerLines.message = payload;
      this.emit(payload, total, buf.length - off - total, walked ? headerLines : undefined);
      headerLines.message = undefined; // valid during the sink call only, and keeps no batch alive
      off += total;
    }
  }
}
