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
  /** The icid-value of its P-Charging-Vector (RFC 7315): the IMS charging id Diameter messages carry too. */
  icid?: string;
}

/**
 * `INVITE sip:bob@x` or `200 OK`: the start line without its SIP version, made when asked (tail and
 * the control socket show it; HEP does not).
 */
export function sipSummary(sip: SipInfo): string {
  if (sip.method !== undefined) return `${sip.method} ${sip.requestUri}`;
  const code = String(sip.statusCode).padStart(3, '0'); // the three digits as they were: 099 too
  return sip.reason ? `${code} ${sip.reason}` : code;
}

const LF = 0x0a;
const CR = 0x0d;
const MAX_SCAN = 16 * 1024; // headers that matter sit near the top; bodies are never scanned

// Start-line recognition, shared with the stream framer (src/stream/sip-framer.ts).
const METHODS = ['INVITE', 'ACK', 'BYE', 'CANCEL', 'OPTIONS', 'REGISTER', 'PRACK', 'SUBSCRIBE', 'NOTIFY', 'PUBLISH', 'INFO', 'REFER', 'MESSAGE', 'UPDATE'];
const START_TOKENS = [...METHODS.map((m) => Buffer.from(m + ' ')), Buffer.from('SIP/2.0 ')];
// RFC 3261 says a method is any token; the list above is what a start line must begin with for us to trust it.

/** START_TOKENS by their first byte: what begins a message is compared with the one or two that begin as it does. */
const START_TOKENS_BY_FIRST_BYTE = Array.from({ length: 256 }, (_, c) => START_TOKENS.filter((tok) => tok[0] === c));

/** True if `buf[off..]` begins like a SIP request or status line. Needs at most 10 bytes. */
export function startsLikeSip(buf: Buffer, off = 0): boolean {
  if (off >= buf.length) return false;
  for (const tok of START_TOKENS_BY_FIRST_BYTE[buf[off]]) if (bytesAt(buf, off, tok)) return true;
  return false;
}

