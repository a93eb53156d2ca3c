/**
 * Sh, Rf, Dx and S6a decoded from messages built by the npm `diameter` package's own encoder: every
 * AVP must come back with the name and value it was built with (so src/protocols/diameter-dictionary.ts
 * names each of them as the specification does), and an S6a Authentication-Info comes out of the
 * default redaction with its E-UTRAN vectors masked and nothing else changed.
 *
 * The package's dictionary has no Sh application, none of the Sh or Cx/Dx AVPs (User-Identity,
 * Public-Identity, Server-Name...), and a few 3GPP entries that cannot encode (Event-Type without
 * the vendor bit, RAT-Type and SIP-Method first found under other vendors). Those are given to its
 * encoder below, from the specifications (TS 29.329, 29.229, 29.272, 32.299), not from our dictionary.
 */
import { createRequire } from 'node:module';
import { describe, expect, it } from 'vitest';
import { redactDiameter } from '../../src/enrich/redact.js';
import { diameterJsonBytes, parseDiameter, type AvpJson, type DiameterInfo, type DiameterJson } from '../../src/protocols/diameter.js';

/** The HEP payload of a Diameter message, read back. */
const diameterJson = (d: DiameterInfo): DiameterJson => JSON.parse(diameterJsonBytes(d).toString());

const require = createRequire(import.meta.url);
const codec = require('diameter/lib/diameter-codec.js') as { encodeMessage(m: unknown): Buffer };
const dictionary = require('diameter/lib/diameter-dictionary.js') as { getAvpByName(n: string): unknown };

const TGPP = 10415;
type NpmType = 'OctetString' | 'Unsigned32' | 'Integer32' | 'Grouped'; // the package has OctetString for UTF8String
const SPEC: Array<[name: string, code: number, type: NpmType, vendorId?: number]> = [
  // TS 29.329 (Sh)
  ['User-Identity', 700, 'Grouped'], ['MSISDN', 701, 'OctetString'], ['User-Data', 702, 'OctetString'], ['Data-Reference', 703, 'Integer32'],
  ['Service-Indication', 704, 'OctetString'], ['Subs-Req-Type', 705, 'Integer32'], ['Identity-Set', 708, 'Integer32'],
  ['Repository-Data-ID', 715, 'Grouped'], ['Sequence-Number', 716, 'Unsigned32'],
  // TS 29.229 (Cx/Dx)
  ['Public-Identity', 601, 'OctetString'], ['Server-Name', 602, 'OctetString'], ['Supported-Features', 628, 'Grouped'],
  ['Feature-List-ID', 629, 'Unsigned32'], ['Feature-List', 630, 'Unsigned32'], ['User-Authorization-Type', 623, 'Integer32'],
  ['Visited-Network-Identifier', 600, 'OctetString'], ['Confidentiality-Key', 625, 'OctetString'], ['Integrity-Key', 626, 'OctetString'],
  // TS 32.299 (Rf), TS 29.272 (S6a) entries the package cannot encode as they are
  ['Event-Type', 823, 'Grouped'], ['SIP-Method', 824, 'OctetString'], ['RAT-Type', 1032, 'Integer32'],
  ['Max-Requested-Bandwidth-UL', 516, 'Unsigned32'], ['Max-Requested-Bandwidth-DL', 515, 'Unsigned32'],
  // RFC 5778
  ['Service-Selection', 493, 'OctetString', 0],
];
const spec = new Map(
  SPEC.map(([name, code, type, vendorId = TGPP]) => [name, { name, code, vendorId, type, flags: { vendorBit: vendorId !== 0, mandatory: true, protected: false, mayEncrypt: false } }]),
);
const packageLookup = dictionary.getAvpByName;
dictionary.getAvpByName = (name: string) => spec.get(name) ?? packageLookup(name);

/** An AVP as given to the package: [name, value]; a Buffer is OctetString data, an array a Grouped AVP's children. */
type Body = Array<[string, string | number | Buffer | Body]>;

