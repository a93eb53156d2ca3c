/**
 * Correlation ids (HEP chunk 0x11), never empty. All rules live here:
 *
 * SIP: the Call-ID; a message without one gets an id naming its flow. With an operator's key
 * (--correlation-header NAME, --correlation-regex REGEX; see OperatorKey) a message carrying the key
 * takes it, and so does every later message of its Call-ID that does not carry it (until the call
 * is idle for KEY_IDLE_NS, or KEY_AFTER_BYE_NS after the final response to its BYE).
 *
 * Diameter, first rule that applies:
 * 1. An answer takes its request's id (matched by hop-by-hop and end-to-end id).
 * 2. A Session-Id already tied to a SIP call keeps that call's Call-ID (e.g. the Rx STR after an AAR).
 * 3. Rx AF-Charging-Identifier or Ro/Rf IMS-Charging-Identifier equal to the icid-value of a
 *    P-Charging-Vector seen in SIP: that message's Call-ID.
 * 4. Cx/Sh Public-Identity (also inside User-Identity) or User-Name equal to the user of a REGISTER
 *    in progress (To URI or Authorization username): the REGISTER's Call-ID.
 *    Rules 2 to 4 give the operator's key instead when that Call-ID has one.
 * 5. The Session-Id.
 * 6. Base-protocol messages without a Session-Id (CER/CEA, DWR/DWA, DPR/DPA): `diameter:` and the
 *    two ends of the peer connection, lower address first.
 *
 * Every id is at most MAX_TEXT_CHUNK_BYTES of UTF-8: a longer Call-ID or Session-Id is cut between
 * characters (and counted), so it fits a HEP chunk and a table key stays small.
 */
import { setFlagsFromString } from 'node:v8';
import { colonInLine, headerNameIs, type SipInfo } from '../protocols/sip.js';
import { findAllAvps, findAvp, find3gpp, type DiameterInfo } from '../protocols/diameter.js';
import { VENDOR_3GPP } from '../protocols/diameter-dictionary.js';
import type { Endpoint, Message } from '../stream/message.js';
import { boundedText } from '../hep/chunks.js';
import { ExpiringMap } from './expiring-map.js';

/** How long a SIP fact (icid, REGISTER user) or an unanswered request is remembered. */
const REMEMBER_NS = 300_000_000_000n;
/** A REGISTER stays "in progress" this long after its final 2xx (the S-CSCF's SAR may follow it). */
const REGISTER_GRACE_NS = 10_000_000_000n;
const MAX_ENTRIES = 100_000;
/** A Call-ID keeps its operator's key this long after its last message (a re-INVITE or session refresh renews it). */
const KEY_IDLE_NS = 3_600_000_000_000n;
/** ... and this long after the final response to its BYE: retransmissions (64*T1) still find it. */
const KEY_AFTER_BYE_NS = 32_000_000_000n;
/** How much of a message --correlation-header reads: the header block, as far as parseSip does. */
const HEADER_SCAN_BYTES = 16 * 1024;
/** How much of a message --correlation-regex runs over: the start line, the headers and the start of a body. */
export const REGEX_SCAN_BYTES = 4096;

const APP_CX = 16777216;
const APP_SH = 16777217;

const hostPort = (e: Endpoint) => (e.ip.includes(':') ? `[${e.ip}]:${e.port}` : `${e.ip}:${e.port}`);

/** A message with no Call-ID (e.g. a half message) is tied to its flow. */
export function flowId(m: Message): string {
  return `${m.transport}:${m.src.ip}:${m.src.port}-${m.dst.ip}:${m.dst.port}`;
}

/** The length of the `sip:`, `sips:` or `tel:` (any case) that `s` starts with, else 0: what /^(?:sips?|tel):/i matches. */
function schemeLength(s: string): number {
  const lower = (i: number) => s.charCodeAt(i) | 0x20; // a letter in lower case; no other character becomes one
  if (lower(0) === 0x73 && lower(1) === 0x69 && lower(2) === 0x70) {
    if (s.charCodeAt(3) === 0x3a) return 4;
    return lower(3) === 0x73 && s.charCodeAt(4) === 0x3a ? 5 : 0;
  }
  return lower(0) === 0x74 && lower(1) === 0x65 && lower(2) === 0x6c && s.charCodeAt(3) === 0x3a ? 4 : 0;
}

