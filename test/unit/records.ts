/** SIP messages for tests; records and batches are built by src/capture/replay.ts. */
export const sipMessage = (callId: string, body = '', method = 'MESSAGE') =>
  Buffer.from(
    `${method} sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/TCP 10.0.0.1;branch=z9hG4bK-${callId}\r\nCall-ID: ${callId}\r\nCSeq: 1 ${method}\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
  );
