/**
 * Selective forwarding, the same for `run` and `tail`: include and exclude filters by SIP method,
 * user, Call-ID, address and port, and how far a match reaches (as Kamailio siptrace's m/t/d modes):
 *
 * - Include filters of different kinds must all match (--user A --method INVITE: A's INVITEs); values
 *   of one kind are alternatives. Without include filters every message is included.
 * - A message matching any exclude filter is left out. Exclusion wins over inclusion.
 * - A method is the CSeq method: it selects the requests of that method and their responses.
 *   --exclude-method leaves out exactly those, in every mode (in-dialog OPTIONS, NOTIFY keep-alives).
 * - message mode: each message on its own.
 * - transaction mode: a match (include or exclude) holds for the rest of its transaction (Call-ID and
 *   CSeq; an ACK belongs to its INVITE's), e.g. the responses to a request whose Request-URI matched.
 * - dialog mode: a match holds for the rest of its Call-ID's dialog, until the final response to its
 *   BYE (or to the request, when no dialog came of it), or until it is idle for the timeout. Diameter
 *   messages correlated to the call (src/enrich/correlation.ts gives them its Call-ID as correlation id,
 *   or the call's operator key) follow it.
 * - Transactions and dialogs are tracked by Call-ID, not by correlation id: an operator key
 *   (--correlation-header) may first appear mid-dialog.
 * - Connection events follow the messages of their connection (src/enrich/connection-events.ts).
 *
 * State is kept only for transactions and dialogs a filter matched, bounded in entries (the least
 * recently seen go first, counted) and in time.
 */
import { BlockList, isIP } from 'node:net';
import type { Endpoint } from '../stream/message.js';
import type { SipInfo } from '../protocols/sip.js';
import { colonInLine, headerNameIs } from '../protocols/sip.js';
import { identityKey } from './correlation.js';
import { globToRegExp } from './container-filter.js';
import { ExpiringMap, type Expiring } from './expiring-map.js';

export const SELECTION_MODES = ['message', 'transaction', 'dialog'] as const;
export type SelectionMode = (typeof SELECTION_MODES)[number];

/** The options of `run` and `tail`, as commander names them. */
export interface SelectionOptions {
  method?: string[];
  excludeMethod?: string[];
  /** Globs over From, To, Request-URI and P-Asserted-Identity: `user@host` or the user alone. */
  user?: string[];
  excludeUser?: string[];
  callId?: string[];
  excludeCallId?: string[];
  /** IP addresses or CIDR prefixes, source or destination. */
  address?: string[];
  excludeAddress?: string[];
  port?: number[];
  excludePort?: number[];
  selectionMode?: SelectionMode;
  /** Seconds a transaction's or dialog's state lives after its last message. */
  selectionTimeout?: number;
  /** Transactions or dialogs remembered at once. */
  selectionMaxEntries?: number;
}

export const DEFAULT_SELECTION_TIMEOUT_S = 3600;
export const DEFAULT_SELECTION_MAX_ENTRIES = 100_000;
/** After a transaction's or dialog's last final response: long enough for its ACK and retransmissions (64*T1). */
const END_LINGER_MS = 32_000;
const SWEEP_EVERY = 1024;
/** Of a Call-ID or correlation id, what keys a table entry: with the default bound, at most ~40 MB of table. */
const MAX_KEY_CHARS = 256;

/** What selection looks at: the agent's messages and tail's events alike. */
export interface Selectable {
  src: Endpoint;
  dst: Endpoint;
  payload: Buffer;
  /** Undefined for Diameter. */
  sip?: SipInfo;
  correlationId: string;
  nowMs: number;
}

/** Values of one kind: exact ones looked up, those with `*` or `?` tried as one alternation. */
class Globs {
  private readonly exact = new Set<string>();
  private readonly patterns?: RegExp;

