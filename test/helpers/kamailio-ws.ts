/**
 * Kamailio 5.6 as a SIP over WebSocket server (xhttp + websocket modules, as in the websocket module's
 * documentation), on ws:// (TCP) and wss:// (its tls module), answering every request statelessly:
 * 486 to an INVITE, 200 to anything else. siptrace (trace_mode 1: the core's receive and send events,
 * raised on each SIP message as framed and unmasked, and as written before framing) reports every
 * message to a test-owned UDP collector: the ground truth for WSS.
 */
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { decodeHep, type HepPacket } from '../../src/hep/decode.js';
import { freePort, udpCollector } from './collector.js';
import { KAMAILIO_MODULES, siptraceHep } from '../../bench/kamailio.js';
import { startKamailio, stopKamailio } from './kamailio-tls.js';

export interface KamailioWs {
  wsPort: number;
  wssPort: number;
  pids: number[];
  /** What siptrace reported for connections on `port` (received there, or sent from it), in order. */
  traced(port: number): HepPacket[];
  stop(): Promise<void>;
}

export async function startKamailioWs(dir: string): Promise<KamailioWs> {
  const [wsPort, wssPort, udpPort] = [await freePort(), await freePort(), await freePort()];
  const key = join(dir, 'ws-key.pem');
  const cert = join(dir, 'ws-cert.pem');
  execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '2', '-subj', '/CN=kamailio-ws.test'], { stdio: 'ignore' });
  const tlsCfg = join(dir, 'ws-tls.cfg');
  writeFileSync(tlsCfg, `[server:default]\nmethod = TLSv1.2+\ncertificate = ${cert}\nprivate_key = ${key}\nverify_certificate = no\nrequire_certificate = no\n`);
  const collector = await udpCollector();
  const cfg = `#!KAMAILIO
children=1
tcp_children=2
enable_tls=yes
tcp_accept_no_cl=yes
listen=tcp:127.0.0.1:${wsPort}
listen=tls:127.0.0.1:${wssPort}
# siptrace sends its HEP from a UDP socket.
listen=udp:127.0.0.1:${udpPort}
mpath="${KAMAILIO_MODULES}"
loadmodule "pv.so"
loadmodule "sl.so"
loadmodule "textops.so"
loadmodule "tls.so"
loadmodule "xhttp.so"
loadmodule "websocket.so"
modparam("tls","config","${tlsCfg}")
# No pings of Kamailio's own: what crosses the connections is the test's traffic only.
modparam("websocket","keepalive_mechanism",0)
${siptraceHep(collector.port)}event_route[xhttp:request] {
	if ($hdr(Upgrade) =~ "websocket" && $hdr(Connection) =~ "Upgrade" && $rm =~ "GET") {
		if (ws_handle_handshake()) exit;
	}
	xhttp_reply("404", "Not Found", "", "");
}
request_route {
	force_rport();
	if (is_method("INVITE")) sl_send_reply("486", "Busy Here");
	else sl_send_reply("200", "OK");
}
`;
  let k;
  try {
    k = await startKamailio(dir, 'ws', cfg, `tcp: 127.0.0.1:${wsPort}`);
  } catch (err) {
    await collector.close();
    throw err;
  }
  const server = k;
  return {
    wsPort,
    wssPort,
    pids: server.pids,
    traced: (port) => collector.packets.map((raw) => decodeHep(raw)).filter((p) => p.dstPort === port || p.srcPort === port),
    async stop() {
      await stopKamailio(server);
      await collector.close();
    },
  };
}
