/** What routing and display need from a SIP message; nothing more is parsed. */
export interface SipInfo {
  method?: string;
  requestUri?: string;
  statusCode?: number;
  reason?: string;
  callId?: string;
  cseqNumber?: number;
  cseqMethod?: string;
  contentLength?: number;
  /** `INVITE sip:bob@x` or `200 OK` */
  summary: string;
}

const LF = 0x0a;
const CR = 0x0d;
const MAX_SCAN = 16 * 1024; // headers that matter sit near the top; bodies are never scanned

// Start-line recognition, shared with the stream framer (src/stream/sip-framer.ts).
const METHODS = ['INVITE', 'ACK', 'BYE', 'CANCEL', 'OPTIONS', 'REGISTER', 'PRACK', 'SUBSCRIBE', 'NOTIFY', 'PUBLISH', 'INFO', 'REFER', 'MESSAGE', 'UPDATE'];
const START_TOKENS = [...METHODS.map((m) => Buffer.from(m + ' ')), Buffer.from('SIP/2.0 ')];
// RFC 3261 says a method is any token; the list above is what a start line must begin with for us to trust it.

/** True if `buf[off..]` begins like a SIP request or status line. Needs at most 10 bytes. */
export function startsLikeSip(buf: Buffer, off = 0): boolean {
  for (const tok of START_TOKENS) {
    // The first byte first: compare() costs about 100 ns a call, and garbage calls this on every push.
    if (buf[off] === tok[0] && buf.length - off >= tok.length && buf.compare(tok, 0, tok.length, off, off + tok.length) === 0) return true;
  }
  return false;
}

/** Could `buf[off..]` still turn into a SIP start line once more bytes arrive? */
function couldStartSip(buf: Buffer, off: number): boolean {
  const n = buf.length - off;
  return START_TOKENS.some((tok) => n < tok.length && (n === 0 || buf[off] === tok[0]) && buf.compare(tok, 0, n, off, buf.length) === 0);
}

const SIP_VERSION = Buffer.from('SIP/2.0');
const SP = 0x20;
/** Longest request-URI looked back over when resynchronising on a request line. */
const MAX_URI_BYTES = 4096;
/** How far findStartLine reads from where a SIP/2.0 starts. */
export const START_LINE_LOOKAHEAD = 12;
/** Longest start line recognised: a line without its end after this many bytes is not one. */
export const MAX_START_LINE_BYTES = MAX_URI_BYTES + 32;

/**
 * Where the first complete SIP start line at or after `from` begins, or -1. A message on a stream
 * follows the previous body with no separator, so this looks anywhere, not only at line starts;
 * a whole start line is required (`SIP/2.0 ddd ` or `METHOD uri SIP/2.0` CRLF), not just a token.
 * It looks at each SIP/2.0 from `searchFrom` on: a search that found nothing may resume, with the
 * same or a later `from`, at START_LINE_LOOKAHEAD bytes before the end of what it saw.
 */