  constructor(globs: string[]) {
    const patterns: string[] = [];
    for (const g of globs) {
      if (/[*?]/.test(g)) patterns.push(globToRegExp(g).source);
      else this.exact.add(g);
    }
    if (patterns.length) this.patterns = new RegExp(patterns.join('|'));
  }

  has(v: string): boolean {
    return this.exact.has(v) || (this.patterns !== undefined && this.patterns.test(v));
  }
}

/** Addresses whose verdict is remembered: the few a host talks to are looked up once. */
const MAX_CACHED_ADDRESSES = 4096;

/**
 * IP addresses and prefixes. BlockList.check costs microseconds a call, so each address's verdict
 * is remembered (bounded: the cache is emptied when full, so a flood of distinct addresses costs
 * BlockList's price per message, no more memory).
 */
class Addresses {
  private readonly list = new BlockList();
  private readonly verdicts = new Map<string, boolean>();

  constructor(values: string[]) {
    for (const v of values) {
      const [ip, bits] = v.split('/');
      const family = isIP(ip) === 6 ? 'ipv6' : 'ipv4';
      if (bits === undefined) this.list.addAddress(ip, family);
      else this.list.addSubnet(ip, Number(bits), family);
    }
  }

  has(ip: string): boolean {
    let v = this.verdicts.get(ip);
    if (v === undefined) {
      const family = isIP(ip);
      v = family !== 0 && this.list.check(ip, family === 6 ? 'ipv6' : 'ipv4');
      if (this.verdicts.size >= MAX_CACHED_ADDRESSES) this.verdicts.clear();
      this.verdicts.set(ip, v);
    }
    return v;
  }
}

/** `10.0.0.1`, `10.0.0.0/8`, `::1`, `fd00::/8`; anything else is an error naming the option. */
export function checkAddress(flag: string, v: string): string {
  const [ip, bits, extra] = v.split('/');
  const version = isIP(ip);
  const max = version === 6 ? 128 : 32;
  if (!version || extra !== undefined || (bits !== undefined && !(/^\d+$/.test(bits) && Number(bits) <= max)))
    throw new Error(`${flag} must be an IP address or a CIDR prefix (10.0.0.0/8, fd00::/8), got "${v}"`);
  return v;
}

interface Kinds {
  methods?: Set<string>;
  users?: Globs;
  callIds?: Globs;
  addresses?: Addresses;
  ports?: Set<number>;
}

function kinds(methods?: string[], users?: string[], callIds?: string[], addresses?: string[], ports?: number[]): Kinds | undefined {
  const k: Kinds = {
    methods: methods?.length ? new Set(methods.map((m) => m.toUpperCase())) : undefined,
    users: users?.length ? new Globs(users.map((u) => u.toLowerCase())) : undefined,
    callIds: callIds?.length ? new Globs(callIds) : undefined,
    addresses: addresses?.length ? new Addresses(addresses) : undefined,
    ports: ports?.length ? new Set(ports) : undefined,
  };
  return Object.values(k).some((v) => v !== undefined) ? k : undefined;
}

const MAX_HEADER_SCAN = 16 * 1024;

/**
 * The identities a SIP message names, as `user@host` (lower case, no scheme or parameters): the
 * Request-URI, From, To and each P-Asserted-Identity. Reads the header block once, line by line.
 */
export function sipIdentities(payload: Buffer, sip: SipInfo): string[] {
  const out: string[] = [];
  if (sip.requestUri) out.push(identityKey(sip.requestUri));
  const end = Math.min(payload.length, MAX_HEADER_SCAN);
  for (let line = payload.indexOf(0x0a) + 1; line > 0 && line < end; ) {
    let next = payload.indexOf(0x0a, line);
    if (next < 0 || next > end) next = end;
    if (next - line <= 1) break; // the blank line: end of headers
    const c = payload[line] | 0x20;
    // f(rom), t(o), p-asserted-identity: the first letter before the name, bytes before a string
    if (c === 0x66 || c === 0x74 || c === 0x70) {
      const colon = colonInLine(payload, line, next);
      if (colon > line) {
        if (c === 0x70) {
          if (headerNameIs(payload, line, colon, 'p-asserted-identity')) for (const v of payload.toString('latin1', colon + 1, next).split(',')) out.push(identityKey(v));
        } else if (headerNameIs(payload, line, colon, c === 0x66 ? 'from' : 'to') || headerNameIs(payload, line, colon, c === 0x66 ? 'f' : 't')) {
          out.push(identityKey(payload.toString('latin1', colon + 1, next)));
        }
      }
    }
    line = next + 1;
  }
  return out;
}

