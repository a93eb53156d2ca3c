/**
 * WebSocket frames (RFC 6455 5.2) built byte by byte, valid or not: any first byte (FIN, reserved
 * bits, opcode), the length in any of its three forms and claiming more or less than the payload,
 * masked with a given key or not. For the fuzz target, the unit tests and the bench; no code from src/.
 */
import { createRequire } from 'node:module';
import type { Writable } from 'node:stream';

export interface FrameSpec {
  /** Length form: 7-bit (claims up to 125), 16-bit or 64-bit; default the shortest that fits. */
  form?: 7 | 16 | 64;
  /** Added to the payload's length in the length field (a lie when not 0). */
  claimDelta?: number;
  /** Masking key (as 4 bytes big-endian); absent: not masked. */
  mask?: number | null;
}

export function encodeFrame(b0: number, payload: Buffer, spec: FrameSpec = {}): Buffer {
  const claim = Math.max(0, payload.length + (spec.claimDelta ?? 0));
  const form = spec.form ?? (claim <= 125 ? 7 : claim <= 0xffff ? 16 : 64);
  const len =
    form === 7 ? [Math.min(claim, 125)] : form === 16 ? [126, (claim >> 8) & 0xff, claim & 0xff] : [127, ...[56, 48, 40, 32, 24, 16, 8, 0].map((s) => Math.floor(claim / 2 ** s) & 0xff)];
  const head = Buffer.from([b0, ...len]);
  const masked = spec.mask !== undefined && spec.mask !== null;
  const key = Buffer.alloc(masked ? 4 : 0);
  const body = Buffer.from(payload);
  if (masked) {
    head[1] |= 0x80;
    key.writeUInt32BE(spec.mask! >>> 0);
    for (let i = 0; i < body.length; i++) body[i] ^= key[i & 3];
  }
  return Buffer.concat([head, key, body]);
}

/**
 * The `ws` package's own frame Sender and Receiver, an encoder and decoder independent of ours. The
 * package exports both; @types/ws does not declare them, so their types are stated here.
 */
export const { Sender: WsSender, Receiver: WsReceiver } = createRequire(import.meta.url)('ws') as {
  Sender: { frame(data: Buffer, options: { fin: boolean; opcode: number; mask: boolean; readOnly: boolean; rsv1: boolean }): Buffer[] };
  Receiver: new (options: { isServer: boolean; binaryType: 'nodebuffer'; allowSynchronousEvents: boolean }) => Writable;
};