function build(applicationId: number, commandCode: number, request: boolean, body: Body): Buffer {
  return codec.encodeMessage({
    header: { version: 1, commandCode, flags: { request, proxiable: true, error: false, potentiallyRetransmitted: false }, applicationId, hopByHopId: 0x1234, endToEndId: 0x5678 },
    body,
  });
}

/** AVPs the package encodes as Time (NTP seconds): we show them as an ISO date. */
const TIME_AVPS = new Set(['Event-Timestamp', 'SIP-Request-Timestamp', 'SIP-Response-Timestamp']);
const NTP_EPOCH = 2208988800;

/** What our decoder must show for `body`: names as given, OctetString as hex unless we know it as text. */
function expected(body: Body): unknown[] {
  return body.map(([name, v]) =>
    Array.isArray(v) ? [name, expected(v)] : TIME_AVPS.has(name) ? [name, new Date(((v as number) - NTP_EPOCH) * 1000).toISOString()] : [name, Buffer.isBuffer(v) ? v.toString('hex') : v],
  );
}
const decoded = (avps: AvpJson[]): unknown[] => avps.map((a) => [a.name ?? `?${a.code}/${a.vendorId ?? 0}`, a.avps ? decoded(a.avps) : (a.value ?? a.hex)]);

function decodes(bytes: Buffer, body: Body, app: string, command: string) {
  const d = parseDiameter(bytes)!;
  expect(d.malformed).toBeUndefined();
  const json = diameterJson(d);
  expect([json.application, json.command]).toEqual([app, command]);
  expect(decoded(json.avps)).toEqual(expected(body));
  return d;
}

const base = (host: string): Body => [['Origin-Host', `${host}.ims.test`], ['Origin-Realm', 'ims.test']];
const vendorApp = (id: number): Body => [['Vendor-Specific-Application-Id', [['Vendor-Id', TGPP], ['Auth-Application-Id', id]]]];