// A transaction's or dialog's state, as bits of its table entry's value (no object of its own: one
// allocation per entry, 8-10 ns a message less than an object in dialog mode, measured 2026-12-02).
/** An include filter matched one of its messages. */
const INCLUDED = 1;
/** An exclude filter matched one of its messages. */
const EXCLUDED = 2;
/** An INVITE, SUBSCRIBE or REFER was seen: a dialog may follow the first final response. */
const DIALOG_REQUEST = 4;
/** Its last final response was seen: it lives on only for the linger. */
const ENDED = 8;

const DIALOG_REQUESTS = new Set(['INVITE', 'SUBSCRIBE', 'REFER']);
/** Requests that belong to what came before them: they do not open again a transaction or dialog that ended. */
const CLOSING_REQUESTS = new Set(['ACK', 'BYE', 'CANCEL']);

export interface SelectionStats {
  /** Messages (and connection events) left out on purpose, not lost: by these filters, or by the container filters. */
  filtered: { selection: number; container: number };
  /** Transactions or dialogs remembered now. */
  entries: number;
  /** Remembered transactions or dialogs forgotten early, the table being full. */
  evicted: number;
}

/** A SIP message by its Call-ID; Diameter by its correlation id, which is its call's Call-ID (src/enrich/correlation.ts). */
function callIdMatches(callIds: Globs, m: Selectable): boolean {
  const id = m.sip ? m.sip.callId : m.correlationId;
  return id !== undefined && callIds.has(id);
}

/** A transaction's or dialog's entry in the table: its state and its deadline, in capture ms. */
type Tracked = Expiring<number, number>;

export class Selection {
  /** False when no filter is set: every message is selected at no cost. */
  readonly active: boolean;
  private readonly include?: Kinds;
  private readonly exclude?: Kinds;
  private readonly excludeMethods?: Set<string>;
  private readonly needIdentities: boolean;
  private readonly mode: SelectionMode;
  private readonly timeoutMs: number;
  /** By Call-ID (dialog mode) or Call-ID, CSeq and method (transaction mode); Diameter by its correlation id. */
  private readonly entries: ExpiringMap<number, number>;
  /**
   * Dialog mode: the operator's key of a remembered dialog (--correlation-header, --correlation-regex)
   * -> its Call-ID, so that the Diameter tied to the call, which carries the key, follows it.
   */
  private readonly keyedDialogs: ExpiringMap<string, number>;
  private sinceSweep = 0;
  private readonly counters = { selection: 0, container: 0 };

  constructor(o: SelectionOptions) {
    this.include = kinds(o.method, o.user, o.callId, o.address, o.port);
    // --exclude-method never reaches past its own transaction: see the header comment.
    this.exclude = kinds(undefined, o.excludeUser, o.excludeCallId, o.excludeAddress, o.excludePort);
    this.excludeMethods = o.excludeMethod?.length ? new Set(o.excludeMethod.map((m) => m.toUpperCase())) : undefined;
    this.needIdentities = !!(this.include?.users || this.exclude?.users);
    this.mode = o.selectionMode ?? 'message';
    this.timeoutMs = (o.selectionTimeout ?? DEFAULT_SELECTION_TIMEOUT_S) * 1000;
    this.entries = new ExpiringMap(o.selectionMaxEntries ?? DEFAULT_SELECTION_MAX_ENTRIES);
    this.keyedDialogs = new ExpiringMap(o.selectionMaxEntries ?? DEFAULT_SELECTION_MAX_ENTRIES);
    this.active = !!(this.include || this.exclude || this.excludeMethods);
  }

