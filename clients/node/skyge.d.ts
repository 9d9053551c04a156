// Types of the skyge Node.js client (skyge.js). Messages follow protos/skyge/v1 with the
// .proto field names (keepCase); 64-bit integers are strings, enums their names.
import type { ClientDuplexStream, ClientReadableStream } from '@grpc/grpc-js';

export declare const SERVER_NAME: string;
export declare const PORTS: Record<'heartbeat' | 'bus' | 'lock' | 'ha' | 'emon', number>;

export interface Granted { slot: number; lock: number; fencing_token: string; valid_until_boot_ns: string; }
export interface Member { node: { netid: number; domain: number }; paths: unknown[]; grpc_ports: Record<string, number>; }
export interface MembershipView { view_id: string; members: Member[]; }
export interface ServiceStatus {
  type: string; slot: number; name: string; state: string; active_domain: number;
  waiting_domains: number[]; fencing_token: string; fail_count: number;
}
export interface StatusReply { services: ServiceStatus[]; }

export declare class LockSession {
  onLost: ((lost: { slot: number; lock: number; reason: string; detail: string }) => void) | null;
  acquire(slot: number, lock: number, options?: { tryOnly?: boolean; timeoutMs?: number }): Promise<Granted>;
  release(slot: number, lock: number): Promise<void>;
  close(): void;
  readonly call: ClientDuplexStream<unknown, unknown>;
}

export declare class SkygeNode {
  constructor(options?: { root?: string; host?: string; cert?: string });
  stub(daemon: 'heartbeat' | 'bus' | 'lock' | 'ha' | 'emon'): any;
  members(): Promise<MembershipView>;
  watchMembership(onEvent: (event: any) => void, onError?: (error: Error) => void): ClientReadableStream<unknown>;
  haStatus(): Promise<StatusReply>;
  switchService(service: { domain: number; type: 'random' | 'fifo' | 'stack'; slot: number }): Promise<unknown>;
  lockSession(label?: string): LockSession;
  close(): void;
}