/** Are `bytes` at buf[off..]? Byte by byte: compare() is a native call of about 100 ns, and every message and push asks. */
export function bytesAt(buf: Buffer, off: number, bytes: Buffer): boolean {
  if (buf.length - off < bytes.length) return false;
  for (let i = 0; i < bytes.length; i++) if (buf[off + i] !== bytes[i]) return false;
  return true;
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
  if (!bytesAt(buf, versionAt, SIP_VERSION)) return -1; // up to lf - 1: CR checked above
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

/**
 * Is `lower` (lower case) at buf[from..], its letters in any case and every other byte exactly? The
 * caller has checked there are lower.length bytes: one comparison, no trimming or string.
 */
export function nameIs(buf: Buffer, from: number, lower: string): boolean {
  for (let i = 0; i < lower.length; i++) {
    const c = buf[from + i];
    const t = lower.charCodeAt(i);
    if (c !== t && !(t >= 0x61 && t <= 0x7a && c === t - 0x20)) return false;
  }
  return true;
}

/** Is buf[from..to), trailing blanks aside, the header name `lower` (lower case) in any case? Compares bytes: no string per header. */
export function headerNameIs(buf: Buffer, from: number, to: number, lower: string): boolean {
  while (to > from && (buf[to - 1] === 0x20 || buf[to - 1] === 0x09)) to--;
  return to - from === lower.length && nameIs(buf, from, lower);
}

/**
 * Content-Length (or compact `l`) of the header block at buf[from..headerEnd) (headerEnd: where its
 * CRLFCRLF is), or -1 if absent or malformed. Reads each line once; no view of the block is made.
 */
export function contentLength(buf: Buffer, headerEnd: number, from = 0): number {
  let line = buf.indexOf(LF, from) + 1; // skip the start line
  while (line > 0 && line < headerEnd) {
    const next = buf.indexOf(LF, line) + 1 || headerEnd;
    const c = buf[line] | 0x20;
    if (c === 0x6c /* l */ || c === 0x63 /* c */) {
      const colon = colonInLine(buf, line, next);
      if (colon > 0) {
        if (headerNameIs(buf, line, colon, 'content-length') || headerNameIs(buf, line, colon, 'l')) return digitsIn(buf, colon + 1, next);
      }
    }
    line = next;
  }
  return -1;
}

/** Most line feeds a HeaderLines holds: parseSip searches for those of any further lines. */
const INDEXED_LINE_FEEDS = 64;

/**
 * The line feeds of a message's header block, as the walk that framed it found them (headerBlock):
 * parseSip reads the header lines from them instead of searching for each line's end again. Valid
 * for `message`, the payload they were found in, during the callback that has it.
 */
export class HeaderLines {
  /** Offsets in `message` of its first `count` line feeds, in order: the start line's, each header line's, the empty line's. */
  readonly lineFeeds = new Int32Array(INDEXED_LINE_FEEDS);
  count = 0;
  message?: Buffer;
}

/**
 * The header block of the message at buf[from..], whose start line ends at the LF `lf` (-1: none
 * yet), read in one walk over its lines: returns where its CRLFCRLF is (what buf.indexOf(CRLFCRLF,
 * from) finds), or -1; and leaves in `found` its Content-Length as contentLength() reads it, and the
 * line feeds it went through. One native search per line, where a search for CRLFCRLF and then a
 * walk for Content-Length made two passes.
 */
export function headerBlock(buf: Buffer, from: number, lf: number, found: { contentLength: number; lines: HeaderLines }): number {
  let length = -1;
  let lengthSeen = false;
  const feeds = found.lines.lineFeeds;
  let count = 0;
  for (let q = lf; q >= 0; ) {
    if (count < feeds.length) feeds[count++] = q - from;
    if (buf[q + 1] === CR && buf[q + 2] === LF && buf[q - 1] === CR && q - 1 >= from) {
      if (count < feeds.length) feeds[count++] = q + 2 - from;
      found.lines.count = count;
      found.contentLength = length;
      return q - 1;
    }
    const line = q + 1;
    const next = buf.indexOf(LF, line);
    const c = buf[line] | 0x20;
    if (!lengthSeen && (c === 0x6c /* l */ || c === 0x63 /* c */)) {
      const end = next < 0 ? buf.length : next + 1;
      const colon = colonInLine(buf, line, end);
      // The first Content-Length line decides, as in contentLength().
      if (colon > 0 && (headerNameIs(buf, line, colon, 'content-length') || headerNameIs(buf, line, colon, 'l'))) {
        length = digitsIn(buf, colon + 1, end);
        lengthSeen = true;
      }
    }
    q = next;
  }
  return -1;
}

/** Is every byte CR or LF (a keep-alive, RFC 5626 "double CRLF")? */
export function isKeepAlive(data: Buffer): boolean {
  for (let i = 0; i < data.length; i++) if (data[i] !== 0x0d && data[i] !== 0x0a) return false;
  return true;
}


/** JavaScript's whitespace (String.prototype.trim, regex \s) among latin1 characters. */
function isSpace(c: number): boolean {
  return c === 0x20 || (c >= 0x09 && c <= 0x0d) || c === 0xa0;
}

/** Where buf[from..to) begins once leading whitespace (as .trim() sees it) is skipped. */
function skipSpace(buf: Buffer, from: number, to: number): number {
  while (from < to && isSpace(buf[from])) from++;
  return from;
}

/** Where buf[from..to) ends once trailing whitespace is cut. */
function cutSpace(buf: Buffer, from: number, to: number): number {
  while (to > from && isSpace(buf[to - 1])) to--;
  return to;
}

/** Where the run of digits at buf[from..to) ends. */
function digitsEnd(buf: Buffer, from: number, to: number): number {
  while (from < to && buf[from] >= 0x30 && buf[from] <= 0x39) from++;
  return from;
}

/** Where the run of non-whitespace at buf[from..to) ends. */
function tokenEnd(buf: Buffer, from: number, to: number): number {
  while (from < to && !isSpace(buf[from])) from++;
  return from;
}

/** The number the digits buf[from..to) spell, as Number() reads their text (exact up to 15 digits, the text beyond). */
function digitsValue(buf: Buffer, from: number, to: number): number {
  if (to - from > 15) return Number(buf.toString('latin1', from, to));
  let n = 0;
  for (let i = from; i < to; i++) n = n * 10 + buf[i] - 0x30;
  return n;
}

/** Whether buf[from..to) is the latin1 text `text`: compared byte by byte, no string made. */
function spells(buf: Buffer, from: number, to: number, text: string): boolean {
  if (text.length !== to - from) return false;
  for (let i = 0; i < text.length; i++) if (buf[from + i] !== text.charCodeAt(i)) return false;
  return true;
}

/** The method buf[from..to) names: one of METHODS' strings when it is one (no string per message), else its text. */
function methodName(buf: Buffer, from: number, to: number): string {
  for (let k = 0; k < METHODS.length; k++) if (spells(buf, from, to, METHODS[k])) return METHODS[k];
  return buf.toString('latin1', from, to);
}

/** Reason phrases of RFC 3261 section 21 by status code: a response that uses its code's makes no string for it. */
const REASONS = new Map<number, string>([
  [100, 'Trying'], [180, 'Ringing'], [181, 'Call Is Being Forwarded'], [182, 'Queued'], [183, 'Session Progress'],
  [200, 'OK'], [202, 'Accepted'], [401, 'Unauthorized'], [403, 'Forbidden'], [404, 'Not Found'], [407, 'Proxy Authentication Required'],
  [408, 'Request Timeout'], [480, 'Temporarily Unavailable'], [481, 'Call/Transaction Does Not Exist'], [486, 'Busy Here'],
  [487, 'Request Terminated'], [488, 'Not Acceptable Here'], [500, 'Server Internal Error'], [503, 'Service Unavailable'], [603, 'Decline'],
]);

/** The reason phrase buf[from..to) of a `code` response: REASONS' string when it is its code's, else its text. */
function reasonPhrase(buf: Buffer, from: number, to: number, code: number): string {
  const r = REASONS.get(code);
  return r !== undefined && spells(buf, from, to, r) ? r : buf.toString('latin1', from, to);
}

/** The number buf[from..to) holds once trimmed as .trim() trims, if it is digits only (what /^\d+$/ accepts); else -1. No string. */
function digitsIn(buf: Buffer, from: number, to: number): number {
  from = skipSpace(buf, from, to);
  to = cutSpace(buf, from, to);
  return to > from && digitsEnd(buf, from, to) === to ? digitsValue(buf, from, to) : -1;
}

const ICID = 'icid-value';
const isBlank = (c: number) => c === 0x20 || c === 0x09;
/** What ends an icid-value: `;`, `"`, `,` or whitespace as a regex's \s sees it among latin1 characters. */
const endsIcid = (c: number) => c === 0x3b || c === 0x22 || c === 0x2c || isSpace(c);

/**
 * The value of the first non-empty `icid-value` parameter in the header value buf[from..to): its
 * name in any case (SIP parameter names are case-insensitive), at the start of the value or of a
 * `;`-separated parameter, so that no other parameter whose name or value ends in it is taken; the
 * value without its opening quote, up to `;`, `"`, `,` or whitespace. One pass over the bytes.
 */
function icidParameter(buf: Buffer, from: number, to: number): string | undefined {
  for (let at = from; at < to; at++) {
    while (at < to && isBlank(buf[at])) at++;
    if (to - at > ICID.length && nameIs(buf, at, ICID)) {
      let p = at + ICID.length;
      while (p < to && isBlank(buf[p])) p++;
      if (p < to && buf[p] === 0x3d) {
        p++;
        while (p < to && isBlank(buf[p])) p++;
        if (p < to && buf[p] === 0x22) p++;
        let end = p;
        while (end < to && !endsIcid(buf[end])) end++;
        if (end > p) return buf.toString('latin1', p, end);
      }
    }
    while (at < to && buf[at] !== 0x3b) at++;
  }
  return undefined;
}

const SIP_VERSION_SP = Buffer.from('SIP/2.0 ');
const SP_SIP_VERSION = Buffer.from(' SIP/2.0');

/**
 * The start line buf[0..end) (no trailing blanks), checked byte by byte: what /^SIP\/2\.0 (\d{3})(?: (.*))?$/
 * and /^([A-Z]+) (\S+) SIP\/2\.0$/ accept, without their match arrays. Of its text only the
 * request-URI, or a reason phrase not in REASONS, becomes a string.
 */
function parseStartLine(buf: Buffer, end: number, info: SipInfo): boolean {
  if (end >= SIP_VERSION_SP.length && bytesAt(buf, 0, SIP_VERSION_SP)) {
    if (end < 11 || !isDigit(buf[8]) || !isDigit(buf[9]) || !isDigit(buf[10])) return false;
    if (end > 11) {
      if (buf[11] !== SP) return false;
      for (let i = 12; i < end; i++) if (buf[i] === CR) return false; // `.` matches neither CR nor LF (none left)
    }
    info.statusCode = (buf[8] - 0x30) * 100 + (buf[9] - 0x30) * 10 + (buf[10] - 0x30);
    info.reason = end > 11 ? reasonPhrase(buf, 12, end, info.statusCode) : '';
    return true;
  }
  let space = 0;
  while (space < end && buf[space] !== SP) space++;
  if (space === 0 || space === end || end - space - 1 <= 8 || !bytesAt(buf, end - SP_SIP_VERSION.length, SP_SIP_VERSION)) return false;
  for (let i = 0; i < space; i++) if (buf[i] < 0x41 || buf[i] > 0x5a) return false;
  const uriEnd = end - SP_SIP_VERSION.length;
  for (let i = space + 1; i < uriEnd; i++) if (isSpace(buf[i])) return false;
  info.method = methodName(buf, 0, space); // no string per message for a known method
  info.requestUri = buf.toString('latin1', space + 1, uriEnd);
  return true;
}

/**
 * Parses the start line and the Call-ID, CSeq, Content-Length (long and compact forms) and
 * P-Charging-Vector headers, in one walk over the header lines; `headerLines`: the line feeds the
 * message's framer found (ignored unless found in `buf`). Null if not SIP.
 */
export function parseSip(buf: Buffer, headerLines?: HeaderLines): SipInfo | null {
  if (!startsLikeSip(buf)) return null;
  // The line feeds its framer found, when they are this message's: each line end past them is searched for.
  const feeds = headerLines?.message === buf ? headerLines.lineFeeds : undefined;
  const known = feeds ? headerLines!.count : 0;
  let k = 0;
  const firstEnd = k < known ? feeds![k++] : buf.indexOf(LF);
  // Every field set, in one order: one object shape for every message, for the stages that read it.
  const info: SipInfo = {
    method: undefined, requestUri: undefined, statusCode: undefined, reason: undefined, callId: undefined,
    cseqNumber: undefined, cseqMethod: undefined, contentLength: undefined, icid: undefined,
  };
  // The start line without trailing whitespace, as .trimEnd() cuts it.
  if (!parseStartLine(buf, cutSpace(buf, 0, firstEnd < 0 ? Math.min(buf.length, 512) : firstEnd), info)) return null;
  if (firstEnd < 0) return info;

  const end = Math.min(buf.length, MAX_SCAN);
  for (let line = firstEnd + 1; line < end; ) {
    let next = k < known ? feeds![k++] : buf.indexOf(LF, line);
    if (next < 0 || next > end) next = end;
    if (next - line <= 1) break; // empty line: end of headers
    // Only Call-ID/i, CSeq, Content-Length/l and P-Charging-Vector matter: look at the first letter, then the name's length, before comparing a name.
    const c = buf[line] | 0x20;
    const colon = c === 0x63 || c === 0x69 || c === 0x6c || c === 0x70 ? colonInLine(buf, line, next) : -1;
    if (colon > line) {
      let nameEnd = colon;
      while (nameEnd > line && (buf[nameEnd - 1] === 0x20 || buf[nameEnd - 1] === 0x09)) nameEnd--;
      const n = nameEnd - line;
      const header =
        n === 1 ? (c === 0x69 ? 'call-id' : c === 0x6c ? 'content-length' : '')
        : n === 7 && nameIs(buf, line, 'call-id') ? 'call-id'
        : n === 14 && nameIs(buf, line, 'content-length') ? 'content-length'
        : n === 4 && nameIs(buf, line, 'cseq') ? 'cseq'
        : n === 17 && nameIs(buf, line, 'p-charging-vector') ? 'p-charging-vector'
        : '';
      if (header === 'p-charging-vector') info.icid ??= icidParameter(buf, colon + 1, next); // the first header that has one
      else if (header) {
        // Values are read as bytes, trimmed as .trim() would: only the Call-ID and CSeq method become text.
        const from = skipSpace(buf, colon + 1, next);
        const to = cutSpace(buf, from, next);
        if (header === 'call-id') info.callId = buf.toString('latin1', from, to);
        else if (header === 'content-length') {
          const length = digitsIn(buf, from, to);
          if (length >= 0) info.contentLength = length;
        } else {
          // `CSeq: 1 INVITE`: digits, blanks, a method (anything after it is ignored)
          const number = digitsEnd(buf, from, to);
          const method = skipSpace(buf, number, to);
          const methodEnd = method > number ? tokenEnd(buf, method, to) : method;
          if (number > from && methodEnd > method) {
            info.cseqNumber = digitsValue(buf, from, number);
            info.cseqMethod = methodName(buf, method, methodEnd);
          }
        }
      }
    }
    line = next + 1;
  }
  return info;
}