export function findStartLine(buf: Buffer, from: number, searchFrom = from): number {
  for (let p = buf.indexOf(SIP_VERSION, searchFrom); p >= 0; p = buf.indexOf(SIP_VERSION, p + 1)) {
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

/**
 * 1: a whole SIP start line begins at `off`; 0: it may, once more bytes arrive; -1: it does not.
 * `lf` is the first LF at or after `off` (-1 if none), for a caller that remembers it across pushes.
 */
export function startLineAt(buf: Buffer, off: number, lf?: number): 1 | 0 | -1 {
  if (!startsLikeSip(buf, off)) return couldStartSip(buf, off) ? 0 : -1;
  if (buf[off] === 0x53 && buf[off + 1] === 0x49 && buf[off + 2] === 0x50 && buf[off + 3] === 0x2f) {
    // SIP/2.0 ddd SP
    if (buf.length - off < 12) return 0;
    return isDigit(buf[off + 8]) && isDigit(buf[off + 9]) && isDigit(buf[off + 10]) && buf[off + 11] === SP ? 1 : -1;
  }
  // METHOD SP Request-URI SP SIP/2.0 CRLF
  lf ??= buf.indexOf(LF, off);
  if (lf < 0) return buf.length - off > MAX_START_LINE_BYTES ? -1 : 0;
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

/** Where the header name of the line buf[line..next) ends (its colon), or -1: looks no further than the line. */
export function colonInLine(buf: Buffer, line: number, next: number): number {
  for (let p = line; p < next; p++) if (buf[p] === 0x3a) return p;
  return -1;
}

/** Is buf[from..to), trailing blanks aside, the header name `lower` (lower case) in any case? Compares bytes: no string per header. */
export function headerNameIs(buf: Buffer, from: number, to: number, lower: string): boolean {
  while (to > from && (buf[to - 1] === 0x20 || buf[to - 1] === 0x09)) to--;
  if (to - from !== lower.length) return false;
  for (let i = 0; i < lower.length; i++) {
    const c = buf[from + i];
    const t = lower.charCodeAt(i);
    if (c !== t && !(t >= 0x61 && t <= 0x7a && c === t - 0x20)) return false;
  }
  return true;
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
        if (headerNameIs(buf, line, colon, 'content-length') || headerNameIs(buf, line, colon, 'l')) {
          const value = buf.toString('latin1', colon + 1, next).trim();
          return /^\d+$/.test(value) ? Number(value) : -1;
        }
      }
    }
    line = next;
  }
  return -1;
}

/** Is every byte CR or LF (a keep-alive, RFC 5626 "double CRLF")? */
export function isKeepAlive(data: Buffer): boolean {
  for (let i = 0; i < data.length; i++) if (data[i] !== 0x0d && data[i] !== 0x0a) return false;
  return true;
}


/** Parses the start line and the Call-ID / CSeq headers (long and compact forms). Null if not SIP. */
export function parseSip(buf: Buffer): SipInfo | null {
  if (!startsLikeSip(buf)) return null;
  const firstEnd = buf.indexOf(LF);
  const startLine = buf.toString('latin1', 0, firstEnd < 0 ? Math.min(buf.length, 512) : firstEnd).trimEnd();
  const info: SipInfo = { summary: startLine };
  if (startLine.startsWith('SIP/2.0 ')) {
    const m = /^SIP\/2\.0 (\d{3})(?: (.*))?$/.exec(startLine);
    if (!m) return null;
    info.statusCode = Number(m[1]);
    info.reason = m[2] ?? '';
    info.summary = `${m[1]} ${info.reason}`.trimEnd();
  } else {
    const m = /^([A-Z]+) (\S+) SIP\/2\.0$/.exec(startLine);
    if (!m) return null;
    info.method = m[1];
    info.requestUri = m[2];
    info.summary = `${m[1]} ${m[2]}`;
  }
  if (firstEnd < 0) return info;

  const end = Math.min(buf.length, MAX_SCAN);
  for (let line = firstEnd + 1; line < end; ) {
    let next = buf.indexOf(LF, line);
    if (next < 0 || next > end) next = end;
    if (next - line <= 1) break; // empty line: end of headers
    // Only Call-ID/i, CSeq and Content-Length/l matter: look at the first letter before decoding a name.
    const c = buf[line] | 0x20;
    const colon = c === 0x63 || c === 0x69 || c === 0x6c ? colonInLine(buf, line, next) : -1;
    if (colon > line) {
      if (headerNameIs(buf, line, colon, 'call-id') || headerNameIs(buf, line, colon, 'i')) info.callId = buf.toString('latin1', colon + 1, next).trim();
      else if (headerNameIs(buf, line, colon, 'content-length') || headerNameIs(buf, line, colon, 'l')) {
        const v = buf.toString('latin1', colon + 1, next).trim();
        if (/^\d+$/.test(v)) info.contentLength = Number(v);
      } else if (headerNameIs(buf, line, colon, 'cseq')) {
        const m = /^(\d+)\s+(\S+)/.exec(buf.toString('latin1', colon + 1, next).trim());
        if (m) {
          info.cseqNumber = Number(m[1]);
          info.cseqMethod = m[2];
        }
      }
    }
    line = next + 1;
  }
  return info;
}