/** `;`, `?` or `>`: what ends the user@host of an identity. */
const endsIdentity = (c: number) => c === 0x3b || c === 0x3f || c === 0x3e;

/**
 * `sip:Alice@IMS.test;x=y` / `<sip:alice@ims.test>` / `alice@ims.test` -> `alice@ims.test`: inside
 * <> if any, without its scheme, up to `;`, `?` or `>`, in lower case. Read by character: a regex
 * replace and search per identity were most of its cost (selection asks for several a message).
 */
export function identityKey(id: string): string {
  let s = id.trim();
  const lt = s.indexOf('<');
  if (lt >= 0) s = s.slice(lt + 1, s.indexOf('>', lt) >>> 0);
  const from = schemeLength(s);
  let to = from;
  while (to < s.length && !endsIdentity(s.charCodeAt(to))) to++;
  return s.slice(from, to).toLowerCase();
}

const TO = /\r\n(?:to|t)[ \t]*:([^\r\n]*)/i;
const AUTH_USER = /\r\nauthorization[ \t]*:[^\r\n]*?\busername[ \t]*=[ \t]*"([^"\r\n]*)"/i;
/** The operator's own correlation key: the value of a header, or a regex's capture group. */
export interface OperatorKey {
  /** Header name (any case), e.g. X-CID: its first non-empty value in the header block. */
  header?: string;
  /** From correlationRegex(): the first capture group that matched in the first REGEX_SCAN_BYTES bytes. Tried when the header is absent. */
  regex?: RegExp;
}

const TOKEN = /^[A-Za-z0-9.!%*_+`'~-]+$/;

/** Validates --correlation-header: a SIP header name (an RFC 3261 token). */
export function correlationHeader(name: string): string {
  if (!TOKEN.test(name)) throw new Error(`--correlation-header must be a SIP header name such as X-CID, got ${JSON.stringify(name)}`);
  return name;
}

/**
 * Compiles --correlation-regex. It runs on V8's backtracking engine (fast: about a microsecond over
 * a message), which V8 is told to leave for its linear-time engine, for that run, once a run has
 * backtracked 50,000 times: no pattern and no message can make it take longer than pattern size
 * times REGEX_SCAN_BYTES. So the pattern must be one the linear engine can run: no backreferences,
 * lookahead or lookbehind (checked by compiling it for that engine, flag `l`), and no flags.
 */
export function correlationRegex(source: string): RegExp {
  const what = `--correlation-regex '${source}'`;
  try {
    new RegExp(source);
  } catch (err) {
    throw new Error(`${what} is not a valid regular expression: ${(err as Error).message}`);
  }
  // An alternative that matches the empty string: the match has one entry per group.
  if (new RegExp(`${source}|`).exec('')!.length < 2) throw new Error(`${what} has no capture group: the group's text is the key, e.g. 'X-Session: *([^\\r\\n]+)'`);
  setFlagsFromString('--enable-experimental-regexp-engine');
  setFlagsFromString('--enable-experimental-regexp-engine-on-excessive-backtracks');
  try {
    new RegExp(source, 'l');
  } catch {
    throw new Error(`${what} cannot run in linear time: backreferences, lookahead and lookbehind are not supported`);
  }
  return new RegExp(source);
}

