/**
 * SIP over WebSocket on a byte stream (RFC 7118): the opening handshake, then frames. Each data
 * message (a text or binary frame, or one fragmented over continuation frames) is one SIP message,
 * emitted unmasked; control frames (ping, pong, close) may come between its fragments and are skipped.
 * What is held is bounded: a handshake up to MAX_HANDSHAKE_BYTES, a frame header, and a message up
 * to MAX_MESSAGE_BYTES (a longer one is emitted cut, with its full size). Bytes that do not frame, a
 * frame claiming more than MAX_FRAME_BYTES, or bytes the kernel did not copy where a frame header
 * was due make the framer resynchronise: it waits for a payload (a write) that starts with a data
 * frame carrying a SIP start line, the way a stream first seen mid-connection starts.
 */

import { FrameSink, FramerStats, MAX_MESSAGE_BYTES, StreamFramer } from './framer.js';
import { isKeepAlive, startsLikeSip } from '../protocols/sip.js';
import {
  FrameHeader, frameHeaderAt, handshakeEnd, isSipHandshake, MAX_HANDSHAKE_BYTES, OP_BINARY, OP_CONTINUATION, OP_TEXT,
  startsLikeHandshake, unmaskInto,
} from '../protocols/websocket.js';

/** A frame claiming more than this is a lie or an attack, not SIP: resynchronise instead of skipping it. */
export const MAX_FRAME_BYTES = 1024 * 1024;
/** A message buffer grown beyond this is given back once its message left. */
const KEEP_MESSAGE_BYTES = 4096;

export interface WebSocketStats {
  /** Opening handshakes of SIP over WebSocket read (request and response each count). */
  handshakes: number;
  /** Handshakes that were not (a 4xx, another subprotocol, too long): that direction is ignored. */
  rejectedHandshakes: number;
  /** Times framing was lost (bytes that are not a frame, a hostile length, bytes the kernel did not copy) and resynchronised. */
  resyncs: number;
  /** Ping, pong and close frames skipped. */
  controlFrames: number;
  /** Data messages that do not start like SIP: dropped. */
  notSip: number;
}

const enum State {
  /** Before the first bytes: a handshake, or frames of a connection first seen mid-stream. */
  Start,
  Handshake,
  Frames,
  /** Framing lost: waiting for a payload that starts with a data frame carrying SIP. */
  Resync,
  /** The handshake was not SIP over WebSocket: everything is discarded. */
  Ignored,
}

/** Frames one direction of one SIP-over-WebSocket connection (TCP, or TLS plaintext for WSS). */
export class WebSocketFramer extends StreamFramer {
  private state = State.Start;
  private readonly header: FrameHeader = { fin: false, opcode: 0, mask: -1, headerBytes: 0, payloadBytes: 0 };
  /** Of the frame being read: its payload bytes still to come, masking key and phase, and whether it is control. */
  private payloadLeft = 0;
  private mask = -1;
  private phase = 0;
  private control = false;
  /** Of the data frame being read (control frames may come between it and its header): whether it ends its message. */
  private fin = false;
  /** Of the data message being assembled: its bytes so far (held up to MAX_MESSAGE_BYTES) and its size on the wire. */
  private inMessage = false;
  private message: Buffer = Buffer.alloc(0);
  private held = 0;
  private size = 0;
  /** Bytes of the message were lost (the kernel did not copy them): what is held is a prefix, emitted cut. */
  private lost = false;
  /** How far the handshake was searched for its end. */
  private handshakeSearched = 0;

  constructor(
    stats: FramerStats,
    private readonly wsStats: WebSocketStats,
    sink: FrameSink,
    private readonly keepAlive: (run: Buffer, after: number) => void,
  ) {
    super(stats, sink);
  }

  /** Bytes allocated to hold a partial frame header or handshake, and the message being assembled. */
  override get allocated(): number {
    return super.allocated + this.message.length;
  }

  protected frame(buf: Buffer): number {
    if (this.state === State.Start) {
      if (buf.length < 4) return 0;
      this.state = startsLikeHandshake(buf) ? State.Handshake : State.Resync;
    }
    switch (this.state) {
      case State.Handshake:
        return this.handshake(buf);
      case State.Frames:
        return this.frames(buf, 0);
      case State.Resync:
        return this.resync(buf);
      default:
        this.stats.discardedBytes += buf.length;
        return buf.length;
    }
  }

  private handshake(buf: Buffer): number {
    const end = handshakeEnd(buf, this.handshakeSearched);
    if (end < 0) {
      if (buf.length <= MAX_HANDSHAKE_BYTES) {
        this.handshakeSearched = Math.max(0, buf.length - 3);
        return 0;
      }
    } else if (isSipHandshake(buf, end)) {
      this.wsStats.handshakes++;
      this.state = State.Frames;
      return this.frames(buf, end);
    }
    this.wsStats.rejectedHandshakes++;
    this.state = State.Ignored;
    this.stats.discardedBytes += buf.length;
    return buf.length;
  }

  /** A payload (buf starts where a write started) is taken up again if it starts with a data frame carrying SIP. */
  private resync(buf: Buffer): number {
    const h = this.header;
    if (frameHeaderAt(buf, 0, h) === 1 && (h.opcode === OP_TEXT || h.opcode === OP_BINARY) && h.payloadBytes <= MAX_FRAME_BYTES) {
      const head = Buffer.alloc(Math.min(10, h.payloadBytes, buf.length - h.headerBytes));
      if (h.mask < 0) buf.copy(head, 0, h.headerBytes, h.headerBytes + head.length);
      else unmaskInto(head, 0, buf, h.headerBytes, h.headerBytes + head.length, h.mask, 0);
      if (startsLikeSip(head)) {
        this.state = State.Frames;
        return this.frames(buf, 0);
      }
    }
    this.stats.discardedBytes += buf.length;
    return buf.length;
  }

