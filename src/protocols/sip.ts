import { colonInLine, startsLikeSip } from '../stream/sip-framer.js';

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
const MAX_SCAN = 16 * 1024; // headers that matter sit near the top; bodies are never scanned

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
      const name = buf.toString('latin1', line, colon).trim().toLowerCase();
      const value = () => buf.toString('latin1', colon + 1, next).trim();
      if (name === 'call-id' || name === 'i') info.callId = value();
      else if (name === 'content-length' || name === 'l') {
        const v = value();
        if (/^\d+$/.test(v)) info.contentLength = Number(v);
      } else if (name === 'cseq') {
        const m = /^(\d+)\s+(\S+)/.exec(value());
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