  /** Whether `m` is forwarded; counts it when not. Call once per message, in capture order. */
  select(m: Selectable): boolean {
    if (this.excludeMethods && m.sip) {
      const method = m.sip.method ?? m.sip.cseqMethod;
      if (method !== undefined && this.excludeMethods.has(method)) return this.filtered();
    }
    if (!this.include && !this.exclude) return true;
    const identities = this.needIdentities && m.sip ? sipIdentities(m.payload, m.sip) : undefined;
    const excluded = this.exclude !== undefined && this.matchesAny(this.exclude, m, identities);
    const included = this.include !== undefined && !excluded && this.matchesAll(this.include, m, identities);
    const key = this.mode === 'message' ? undefined : this.key(m);
    let tracked = key === undefined ? undefined : this.tracked(key, m);
    if (key !== undefined && (excluded || included)) {
      tracked ??= this.entries.set(key, 0, 0);
      tracked.value |= excluded ? EXCLUDED : INCLUDED;
    }
    if (tracked) {
      this.follow(tracked, m);
      // The operator's key (it may come mid-dialog) leads the Diameter of the call to its Call-ID.
      if (this.mode === 'dialog' && m.sip?.callId && m.correlationId !== m.sip.callId) this.keyedDialogs.set(bounded(m.correlationId), key!, tracked.until);
    }
    const state = tracked?.value ?? 0;
    if (excluded || state & EXCLUDED) return this.filtered();
    if (included || state & INCLUDED || !this.include) return true;
    return this.filtered();
  }

  /**
   * Whether a connection event (src/enrich/connection-events.ts) of a connection that carried no
   * SIP or Diameter goes out: judged by its ends alone. Include filters of another kind (method,
   * user, Call-ID) leave it out, nothing tying it to what they select.
   */
  selectsEnds(src: Endpoint, dst: Endpoint): boolean {
    if (this.exclude && endsMatchAny(this.exclude, src, dst)) return false;
    const k = this.include;
    if (!k) return true;
    return !k.methods && !k.users && !k.callIds && endsMatchAll(k, src, dst);
  }

  /** A connection event left out (its connection carried nothing selected), counted as a message is. */
  connectionFiltered(): void {
    this.counters.selection++;
  }

  /** The container filter's verdict (src/enrich/container-filter.ts), counted the same way. */
  containerFiltered(): void {
    this.counters.container++;
  }

  private filtered(): false {
    this.counters.selection++;
    return false;
  }

  /**
   * The transaction or dialog of `m`, by its Call-ID, not its correlation id: an operator's key that
   * appears mid-dialog changes the latter. Diameter (dialog mode) by its correlation id: its call's
   * Call-ID, or the call's operator key (see keyedDialogs).
   */
  private key(m: Selectable): string | undefined {
    if (!m.sip) return this.mode === 'dialog' ? bounded(m.correlationId) : undefined; // transaction mode: each Diameter message on its own
    const id = bounded(m.sip.callId || m.correlationId);
    if (this.mode === 'dialog') return id;
    if (m.sip.cseqNumber === undefined) return undefined;
    const method = m.sip.cseqMethod === 'ACK' ? 'INVITE' : m.sip.cseqMethod;
    return `${id}\n${m.sip.cseqNumber}\n${method}`;
  }

