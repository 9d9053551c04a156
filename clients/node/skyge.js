'use strict';
/**
 * Node.js client of skyge: the generated-at-load gRPC stubs of a node's daemons (from protos/,
 * with @grpc/proto-loader) and helpers for what applications do most: hold a lock in a session,
 * watch the membership, read HA status, switch a service.
 *
 * A node is reached on its Unix sockets (as root on the node: `{root: '/'}`) or over TCP with
 * mutual TLS (`{host: '10.0.0.11', cert: '/path/alice'}`: alice.crt, alice.key and ca.crt beside
 * them, made by `skyge ca issue --admin alice`).
 */
const fs = require('fs');
const path = require('path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const PROTOS = path.resolve(__dirname, '..', '..', 'protos');
const SERVICES = { heartbeat: 'Heartbeat', bus: 'Bus', lock: 'Lock', ha: 'Ha', emon: 'Emon' };
const PORTS = { heartbeat: 7410, bus: 7411, lock: 7412, ha: 7413, emon: 7414 };
/** the name every daemon's certificate carries (services/common/tls.py) */
const SERVER_NAME = 'cluster.skyge.internal';

let api = null;
function loadApi() {
  if (api === null) {
    const definition = protoLoader.loadSync(
      Object.keys(SERVICES).map((d) => `skyge/v1/${d}.proto`),
      { includeDirs: [PROTOS], keepCase: true, longs: String, enums: String, defaults: true,
        oneofs: true });
    api = grpc.loadPackageDefinition(definition).skyge.v1;
  }
  return api;
}

function unary(stub, rpc, request, deadlineMs = 10000) {
  return new Promise((resolve, reject) => {
    stub[rpc](request, { deadline: Date.now() + deadlineMs }, (error, reply) => {
      if (error) reject(error); else resolve(reply);
    });
  });
}

/** A lock session: acquire() resolves with the Granted event, rejects on failure or loss. */
class LockSession {
  constructor(stub, label) {
    this.call = stub.Session();
    this.waiting = new Map(); // "slot/lock" -> {resolve, reject}
    this.released = new Map();
    this.onLost = null;
    this.call.on('data', (event) => this._event(event));
    this.call.on('error', (error) => {
      for (const pending of this.waiting.values()) pending.reject(error);
      this.waiting.clear();
    });
    this.call.write({ open: { label, client_pid: process.pid } });
  }

  _event(event) {
    const kind = event.event;
    const body = event[kind];
    const key = body && body.slot !== undefined ? `${body.slot}/${body.lock}` : null;
    if (kind === 'granted' && this.waiting.has(key)) {
      this.waiting.get(key).resolve(body);
      this.waiting.delete(key);
    } else if (kind === 'failed' && this.waiting.has(key)) {
      this.waiting.get(key).reject(new Error(`lock ${key} not taken: ${body.reason} ${body.detail}`));
      this.waiting.delete(key);
    } else if (kind === 'released' && this.released.has(key)) {
      this.released.get(key)();
      this.released.delete(key);
    } else if (kind === 'lost' && this.onLost) {
      this.onLost(body);
    }
  }

  acquire(slot, lock, { tryOnly = false, timeoutMs = 0 } = {}) {
    return new Promise((resolve, reject) => {
      this.waiting.set(`${slot}/${lock}`, { resolve, reject });
      this.call.write({ acquire: { slot, lock, try_only: tryOnly, timeout_ms: timeoutMs } });
    });
  }

  release(slot, lock) {
    return new Promise((resolve) => {
      this.released.set(`${slot}/${lock}`, resolve);
      this.call.write({ release: { slot, lock } });
    });
  }

  close() {
    this.call.end();
    this.call.cancel();
  }
}

class SkygeNode {
  /** @param {{root?: string, host?: string, cert?: string}} options */
  constructor({ root = process.env.SKYGE_ROOT || '/', host = null, cert = null } = {}) {
    this.root = root;
    this.host = host;
    this.stubs = {};
    if (host) {
      if (!cert) throw new Error('cert: TCP needs a certificate of the cluster CA (PREFIX of PREFIX.crt/.key)');
      const folder = path.dirname(cert);
      this.credentials = grpc.credentials.createSsl(
        fs.readFileSync(path.join(folder, 'ca.crt')), fs.readFileSync(`${cert}.key`),
        fs.readFileSync(`${cert}.crt`));
      this.options = { 'grpc.ssl_target_name_override': SERVER_NAME };
    } else {
      this.credentials = grpc.credentials.createInsecure();
      this.options = {};
    }
  }

  /** The stub of one daemon's main service: 'heartbeat', 'bus', 'lock', 'ha' or 'emon'. */
  stub(daemon) {
    if (!(daemon in SERVICES)) throw new Error(`unknown daemon ${daemon}`);
    if (!this.stubs[daemon]) {
      const target = this.host ? `${this.host}:${PORTS[daemon]}`
        : `unix:${path.join(this.root, 'run', 'skyge', `${daemon}.sock`)}`;
      const Service = loadApi()[SERVICES[daemon]];
      this.stubs[daemon] = new Service(target, this.credentials, this.options);
    }
    return this.stubs[daemon];
  }

  members() { return unary(this.stub('heartbeat'), 'ListMembers', {}); }

  /** Calls onEvent(MembershipEvent) for the snapshot and every change; returns the call. */
  watchMembership(onEvent, onError = () => {}) {
    const call = this.stub('heartbeat').WatchMembership({});
    call.on('data', onEvent);
    call.on('error', (error) => { if (error.code !== grpc.status.CANCELLED) onError(error); });
    return call;
  }

  haStatus() { return unary(this.stub('ha'), 'Status', {}); }

  /** Switch a service to its next waiter (`skyge ha svc -a switch`). */
  switchService({ domain, type, slot }) {
    return unary(this.stub('ha'), 'Command',
      { domain, type: `TAKEOVER_${type.toUpperCase()}`, slot, action: 'ACTION_SWITCH' }, 60000);
  }

  lockSession(label = `node ${process.pid}`) { return new LockSession(this.stub('lock'), label); }

  close() {
    for (const stub of Object.values(this.stubs)) stub.close();
    this.stubs = {};
  }
}

module.exports = { SkygeNode, LockSession, SERVER_NAME, PORTS };