describe('Diameter applications built by the npm diameter package', () => {
  it('Sh UDR / UDA: User-Identity, Data-Reference, Repository-Data-ID with the User-Data XML', () => {
    const udr: Body = [
      ['Session-Id', 'as.ims.test;sh;1'], ...vendorApp(16777217), ['Auth-Session-State', 1], ...base('as'), ['Destination-Realm', 'ims.test'],
      ['User-Identity', [['Public-Identity', 'sip:alice@ims.test'], ['MSISDN', Buffer.from([0x91, 0x44, 0x77, 0x00, 0x90, 0x00, 0xf1])]]],
      ['Data-Reference', 0], ['Service-Indication', Buffer.from('mmtel-settings')],
    ];
    const uda: Body = [
      ['Session-Id', 'as.ims.test;sh;1'], ...vendorApp(16777217), ['Result-Code', 2001], ['Auth-Session-State', 1], ...base('hss'),
      ['Repository-Data-ID', [['Service-Indication', Buffer.from('mmtel-settings')], ['Sequence-Number', 7]]],
      ['User-Data', Buffer.from('<?xml version="1.0"?><Sh-Data><RepositoryData/></Sh-Data>')],
      ['Supported-Features', [['Vendor-Id', TGPP], ['Feature-List-ID', 1], ['Feature-List', 3]]],
    ];
    expect(decodes(build(16777217, 306, true, udr), udr, 'Sh', 'User-Data-Request').sessionId).toBe('as.ims.test;sh;1');
    expect(decodes(build(16777217, 306, false, uda), uda, 'Sh', 'User-Data-Answer').resultCode).toBe(2001);
  });

  it('Dx UAR to the SLF, and its redirecting UAA (Cx application id, Redirect-Host)', () => {
    const uar: Body = [
      ['Session-Id', 'icscf.ims.test;dx;1'], ...vendorApp(16777216), ['Auth-Session-State', 1], ...base('icscf'), ['Destination-Realm', 'ims.test'],
      ['User-Name', 'alice@ims.test'], ['Public-Identity', 'sip:alice@ims.test'], ['Visited-Network-Identifier', Buffer.from('ims.test')],
      ['User-Authorization-Type', 0],
    ];
    const uaa: Body = [
      ['Session-Id', 'icscf.ims.test;dx;1'], ...vendorApp(16777216), ['Result-Code', 3006], ['Auth-Session-State', 1], ...base('slf'),
      ['Redirect-Host', 'aaa://hss2.ims.test:3868'], ['Redirect-Host-Usage', 1], ['Redirect-Max-Cache-Time', 3600],
    ];
    decodes(build(16777216, 300, true, uar), uar, 'Cx', 'User-Authorization-Request');
    expect(decodes(build(16777216, 300, false, uaa), uaa, 'Cx', 'User-Authorization-Answer').resultCode).toBe(3006);
  });

  it('Rf ACR / ACA: IMS-Information with Event-Type, addresses, Time-Stamps and the ICID', () => {
    const acr: Body = [
      ['Session-Id', 'scscf.ims.test;rf;1'], ...base('scscf'), ['Destination-Realm', 'ims.test'],
      ['Accounting-Record-Type', 2], ['Accounting-Record-Number', 0], ['Acct-Application-Id', 3],
      ['Service-Context-Id', '32260@3gpp.org'], ['Event-Timestamp', NTP_EPOCH + 1_796_000_000],
      ['Service-Information', [['IMS-Information', [
        ['Event-Type', [['SIP-Method', 'INVITE']]], ['Role-Of-Node', 0], ['Node-Functionality', 0],
        ['User-Session-Id', Buffer.from('call-1@ims.test')],
        ['Calling-Party-Address', Buffer.from('sip:alice@ims.test')], ['Called-Party-Address', Buffer.from('sip:bob@ims.test')],
        ['Time-Stamps', [['SIP-Request-Timestamp', NTP_EPOCH + 1_796_000_000], ['SIP-Response-Timestamp', NTP_EPOCH + 1_796_000_001]]],
        ['Inter-Operator-Identifier', [['Originating-IOI', Buffer.from('ims.test')]]],
        ['IMS-Charging-Identifier', Buffer.from('icid-0001')], ['Cause-Code', 0],
      ]]]],
    ];
    const aca: Body = [['Session-Id', 'scscf.ims.test;rf;1'], ['Result-Code', 2001], ...base('cdf'), ['Accounting-Record-Type', 2], ['Accounting-Record-Number', 0], ['Acct-Application-Id', 3]];
    // What we show as text (UTF8String, DiameterIdentity) the package encodes as OctetString: compare as text.
    const asText = (b: Body): Body => b.map(([n, v]) => [n, Array.isArray(v) ? asText(v) : Buffer.isBuffer(v) && TEXT_AVPS.has(n) ? v.toString() : v]);
    expect(decodes(build(3, 271, true, acr), asText(acr), 'Rf', 'Accounting-Request').sessionId).toBe('scscf.ims.test;rf;1');
    decodes(build(3, 271, false, aca), aca, 'Rf', 'Accounting-Answer');
  });

  it('S6a ULR / ULA: subscription data with an APN configuration', () => {
    const ulr: Body = [
      ['Session-Id', 'mme.epc.test;s6a;1'], ['Auth-Session-State', 1], ...base('mme'), ['Destination-Realm', 'epc.test'],
      ['User-Name', '001010123456789'], ['RAT-Type', 1004], ['ULR-Flags', 34], ['Visited-PLMN-Id', Buffer.from([0x00, 0xf1, 0x10])],
      ['Terminal-Information', [['IMEI', '3566660000000'], ['Software-Version', '01']]],
    ];
    const ula: Body = [
      ['Session-Id', 'mme.epc.test;s6a;1'], ['Result-Code', 2001], ['Auth-Session-State', 1], ...base('hss'), ['ULA-Flags', 1],
      ['Subscription-Data', [
        ['Subscriber-Status', 0], ['Network-Access-Mode', 2], ['Access-Restriction-Data', 0],
        ['AMBR', [['Max-Requested-Bandwidth-UL', 50_000_000], ['Max-Requested-Bandwidth-DL', 100_000_000]]],
        ['APN-Configuration-Profile', [['Context-Identifier', 1], ['All-APN-Configurations-Included-Indicator', 0], ['APN-Configuration', [
          ['Context-Identifier', 1], ['PDN-Type', 0], ['Service-Selection', 'ims'],
          ['EPS-Subscribed-QoS-Profile', [['QoS-Class-Identifier', 5], ['Allocation-Retention-Priority', [['Priority-Level', 1]]]]],
        ]]]],
      ]],
    ];
    decodes(build(16777251, 316, true, ulr), ulr, 'S6a', 'Update-Location-Request');
    decodes(build(16777251, 316, false, ula), ula, 'S6a', 'Update-Location-Answer');
  });

  it('S6a AIR / AIA: the E-UTRAN vectors (RAND, XRES, AUTN, KASME) are masked by default, every other byte kept', () => {
    const air: Body = [
      ['Session-Id', 'mme.epc.test;s6a;2'], ['Auth-Session-State', 1], ...base('mme'), ['Destination-Realm', 'epc.test'], ['User-Name', '001010123456789'],
      ['Visited-PLMN-Id', Buffer.from([0x00, 0xf1, 0x10])],
      ['Requested-EUTRAN-Authentication-Info', [['Number-Of-Requested-Vectors', 2], ['Immediate-Response-Preferred', 0]]],
    ];
    const fill = (n: number, b: number) => Buffer.alloc(n, b);
    const vector = (i: number): Body => [['Item-Number', i], ['RAND', fill(16, 0xa0 + i)], ['XRES', fill(8, 0xb0 + i)], ['AUTN', fill(16, 0xc0 + i)], ['KASME', fill(32, 0xd0 + i)]];
    const aia: Body = [
      ['Session-Id', 'mme.epc.test;s6a;2'], ['Result-Code', 2001], ['Auth-Session-State', 1], ...base('hss'),
      ['Authentication-Info', [['E-UTRAN-Vector', vector(1)], ['E-UTRAN-Vector', vector(2)]]],
    ];
    decodes(build(16777251, 318, true, air), air, 'S6a', 'Authentication-Information-Request');
    expect(redactDiameter(build(16777251, 318, true, air), parseDiameter(build(16777251, 318, true, air))!.avps)).toBeUndefined();

    const bytes = build(16777251, 318, false, aia);
    const masked = redactDiameter(bytes, decodes(bytes, aia, 'S6a', 'Authentication-Information-Answer').avps)!;
    expect(masked.length).toBe(bytes.length);
    // The masked message decodes to the same tree with each secret's data 'X'; every other byte is the package's.
    const X = (n: number) => Buffer.alloc(n, 'X');
    const maskedVector = (i: number): Body => [['Item-Number', i], ['RAND', X(16)], ['XRES', X(8)], ['AUTN', X(16)], ['KASME', X(32)]];
    const maskedAia: Body = [...aia.slice(0, -1), ['Authentication-Info', [['E-UTRAN-Vector', maskedVector(1)], ['E-UTRAN-Vector', maskedVector(2)]]]];
    expect(masked).toEqual(build(16777251, 318, false, maskedAia));
    expect(decoded(diameterJson(parseDiameter(masked)!).avps)).toEqual(expected(maskedAia));
    const changed = [...bytes].filter((b, i) => b !== masked[i]).length;
    expect(changed).toBe(2 * (16 + 8 + 16 + 32));
  });
});

/** AVPs we show as text that the package only has as OctetString. */
const TEXT_AVPS = new Set(['User-Session-Id', 'Calling-Party-Address', 'Called-Party-Address', 'Originating-IOI', 'IMS-Charging-Identifier']);
