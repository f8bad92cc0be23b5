// The link client for React Native, browsers and Node (docs/link.md): one connection per device, every message
// once and in order, acks, the server's heartbeat interval, and reconnects (backoff, GOAWAY) that resume from
// the last acked number.
//
//   const link = new LinkClient({ url: "wss://link.example.com/v1/link", appId: "SHOP", workspaceId: "prod",
//     deviceId, token, onMessage: async (m) => { ... } });
//   await link.connect();
//
// It uses the global WebSocket (React Native, browsers, Node 22+); pass `WebSocket` to use another (Node 20:
// the `ws` package). No dependencies.

export const SUBPROTOCOL = "mpaas-link.v1";
export const VERSION = 1;
export const INBOX = 0; // the device's own messages
export const BROADCAST = 1; // its app's broadcasts

export const enum Network {
  Unknown = 0,
  Wifi = 1,
  Cellular = 2,
  Ethernet = 3,
}

export const Close = {
  Normal: 1000,
  GoingAway: 1001,
  ProtocolError: 4000,
  Unauthorized: 4001,
  Replaced: 4002,
  NotAuthenticated: 4003,
  UnknownFrame: 4004,
  RateLimited: 4006,
  SlowReader: 4007,
  HeartbeatTimeout: 4008,
  BadAck: 4009,
  UnknownApp: 4010,
  UnsupportedVersion: 4011,
  ServerFull: 4012,
  HelloTimeout: 4013,
  InternalError: 4500,
} as const;

// Closes after which reconnecting with the same token cannot help.
const FINAL = new Set<number>([Close.Unauthorized, Close.UnknownApp, Close.UnsupportedVersion, Close.Replaced]);

export interface Message {
  stream: number; // INBOX or BROADCAST
  seq: number;
  payload: Uint8Array;
  urgent: boolean;
  expiresAtMs: number;
}

export interface Welcome {
  heartbeatSeconds: number;
  lastSeq: number;
  serverTimeMs: number;
  broadcastLastSeq: number;
}

export interface GoAway {
  reason: number;
  delayMs: number;
  addresses: string[];
}

interface SocketLike {
  binaryType: string;
  readyState: number;
  send(data: Uint8Array): void;
  close(code?: number, reason?: string): void;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
}

export type SocketFactory = new (url: string, protocols?: string | string[]) => SocketLike;

export interface LinkOptions {
  url: string;
  appId: string;
  workspaceId: string;
  deviceId: string;
  token: string;
  // Handed each message once, in order per stream (its inbox, its app's broadcasts); acked once it returns (or
  // its promise resolves).
  onMessage: (message: Message) => void | Promise<void>;
  // What was acked before this process started: persist `lastAcked` and `broadcastAcked` after each message.
  lastAcked?: number;
  broadcastAcked?: number; // 0 or absent: new to broadcasts, starts at the newest
  network?: Network;
  reconnect?: boolean; // default true
  onClose?: (code: number, reason: string) => void;
  onWelcome?: (welcome: Welcome) => void;
  WebSocket?: SocketFactory;
}

// --- frames: a type byte, then varints (unsigned LEB128) and byte strings (a varint length, the bytes) ---

class Writer {
  private bytes: number[] = [];
  constructor(type: number) {
    this.bytes.push(type);
  }
  varint(n: number): this {
    if (!Number.isSafeInteger(n) || n < 0) throw new RangeError("varints are unsigned safe integers");
    while (n >= 0x80) {
      this.bytes.push((n % 0x80) | 0x80);
      n = Math.floor(n / 0x80);
    }
    this.bytes.push(n);
    return this;
  }
  data(b: Uint8Array): this {
    this.varint(b.length);
    for (const x of b) this.bytes.push(x);
    return this;
  }
  text(s: string): this {
    return this.data(new TextEncoder().encode(s));
  }
  done(): Uint8Array {
    return Uint8Array.from(this.bytes);
  }
}

export class FrameError extends Error {}