/** The value of the first header named `lower` (lower case) that has one, in the header block; each line read once. */
function headerValue(payload: Buffer, lower: string): string | undefined {
  const first = lower.charCodeAt(0);
  const end = Math.min(payload.length, HEADER_SCAN_BYTES);
  for (let line = payload.indexOf(0x0a) + 1; line > 0 && line < end; ) {
    let next = payload.indexOf(0x0a, line);
    if (next < 0 || next > end) next = end;
    if (next - line <= 1) break; // empty line: end of headers
    const c = payload[line];
    if (c === first || (c | 0x20) === first) {
      const colon = colonInLine(payload, line, next);
      if (colon > line && headerNameIs(payload, line, colon, lower)) {
        const value = payload.toString('utf8', colon + 1, next).trim();
        if (value) return value;
      }
    }
    line = next + 1;
  }
  return undefined;
}

function regexKey(payload: Buffer, regex: RegExp): string | undefined {
  // latin1: one byte per character, the cheapest decoding; the key alone is read as the UTF-8 it is.
  const m = regex.exec(payload.toString('latin1', 0, Math.min(payload.length, REGEX_SCAN_BYTES)));
  if (!m) return undefined;
  for (let i = 1; i < m.length; i++) if (m[i]) return Buffer.from(m[i], 'latin1').toString('utf8');
  return undefined;
}

export interface DiameterCorrelation {
  id: string;
  /** For an answer whose request was seen: milliseconds between them. */
  latencyMs?: number;
}

export class Correlator {
  private readonly icids = new ExpiringMap<string, bigint>(MAX_ENTRIES);
  private readonly registering = new ExpiringMap<string, bigint>(MAX_ENTRIES);
  private readonly sessions = new ExpiringMap<string, bigint>(MAX_ENTRIES);
  private readonly pending = new ExpiringMap<{ id: string; tsNs: bigint }, bigint>(MAX_ENTRIES);
  /** Call-ID -> the operator's key of its call; each map has one lifetime, so its order is its expiry order (see sweep). */
  private readonly keys = new ExpiringMap<string, bigint>(MAX_ENTRIES);
  private readonly endedKeys = new ExpiringMap<string, bigint>(MAX_ENTRIES);
  private readonly keyHeader?: string;
  private readonly keyRegex?: RegExp;
  private sinceSweep = 0;
  /** Ids cut to MAX_TEXT_CHUNK_BYTES. */
  private idsCut = 0;
  /** SIP messages that carried the operator's key. */
  private keyed = 0;

  constructor(key: OperatorKey = {}) {
    this.keyHeader = key.header?.toLowerCase();
    this.keyRegex = key.regex;
  }

  private bounded(id: string): string {
    const b = boundedText(id);
    if (b !== id) this.idsCut++;
    return b;
  }

  /** The id of a SIP message; learns the icid and REGISTER users that Diameter messages may refer to. */
  sip(m: Message, sip: SipInfo): string {
    const id = this.bounded(sip.callId || flowId(m));
    const now = m.tsNs;
    this.maybeSweep(now);
    if (sip.icid) this.icids.set(boundedText(sip.icid), id, now + REMEMBER_NS);
    if (sip.method === 'REGISTER') {
      const head = m.payload.toString('latin1', 0, Math.min(m.payload.length, 16 * 1024));
      const to = TO.exec(head)?.[1];
      if (to) this.registering.set(identityKey(to), id, now + REMEMBER_NS);
      const user = AUTH_USER.exec(head)?.[1];
      if (user) this.registering.set(identityKey(user), id, now + REMEMBER_NS);
    } else if (sip.cseqMethod === 'REGISTER' && sip.statusCode !== undefined && sip.statusCode >= 200 && sip.statusCode < 300) {
      // Registered: keep the users a short while for the Diameter that follows, then forget them.
      const to = TO.exec(m.payload.toString('latin1', 0, Math.min(m.payload.length, 16 * 1024)))?.[1];
      if (to) this.registering.set(identityKey(to), id, now + REGISTER_GRACE_NS);
    }
    return this.keyHeader || this.keyRegex ? this.operatorKey(m, sip, id) : id;
  }

