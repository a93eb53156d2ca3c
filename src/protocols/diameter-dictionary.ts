/**
 * Names for Diameter applications, commands and the AVPs that matter for troubleshooting:
 * base protocol (RFC 6733), credit control (RFC 4006), Cx/Dx (TS 29.229), Sh (TS 29.329),
 * Rx (TS 29.214), Gx (TS 29.212), Ro/Rf (TS 32.299), S6a (TS 29.272). Dx (TS 29.229, to an SLF) uses
 * Cx's application id and AVPs, with the base protocol's Redirect-Host for its answer.
 * An AVP missing here is still decoded: kept as code, vendor and hex.
 */

export const VENDOR_3GPP = 10415;

export const APPLICATIONS: ReadonlyMap<number, string> = new Map([
  [0, 'Base'],
  [3, 'Rf'],
  [4, 'Ro'],
  [16777216, 'Cx'],
  [16777217, 'Sh'],
  [16777236, 'Rx'],
  [16777238, 'Gx'],
  [16777251, 'S6a'],
  [4294967295, 'Relay'],
]);

export interface CommandName {
  name: string;
  request: string;
  answer: string;
}

const command = (name: string, abbrev: string): CommandName => ({ name, request: abbrev + 'R', answer: abbrev + 'A' });

export const COMMANDS: ReadonlyMap<number, CommandName> = new Map([
  // RFC 6733
  [257, command('Capabilities-Exchange', 'CE')],
  [258, command('Re-Auth', 'RA')],
  [271, command('Accounting', 'AC')],
  [274, command('Abort-Session', 'AS')],
  [275, command('Session-Termination', 'ST')],
  [280, command('Device-Watchdog', 'DW')],
  [282, command('Disconnect-Peer', 'DP')],
  // RFC 4006 / RFC 7155
  [272, command('Credit-Control', 'CC')],
  [265, command('AA', 'AA')],
  // Cx/Dx
  [300, command('User-Authorization', 'UA')],
  [301, command('Server-Assignment', 'SA')],
  [302, command('Location-Info', 'LI')],
  [303, command('Multimedia-Auth', 'MA')],
  [304, command('Registration-Termination', 'RT')],
  [305, command('Push-Profile', 'PP')],
  // Sh
  [306, command('User-Data', 'UD')],
  [307, command('Profile-Update', 'PU')],
  [308, command('Subscribe-Notifications', 'SN')],
  [309, command('Push-Notification', 'PN')],
  // S6a
  [316, command('Update-Location', 'UL')],
  [317, command('Cancel-Location', 'CL')],
  [318, command('Authentication-Information', 'AI')],
  [319, command('Insert-Subscriber-Data', 'ID')],
  [320, command('Delete-Subscriber-Data', 'DS')],
  [321, command('Purge-UE', 'PU')],
  [322, command('Reset', 'RS')],
  [323, command('Notify', 'NO')],
]);

/** How an AVP's data is shown. Grouped AVPs are decoded into their children. */
export type AvpType = 'utf8' | 'u32' | 'i32' | 'u64' | 'octets' | 'address' | 'time' | 'grouped';

export interface AvpDef {
  name: string;
  type: AvpType;
}

/** Key of an AVP definition: vendor id and code. */
export const avpKey = (code: number, vendorId: number) => vendorId * 0x1_0000_0000 + code;

type Row = [code: number, name: string, type: AvpType];