class Reader {
  private pos = 1;
  constructor(private readonly b: Uint8Array) {}
  varint(): number {
    let n = 0;
    let scale = 1;
    for (let i = 0; i < 10; i++) {
      if (this.pos >= this.b.length) throw new FrameError("a field is cut short");
      const x = this.b[this.pos++];
      n += (x & 0x7f) * scale;
      if (x < 0x80) {
        if (!Number.isSafeInteger(n)) throw new FrameError("a varint past 2^53");
        return n;
      }
      scale *= 0x80;
    }
    throw new FrameError("a varint longer than 10 bytes");
  }
  data(limit: number): Uint8Array {
    const n = this.varint();
    if (n > limit || this.pos + n > this.b.length) throw new FrameError("a byte string is too long or cut short");
    const out = this.b.slice(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }
  stream(): number {
    const s = this.varint();
    if (s !== INBOX && s !== BROADCAST) throw new FrameError(`stream ${s}`);
    return s;
  }
  end(): void {
    if (this.pos !== this.b.length) throw new FrameError("bytes after the frame's last field");
  }
}

export function encodeHello(o: {
  appId: string;
  workspaceId: string;
  deviceId: string;
  token: string;
  lastAcked: number;
  network: number;
  broadcastAcked: number;
}): Uint8Array {
  return new Writer(0x01)
    .varint(VERSION)
    .text(o.appId)
    .text(o.workspaceId)
    .text(o.deviceId)
    .text(o.token)
    .varint(o.lastAcked)
    .varint(o.network)
    .varint(o.broadcastAcked)
    .done();
}

export type ServerFrame =
  | { type: "welcome"; welcome: Welcome }
  | { type: "notify"; stream: number; lastSeq: number }
  | { type: "messages"; stream: number; after: number; lastSeq: number; messages: Message[] }
  | { type: "pong"; heartbeatSeconds: number }
  | { type: "goaway"; goaway: GoAway };

export function decodeServer(b: Uint8Array): ServerFrame {
  if (b.length === 0) throw new FrameError("an empty frame");
  const r = new Reader(b);
  let out: ServerFrame;
  switch (b[0]) {
    case 0x81:
      out = {
        type: "welcome",
        welcome: { heartbeatSeconds: r.varint(), lastSeq: r.varint(), serverTimeMs: r.varint(), broadcastLastSeq: r.varint() },
      };
      break;
    case 0x82: {
      const stream = r.stream();
      out = { type: "notify", stream, lastSeq: r.varint() };
      break;
    }
    case 0x83: {
      const stream = r.stream();
      const after = r.varint();
      const lastSeq = r.varint();
      const count = r.varint();
      if (count > 256) throw new FrameError("more than 256 messages");
      const messages: Message[] = [];
      for (let i = 0; i < count; i++) {
        const seq = r.varint();
        const flags = r.varint();
        const expiresAtMs = r.varint();
        messages.push({ stream, seq, urgent: (flags & 1) === 1, expiresAtMs, payload: r.data(1 << 20) });
      }
      out = { type: "messages", stream, after, lastSeq, messages };
      break;
    }
    case 0x84:
      out = { type: "pong", heartbeatSeconds: r.varint() };
      break;
    case 0x85: {
      const reason = r.varint();
      const delayMs = r.varint();
      const count = r.varint();
      if (count > 16) throw new FrameError("more than 16 addresses");
      const addresses: string[] = [];
      for (let i = 0; i < count; i++) addresses.push(new TextDecoder().decode(r.data(512)));
      out = { type: "goaway", goaway: { reason, delayMs, addresses } };
      break;
    }
    default:
      throw new FrameError(`unknown frame type ${b[0]}`);
  }
  r.end();
  return out;
}

// --- the client ---

export class LinkClient {
  lastAcked: number;
  broadcastAcked: number;
  heartbeatSeconds = 0;
  private socket: SocketLike | null = null;
  private want = [0, 0]; // per stream: the newest number known to be there
  private pulling = [false, false];
  private queue: Promise<void> = Promise.resolve();
  private pinger: ReturnType<typeof setTimeout> | null = null;
  private retry: ReturnType<typeof setTimeout> | null = null;
  private backoffMs = 1000;
  private goaway: GoAway | null = null;
  private stopped = false;
  private url: string;
  private generation = 0; // of the socket: what an older socket's frames or handlers do is dropped

  constructor(private readonly o: LinkOptions) {
    this.lastAcked = o.lastAcked ?? 0;
    this.broadcastAcked = o.broadcastAcked ?? 0;
    this.url = o.url;
  }

  // Opens the connection; resolves with WELCOME, rejects with the close that refused it.
  connect(): Promise<Welcome> {
    this.stopped = false;
    const Ws: SocketFactory | undefined = this.o.WebSocket ?? (globalThis as { WebSocket?: SocketFactory }).WebSocket;
    if (!Ws) throw new Error("no WebSocket: pass one (Node 20: the ws package)");
    const generation = ++this.generation;
    return new Promise<Welcome>((resolve, reject) => {
      let welcomed = false;
      let socket: SocketLike;
      try {
        socket = new Ws(this.url, SUBPROTOCOL);
      } catch (e) {
        reject(e);
        this.scheduleReconnect(Close.InternalError);
        return;
      }
      this.socket = socket;
      socket.binaryType = "arraybuffer";
      socket.onopen = () => {
        socket.send(
          encodeHello({
            appId: this.o.appId,
            workspaceId: this.o.workspaceId,
            deviceId: this.o.deviceId,
            token: this.o.token,
            lastAcked: this.lastAcked,
            network: this.o.network ?? Network.Unknown,
            broadcastAcked: this.broadcastAcked,
          }),
        );
      };
      socket.onmessage = (ev) => {
        if (generation !== this.generation) return;
        let frame: ServerFrame;
        try {
          frame = decodeServer(new Uint8Array(ev.data as ArrayBuffer));
        } catch {
          socket.close(Close.ProtocolError, "a frame that does not decode");
          return;
        }
        if (frame.type === "welcome" && !welcomed) {
          welcomed = true;
          this.backoffMs = 1000;
          resolve(frame.welcome);
        }
        this.onFrame(frame, generation);
      };
      socket.onerror = () => {};
      socket.onclose = (ev) => {
        if (this.socket === socket) this.socket = null;
        if (this.pinger) clearTimeout(this.pinger);
        this.pulling = [false, false];
        this.o.onClose?.(ev.code, ev.reason);
        if (!welcomed) reject(Object.assign(new Error(`closed ${ev.code}: ${ev.reason}`), { code: ev.code }));
        this.scheduleReconnect(ev.code);
      };
    });
  }