  /** The operator's key this message carries, else the one its Call-ID has, else `callId`; learns and renews the Call-ID's key. */
  private operatorKey(m: Message, sip: SipInfo, callId: string): string {
    const now = m.tsNs;
    const carried = (this.keyHeader && headerValue(m.payload, this.keyHeader)) || (this.keyRegex && regexKey(m.payload, this.keyRegex));
    if (carried) this.keyed++;
    const own = carried ? this.bounded(carried) : undefined;
    // A message with no Call-ID is tied to nothing: its key is its own.
    if (!sip.callId) return own ?? callId;
    // After the final response to its BYE a call's key is kept, not renewed.
    const ended = this.endedKeys.get(callId, now);
    if (ended !== undefined) return own ?? ended;
    const key = own ?? this.keys.get(callId, now);
    if (key === undefined) return callId;
    if (sip.cseqMethod === 'BYE' && sip.statusCode !== undefined && sip.statusCode >= 200) {
      this.keys.take(callId, now);
      this.endedKeys.set(callId, key, now + KEY_AFTER_BYE_NS);
    } else this.keys.set(callId, key, now + KEY_IDLE_NS);
    return key;
  }

  /** A Call-ID a Diameter message is tied to, as its id: the call's operator key if it has one. */
  private callKey(callId: string, now: bigint): string {
    return this.keys.get(callId, now) ?? this.endedKeys.get(callId, now) ?? callId;
  }

  diameter(m: Message, d: DiameterInfo): DiameterCorrelation {
    const now = m.tsNs;
    this.maybeSweep(now);
    const key = `${d.hopByHop}:${d.endToEnd}`;
    if (!d.request) {
      const req = this.pending.take(key, now);
      if (req) return { id: req.id, latencyMs: Math.round(Number(now - req.tsNs) / 1e6) };
    }
    const id = this.diameterId(m, d, now);
    if (d.request) this.pending.set(key, { id, tsNs: now }, now + REMEMBER_NS);
    return { id };
  }

  private diameterId(m: Message, d: DiameterInfo, now: bigint): string {
    const sid = d.sessionId && this.bounded(d.sessionId);
    if (sid) {
      const known = this.sessions.get(sid, now);
      if (known) return this.callKey(known, now);
    }
    const callId = this.callIdOf(d, now);
    if (callId) {
      if (sid) this.sessions.set(sid, callId, now + REMEMBER_NS);
      return this.callKey(callId, now);
    }
    if (sid) return sid;
    const [a, b] = [hostPort(m.src), hostPort(m.dst)].sort();
    return `diameter:${a}-${b}`;
  }

  /** The Call-ID of the SIP call a Diameter message serves, by charging id or registering user. */
  private callIdOf(d: DiameterInfo, now: bigint): string | undefined {
    const charging = find3gpp(d.avps, 505) ?? find3gpp(d.avps, 841); // AF-Charging-Identifier, IMS-Charging-Identifier
    if (charging) {
      const hit = this.icids.get(boundedText(charging.text('latin1')), now);
      if (hit) return hit;
    }
    if (d.applicationId === APP_CX || d.applicationId === APP_SH) {
      const users = findAllAvps(d.avps, 601, VENDOR_3GPP);
      const userName = findAvp(d.avps, 1);
      if (userName) users.push(userName);
      for (const a of users) {
        const hit = this.registering.get(identityKey(a.text('utf8')), now);
        if (hit) return hit;
      }
    }
    return undefined;
  }

  private maybeSweep(now: bigint): void {
    if (++this.sinceSweep < 1024) return;
    this.sinceSweep = 0;
    this.icids.sweep(now);
    this.registering.sweep(now);
    this.sessions.sweep(now);
    this.pending.sweep(now);
    this.keys.sweep(now);
    this.endedKeys.sweep(now);
  }

  stats() {
    return {
      idsCut: this.idsCut,
      keyed: this.keyed,
      keysEvicted: this.keys.evicted + this.endedKeys.evicted,
      icids: this.icids.size,
      registering: this.registering.size,
      sessions: this.sessions.size,
      pendingRequests: this.pending.size,
      keys: this.keys.size + this.endedKeys.size,
    };
  }
}