const IETF: Row[] = [
  // RFC 6733
  [1, 'User-Name', 'utf8'], [8, 'Framed-IP-Address', 'octets'], [25, 'Class', 'octets'], [27, 'Session-Timeout', 'u32'],
  [33, 'Proxy-State', 'octets'], [44, 'Accounting-Session-Id', 'octets'], [50, 'Acct-Multi-Session-Id', 'utf8'],
  [55, 'Event-Timestamp', 'time'], [85, 'Acct-Interim-Interval', 'u32'], [97, 'Framed-IPv6-Prefix', 'octets'],
  [257, 'Host-IP-Address', 'address'], [258, 'Auth-Application-Id', 'u32'], [259, 'Acct-Application-Id', 'u32'],
  [260, 'Vendor-Specific-Application-Id', 'grouped'], [261, 'Redirect-Host-Usage', 'u32'], [262, 'Redirect-Max-Cache-Time', 'u32'],
  [263, 'Session-Id', 'utf8'], [264, 'Origin-Host', 'utf8'], [265, 'Supported-Vendor-Id', 'u32'], [266, 'Vendor-Id', 'u32'],
  [267, 'Firmware-Revision', 'u32'], [268, 'Result-Code', 'u32'], [269, 'Product-Name', 'utf8'], [270, 'Session-Binding', 'u32'],
  [271, 'Session-Server-Failover', 'u32'], [272, 'Multi-Round-Time-Out', 'u32'], [273, 'Disconnect-Cause', 'u32'],
  [274, 'Auth-Request-Type', 'u32'], [276, 'Auth-Grace-Period', 'u32'], [277, 'Auth-Session-State', 'u32'],
  [278, 'Origin-State-Id', 'u32'], [279, 'Failed-AVP', 'grouped'], [280, 'Proxy-Host', 'utf8'], [281, 'Error-Message', 'utf8'],
  [282, 'Route-Record', 'utf8'], [283, 'Destination-Realm', 'utf8'], [284, 'Proxy-Info', 'grouped'],
  [285, 'Re-Auth-Request-Type', 'u32'], [287, 'Accounting-Sub-Session-Id', 'u64'], [291, 'Authorization-Lifetime', 'u32'],
  [292, 'Redirect-Host', 'utf8'], [293, 'Destination-Host', 'utf8'], [294, 'Error-Reporting-Host', 'utf8'],
  [295, 'Termination-Cause', 'u32'], [296, 'Origin-Realm', 'utf8'], [297, 'Experimental-Result', 'grouped'],
  [298, 'Experimental-Result-Code', 'u32'], [299, 'Inband-Security-Id', 'u32'], [480, 'Accounting-Record-Type', 'u32'],
  [483, 'Accounting-Realtime-Required', 'u32'], [485, 'Accounting-Record-Number', 'u32'],
  // RFC 4740 (Cx digest)
  [104, 'Digest-Realm', 'utf8'], [110, 'Digest-Algorithm', 'utf8'], [111, 'Digest-QoP', 'utf8'], [121, 'Digest-HA1', 'utf8'],
  // RFC 4006
  [411, 'CC-Correlation-Id', 'octets'], [412, 'CC-Input-Octets', 'u64'], [413, 'CC-Money', 'grouped'], [414, 'CC-Output-Octets', 'u64'],
  [415, 'CC-Request-Number', 'u32'], [416, 'CC-Request-Type', 'u32'], [417, 'CC-Service-Specific-Units', 'u64'],
  [418, 'CC-Session-Failover', 'u32'], [419, 'CC-Sub-Session-Id', 'u64'], [420, 'CC-Time', 'u32'], [421, 'CC-Total-Octets', 'u64'],
  [427, 'Credit-Control-Failure-Handling', 'u32'], [430, 'Final-Unit-Indication', 'grouped'], [431, 'Granted-Service-Unit', 'grouped'],
  [432, 'Rating-Group', 'u32'], [437, 'Requested-Service-Unit', 'grouped'], [439, 'Service-Identifier', 'u32'],
  [443, 'Subscription-Id', 'grouped'], [444, 'Subscription-Id-Data', 'utf8'], [446, 'Used-Service-Unit', 'grouped'],
  [448, 'Validity-Time', 'u32'], [449, 'Final-Unit-Action', 'u32'], [450, 'Subscription-Id-Type', 'u32'],
  [455, 'Multiple-Services-Indicator', 'u32'], [456, 'Multiple-Services-Credit-Control', 'grouped'],
  [458, 'User-Equipment-Info', 'grouped'], [459, 'User-Equipment-Info-Type', 'u32'], [460, 'User-Equipment-Info-Value', 'octets'],
  [461, 'Service-Context-Id', 'utf8'],
  // RFC 5778 (S6a APN)
  [493, 'Service-Selection', 'utf8'],
];