  close(): void {
    this.stopped = true;
    if (this.retry) clearTimeout(this.retry);
    if (this.pinger) clearTimeout(this.pinger);
    this.socket?.close(Close.Normal, "");
  }

  private scheduleReconnect(code: number): void {
    if (this.stopped || this.o.reconnect === false || FINAL.has(code)) return;
    let wait = this.backoffMs * (0.5 + Math.random());
    this.url = this.o.url; // a GOAWAY's address is for one try: after it, the configured URL again
    if (this.goaway && this.goaway.addresses.length > 0) {
      this.url = this.goaway.addresses[0];
      wait = this.goaway.delayMs + Math.random() * 1000;
    }
    this.goaway = null;
    this.backoffMs = Math.min(this.backoffMs * 2, 60_000);
    this.retry = setTimeout(() => {
      this.connect().catch(() => undefined); // its close schedules the next try
    }, wait);
  }

  private send(b: Uint8Array): void {
    if (this.socket && this.socket.readyState === 1) this.socket.send(b);
  }

  private onFrame(frame: ServerFrame, generation: number): void {
    switch (frame.type) {
      case "welcome": {
        const w = frame.welcome;
        this.heartbeatSeconds = w.heartbeatSeconds;
        if (w.lastSeq < this.lastAcked) this.lastAcked = 0; // the inbox was removed: numbers restart
        // New to broadcasts (or they restarted): from the newest on.
        if (this.broadcastAcked === 0 || w.broadcastLastSeq < this.broadcastAcked) this.broadcastAcked = w.broadcastLastSeq;
        this.want = [w.lastSeq, w.broadcastLastSeq];
        this.o.onWelcome?.(w);
        this.armPing();
        this.pull(INBOX);
        this.pull(BROADCAST);
        break;
      }
      case "notify":
        this.want[frame.stream] = Math.max(this.want[frame.stream], frame.lastSeq);
        this.pull(frame.stream);
        break;
      case "messages": {
        const s = frame.stream;
        // Handed out in order, one at a time; acked once handled. A number already handled is dropped.
        this.queue = this.queue.then(async () => {
          let newest = this.acked(s);
          for (const m of frame.messages) {
            if (m.seq <= newest) continue;
            await this.o.onMessage(m);
            newest = m.seq;
            if (s === BROADCAST) this.broadcastAcked = Math.max(this.broadcastAcked, newest);
          }
          // Nothing to read up to lastSeq (expired or evicted unread): move past it.
          if (frame.messages.length === 0 && frame.lastSeq > newest) newest = frame.lastSeq;
          this.want[s] = Math.max(frame.lastSeq, newest); // the server's answer: what is there now
          if (s === BROADCAST) {
            this.broadcastAcked = Math.max(this.broadcastAcked, newest); // not acked: its own cursor, for HELLO
          } else if (newest > this.lastAcked) {
            this.lastAcked = newest;
            // An ack belongs to its socket: after a reconnect, HELLO's lastAcked carries it.
            if (generation === this.generation) this.send(new Writer(0x03).varint(INBOX).varint(newest).done());
          }
          if (generation !== this.generation) return;
          this.pulling[s] = false;
          this.pull(s);
        });
        break;
      }
      case "pong":
        this.heartbeatSeconds = frame.heartbeatSeconds;
        break;
      case "goaway":
        this.goaway = frame.goaway;
        break;
    }
  }

  private acked(stream: number): number {
    return stream === BROADCAST ? this.broadcastAcked : this.lastAcked;
  }

  private pull(stream: number): void {
    if (!this.pulling[stream] && this.want[stream] > this.acked(stream)) {
      this.pulling[stream] = true;
      this.send(new Writer(0x02).varint(stream).varint(this.acked(stream)).varint(256).done());
    }
  }

  private armPing(): void {
    if (this.pinger) clearTimeout(this.pinger);
    this.pinger = setTimeout(() => {
      this.send(new Writer(0x04).varint(this.o.network ?? Network.Unknown).done());
      this.armPing();
    }, Math.max(this.heartbeatSeconds, 1) * 1000);
  }
}