  /** The live entry of `key`, or for Diameter that of the dialog its operator key leads to. */
  private tracked(key: string, m: Selectable): Tracked | undefined {
    if (++this.sinceSweep >= SWEEP_EVERY) {
      this.sinceSweep = 0;
      this.entries.sweep(m.nowMs);
      this.keyedDialogs.sweep(m.nowMs);
    }
    const tracked = this.entries.use(key, m.nowMs);
    if (tracked || m.sip || this.keyedDialogs.size === 0) return tracked;
    const callId = this.keyedDialogs.get(key, m.nowMs);
    return callId === undefined ? undefined : this.entries.use(callId, m.nowMs);
  }

  /**
   * Moves the entry's deadline: the timeout after each message, a short linger once it has ended
   * (which a new request, e.g. a REGISTER refresh on the same Call-ID, opens again).
   */
  private follow(t: Tracked, m: Selectable): void {
    const sip = m.sip;
    if (sip?.method && !CLOSING_REQUESTS.has(sip.method)) t.value &= ~ENDED;
    if (sip?.method && DIALOG_REQUESTS.has(sip.method)) t.value |= DIALOG_REQUEST;
    if (t.value & ENDED) return;
    t.until = m.nowMs + this.timeoutMs;
    if (sip?.statusCode === undefined || sip.statusCode < 200) return;
    const ends =
      this.mode === 'transaction' ||
      sip.cseqMethod === 'BYE' ||
      !(t.value & DIALOG_REQUEST) || // a REGISTER, OPTIONS, MESSAGE: no dialog comes of it
      (sip.cseqMethod === 'INVITE' && sip.statusCode >= 300); // a failed INVITE
    if (ends) {
      t.value |= ENDED;
      t.until = m.nowMs + END_LINGER_MS;
    }
  }

  private matchesAll(k: Kinds, m: Selectable, identities?: string[]): boolean {
    if (!endsMatchAll(k, m.src, m.dst)) return false;
    if (k.callIds && !callIdMatches(k.callIds, m)) return false;
    if (k.methods || k.users) {
      const sip = m.sip;
      if (!sip) return false;
      if (k.methods && !k.methods.has((sip.method ?? sip.cseqMethod)!)) return false;
      if (k.users && !identitiesMatch(k.users, identities!)) return false;
    }
    return true;
  }

  private matchesAny(k: Kinds, m: Selectable, identities?: string[]): boolean {
    if (endsMatchAny(k, m.src, m.dst)) return true;
    if (k.callIds && callIdMatches(k.callIds, m)) return true;
    const sip = m.sip;
    if (!sip) return false;
    if (k.methods && k.methods.has((sip.method ?? sip.cseqMethod)!)) return true;
    return !!k.users && identitiesMatch(k.users, identities!);
  }

  stats(): SelectionStats {
    return { filtered: { ...this.counters }, entries: this.entries.size, evicted: this.entries.evicted };
  }
}

/** Of a Call-ID or correlation id, at most MAX_KEY_CHARS: hostile Call-IDs cannot make the table large. */
const bounded = (id: string) => (id.length > MAX_KEY_CHARS ? id.slice(0, MAX_KEY_CHARS) : id);

/** Each port and address filter of `k` that is set matches one of the ends. */
function endsMatchAll(k: Kinds, src: Endpoint, dst: Endpoint): boolean {
  return (!k.ports || k.ports.has(src.port) || k.ports.has(dst.port)) && (!k.addresses || k.addresses.has(src.ip) || k.addresses.has(dst.ip));
}

/** One port or address filter of `k` matches one of the ends. */
function endsMatchAny(k: Kinds, src: Endpoint, dst: Endpoint): boolean {
  return (!!k.ports && (k.ports.has(src.port) || k.ports.has(dst.port))) || (!!k.addresses && (k.addresses.has(src.ip) || k.addresses.has(dst.ip)));
}

/** A user glob matches an identity as `user@host` or its user part alone. */
function identitiesMatch(users: Globs, identities: string[]): boolean {
  for (const id of identities) {
    if (users.has(id)) return true;
    const at = id.lastIndexOf('@');
    if (at > 0 && users.has(id.slice(0, at))) return true;
  }
  return false;
}