const TGPP: Row[] = [
  // Rx (TS 29.214)
  [500, 'Abort-Cause', 'u32'], [501, 'Access-Network-Charging-Address', 'address'], [502, 'Access-Network-Charging-Identifier', 'grouped'],
  [503, 'Access-Network-Charging-Identifier-Value', 'octets'], [504, 'AF-Application-Identifier', 'octets'],
  [505, 'AF-Charging-Identifier', 'octets'], [506, 'Authorization-Token', 'octets'], [507, 'Flow-Description', 'utf8'],
  [508, 'Flow-Grouping', 'grouped'], [509, 'Flow-Number', 'u32'], [510, 'Flows', 'grouped'], [511, 'Flow-Status', 'u32'],
  [512, 'Flow-Usage', 'u32'], [513, 'Specific-Action', 'u32'], [515, 'Max-Requested-Bandwidth-DL', 'u32'],
  [516, 'Max-Requested-Bandwidth-UL', 'u32'], [517, 'Media-Component-Description', 'grouped'], [518, 'Media-Component-Number', 'u32'],
  [519, 'Media-Sub-Component', 'grouped'], [520, 'Media-Type', 'u32'], [521, 'RR-Bandwidth', 'u32'], [522, 'RS-Bandwidth', 'u32'],
  [523, 'SIP-Forking-Indication', 'u32'], [524, 'Codec-Data', 'octets'], [525, 'Service-URN', 'octets'],
  [527, 'Service-Info-Status', 'u32'], [529, 'AF-Signalling-Protocol', 'u32'], [533, 'Rx-Request-Type', 'u32'],
  // Cx/Dx (TS 29.229)
  [600, 'Visited-Network-Identifier', 'octets'], [601, 'Public-Identity', 'utf8'], [602, 'Server-Name', 'utf8'],
  [603, 'Server-Capabilities', 'grouped'], [604, 'Mandatory-Capability', 'u32'], [605, 'Optional-Capability', 'u32'],
  [606, 'User-Data', 'octets'], [607, 'SIP-Number-Auth-Items', 'u32'], [608, 'SIP-Authentication-Scheme', 'utf8'],
  [609, 'SIP-Authenticate', 'octets'], [610, 'SIP-Authorization', 'octets'], [611, 'SIP-Authentication-Context', 'octets'],
  [612, 'SIP-Auth-Data-Item', 'grouped'], [613, 'SIP-Item-Number', 'u32'], [614, 'Server-Assignment-Type', 'u32'],
  [615, 'Deregistration-Reason', 'grouped'], [616, 'Reason-Code', 'u32'], [617, 'Reason-Info', 'utf8'],
  [618, 'Charging-Information', 'grouped'], [619, 'Primary-Event-Charging-Function-Name', 'utf8'],
  [620, 'Secondary-Event-Charging-Function-Name', 'utf8'], [621, 'Primary-Charging-Collection-Function-Name', 'utf8'],
  [622, 'Secondary-Charging-Collection-Function-Name', 'utf8'], [623, 'User-Authorization-Type', 'u32'],
  [624, 'User-Data-Already-Available', 'u32'], [625, 'Confidentiality-Key', 'octets'], [626, 'Integrity-Key', 'octets'],
  [628, 'Supported-Features', 'grouped'], [629, 'Feature-List-ID', 'u32'], [630, 'Feature-List', 'u32'],
  [631, 'Supported-Applications', 'grouped'], [632, 'Associated-Identities', 'grouped'], [633, 'Originating-Request', 'u32'],
  [634, 'Wildcarded-Public-Identity', 'utf8'], [635, 'SIP-Digest-Authenticate', 'grouped'], [637, 'UAR-Flags', 'u32'],
  [636, 'Wildcarded-IMPU', 'utf8'], [640, 'Path', 'octets'], [641, 'Contact', 'octets'], [642, 'Subscription-Info', 'grouped'], [643, 'Call-ID-SIP-Header', 'octets'],
  [644, 'From-SIP-Header', 'octets'], [645, 'To-SIP-Header', 'octets'], [646, 'Record-Route', 'octets'],
  // Sh (TS 29.329)
  [700, 'User-Identity', 'grouped'], [701, 'MSISDN', 'octets'], [702, 'User-Data', 'octets'], [703, 'Data-Reference', 'u32'],
  [704, 'Service-Indication', 'octets'], [705, 'Subs-Req-Type', 'u32'], [706, 'Requested-Domain', 'u32'],
  [707, 'Current-Location', 'u32'], [708, 'Identity-Set', 'u32'], [709, 'Expiry-Time', 'time'], [710, 'Send-Data-Indication', 'u32'],
  [711, 'DSAI-Tag', 'octets'], [712, 'One-Time-Notification', 'u32'], [713, 'Requested-Nodes', 'u32'],
  [714, 'Serving-Node-Indication', 'u32'], [715, 'Repository-Data-ID', 'grouped'], [716, 'Sequence-Number', 'u32'],
  [717, 'Pre-paging-Supported', 'u32'], [718, 'Local-Time-Zone-Indication', 'u32'], [719, 'UDR-Flags', 'u32'],
  [720, 'Call-Reference-Info', 'grouped'], [721, 'Call-Reference-Number', 'octets'], [722, 'AS-Number', 'octets'],
  // Ro/Rf (TS 32.299)
  [823, 'Event-Type', 'grouped'], [824, 'SIP-Method', 'utf8'], [825, 'Event', 'utf8'], [826, 'Content-Type', 'utf8'],
  [827, 'Content-Length', 'u32'], [829, 'Role-Of-Node', 'u32'], [830, 'User-Session-Id', 'utf8'],
  [831, 'Calling-Party-Address', 'utf8'], [832, 'Called-Party-Address', 'utf8'], [833, 'Time-Stamps', 'grouped'],
  [834, 'SIP-Request-Timestamp', 'time'], [835, 'SIP-Response-Timestamp', 'time'], [836, 'Application-Server', 'utf8'],
  [838, 'Inter-Operator-Identifier', 'grouped'],
  [839, 'Originating-IOI', 'utf8'], [840, 'Terminating-IOI', 'utf8'], [841, 'IMS-Charging-Identifier', 'utf8'],
  [842, 'SDP-Session-Description', 'utf8'], [843, 'SDP-Media-Component', 'grouped'], [844, 'SDP-Media-Name', 'utf8'],
  [845, 'SDP-Media-Description', 'utf8'], [848, 'Served-Party-IP-Address', 'address'], [850, 'Application-Server-Information', 'grouped'],
  [861, 'Cause-Code', 'i32'], [862, 'Node-Functionality', 'u32'], [864, 'Originator', 'u32'], [872, 'Reporting-Reason', 'u32'],
  [873, 'Service-Information', 'grouped'], [874, 'PS-Information', 'grouped'], [876, 'IMS-Information', 'grouped'],
  [1250, 'Called-Asserted-Identity', 'utf8'], [1251, 'Requested-Party-Address', 'utf8'],
  // Gx (TS 29.212)
  [1001, 'Charging-Rule-Install', 'grouped'], [1002, 'Charging-Rule-Remove', 'grouped'], [1003, 'Charging-Rule-Definition', 'grouped'],
  [1004, 'Charging-Rule-Base-Name', 'utf8'], [1005, 'Charging-Rule-Name', 'octets'], [1006, 'Event-Trigger', 'u32'],
  [1007, 'Metering-Method', 'u32'], [1008, 'Offline', 'u32'], [1009, 'Online', 'u32'], [1010, 'Precedence', 'u32'],
  [1011, 'Reporting-Level', 'u32'], [1016, 'QoS-Information', 'grouped'], [1018, 'Charging-Rule-Report', 'grouped'],
  [1019, 'PCC-Rule-Status', 'u32'], [1020, 'Bearer-Identifier', 'octets'], [1021, 'Bearer-Operation', 'u32'],
  [1023, 'Bearer-Control-Mode', 'u32'], [1024, 'Network-Request-Support', 'u32'], [1025, 'Guaranteed-Bitrate-DL', 'u32'],
  [1026, 'Guaranteed-Bitrate-UL', 'u32'], [1027, 'IP-CAN-Type', 'u32'], [1028, 'QoS-Class-Identifier', 'u32'],
  [1031, 'Rule-Failure-Code', 'u32'], [1032, 'RAT-Type', 'u32'], [1034, 'Allocation-Retention-Priority', 'grouped'],
  [1040, 'APN-Aggregate-Max-Bitrate-DL', 'u32'], [1041, 'APN-Aggregate-Max-Bitrate-UL', 'u32'], [1046, 'Priority-Level', 'u32'],
  [1047, 'Pre-emption-Capability', 'u32'], [1048, 'Pre-emption-Vulnerability', 'u32'], [1049, 'Default-EPS-Bearer-QoS', 'grouped'],
  [1058, 'Flow-Information', 'grouped'], [1066, 'Monitoring-Key', 'octets'], [1067, 'Usage-Monitoring-Information', 'grouped'],
  // S6a (TS 29.272)
  [1400, 'Subscription-Data', 'grouped'], [1401, 'Terminal-Information', 'grouped'], [1402, 'IMEI', 'utf8'],
  [1403, 'Software-Version', 'utf8'], [1405, 'ULR-Flags', 'u32'], [1406, 'ULA-Flags', 'u32'], [1407, 'Visited-PLMN-Id', 'octets'],
  [1408, 'Requested-EUTRAN-Authentication-Info', 'grouped'], [1409, 'Requested-UTRAN-GERAN-Authentication-Info', 'grouped'],
  [1410, 'Number-Of-Requested-Vectors', 'u32'], [1411, 'Re-Synchronization-Info', 'octets'], [1412, 'Immediate-Response-Preferred', 'u32'],
  [1413, 'Authentication-Info', 'grouped'], [1414, 'E-UTRAN-Vector', 'grouped'], [1415, 'UTRAN-Vector', 'grouped'],
  [1416, 'GERAN-Vector', 'grouped'], [1417, 'Network-Access-Mode', 'u32'], [1419, 'Item-Number', 'u32'],
  [1420, 'Cancellation-Type', 'u32'], [1424, 'Subscriber-Status', 'u32'], [1429, 'APN-Configuration-Profile', 'grouped'],
  [1423, 'Context-Identifier', 'u32'], [1426, 'Access-Restriction-Data', 'u32'], [1428, 'All-APN-Configurations-Included-Indicator', 'u32'],
  [1430, 'APN-Configuration', 'grouped'], [1431, 'EPS-Subscribed-QoS-Profile', 'grouped'], [1435, 'AMBR', 'grouped'],
  [1447, 'RAND', 'octets'], [1448, 'XRES', 'octets'], [1449, 'AUTN', 'octets'],
  [1450, 'KASME', 'octets'], [1453, 'Kc', 'octets'], [1454, 'SRES', 'octets'], [1456, 'PDN-Type', 'u32'], [1490, 'IDR-Flags', 'u32'],
];

export const AVPS: ReadonlyMap<number, AvpDef> = new Map([
  ...IETF.map(([code, name, type]) => [avpKey(code, 0), { name, type }] as const),
  ...TGPP.map(([code, name, type]) => [avpKey(code, VENDOR_3GPP), { name, type }] as const),
]);