  /** Reads frames from buf[off..]; returns the bytes consumed (all but an incomplete frame header). */
  private frames(buf: Buffer, off: number): number {
    const h = this.header;
    for (;;) {
      if (this.payloadLeft > 0) {
        const n = Math.min(this.payloadLeft, buf.length - off);
        if (!this.control) this.append(buf, off, off + n);
        this.payloadLeft -= n;
        off += n;
        if (this.payloadLeft > 0) return off;
        if (!this.control && this.fin) this.finish(buf.length - off);
        continue;
      }
      const at = frameHeaderAt(buf, off, h);
      if (at === 0) return off;
      // Not a frame, a hostile length, or a data frame out of order (a continuation with no message
      // begun, a new message before the last one's final fragment): framing is lost.
      const outOfOrder = h.opcode <= OP_BINARY && this.inMessage !== (h.opcode === OP_CONTINUATION);
      if (at < 0 || h.payloadBytes > MAX_FRAME_BYTES || outOfOrder) return this.lose(buf, off);
      off += h.headerBytes;
      this.control = h.opcode > OP_BINARY;
      if (this.control) this.wsStats.controlFrames++;
      else if (!this.inMessage) {
        // The common case, a whole unmasked message in this buffer, goes out as a view: nothing is copied.
        if (h.fin && h.mask < 0 && buf.length - off >= h.payloadBytes) {
          this.deliver(buf.subarray(off, off + h.payloadBytes), h.payloadBytes, false, buf.length - off - h.payloadBytes);
          off += h.payloadBytes;
          continue;
        }
        this.inMessage = true;
        this.held = this.size = 0;
        this.lost = false;
      }
      if (!this.control) this.fin = h.fin;
      this.mask = h.mask;
      this.phase = 0;
      this.payloadLeft = h.payloadBytes;
      // An empty frame ends here; the loop then reads the next header.
      if (this.payloadLeft === 0 && !this.control && this.fin) this.finish(buf.length - off);
    }
  }

  /** Adds buf[from..to) of a data frame to the message, unmasked, holding at most MAX_MESSAGE_BYTES. */
  private append(buf: Buffer, from: number, to: number): void {
    this.size += to - from;
    if (this.lost) return;
    const end = Math.min(to, from + MAX_MESSAGE_BYTES - this.held);
    if (end <= from) return;
    const need = this.held + end - from;
    if (need > this.message.length) {
      const grown = Buffer.allocUnsafe(Math.min(MAX_MESSAGE_BYTES, Math.max(need, 2 * this.message.length)));
      this.message.copy(grown, 0, 0, this.held);
      this.message = grown;
    }
    if (this.mask < 0) buf.copy(this.message, this.held, from, end);
    else unmaskInto(this.message, this.held, buf, from, end, this.mask, this.phase);
    this.phase = (this.phase + (to - from)) & 3;
    this.held = need;
  }

  /** The message's last frame ended, `after` bytes before the end of the push: emit it. */
  private finish(after: number): void {
    this.inMessage = false;
    this.deliver(this.message.subarray(0, this.held), this.size, this.lost || this.size > this.held, after);
    if (this.message.length > KEEP_MESSAGE_BYTES) this.message = Buffer.alloc(0);
  }

  private deliver(payload: Buffer, size: number, cut: boolean, after: number): void {
    if (payload.length > 0 && isKeepAlive(payload)) this.keepAlive(payload, after);
    else if (!startsLikeSip(payload)) {
      this.wsStats.notSip++;
      this.stats.discardedBytes += payload.length;
    } else if (cut) this.emitCut(payload, size, after);
    else this.emit(payload, size, after);
  }

  /** Framing is lost at buf[off]: a message begun goes out cut, the rest of buf is dropped, and the next payload is tried. */
  private lose(buf: Buffer, off: number): number {
    this.wsStats.resyncs++;
    if (this.inMessage) {
      this.lost = true;
      this.finish(buf.length - off);
    }
    this.payloadLeft = 0;
    this.state = State.Resync;
    this.stats.discardedBytes += buf.length - off;
    return buf.length;
  }

  /** The kernel did not copy `missing` bytes after `rest` (an incomplete frame header or handshake). */
  protected cut(rest: Buffer, missing: number): void {
    if (this.state === State.Frames && rest.length === 0 && missing <= this.payloadLeft) {
      // Inside one frame's payload: framing holds, the message keeps only the prefix before the gap.
      this.payloadLeft -= missing;
      if (!this.control) {
        this.size += missing;
        this.lost = true;
      }
      // Its last frame ended `missing` bytes past the push.
      if (this.payloadLeft === 0 && !this.control && this.fin) this.finish(-missing);
      return;
    }
    if (this.state === State.Frames) {
      this.lose(rest, 0);
      return;
    }
    // A handshake cut by the kernel is over 64 KiB: not one.
    if (this.state === State.Start || this.state === State.Handshake) {
      this.wsStats.rejectedHandshakes++;
      this.state = State.Ignored;
    }
    this.stats.discardedBytes += rest.length;
  }
}
