'use strict';
// A tour of the client against one node, printed as one JSON object (the lab test reads it):
// members, the first membership event, a lock taken and given back, HA status, a switch.
//   node examples/tour.js HOST CERT_PREFIX SLOT LOCK SERVICE_DOMAIN SERVICE_SLOT
const { SkygeNode } = require('..');

async function main() {
  const [host, cert, slot, lock, domain, serviceSlot] = process.argv.slice(2);
  const node = new SkygeNode({ host, cert });
  const out = {};
  try {
    const view = await node.members();
    out.members = view.members.map((m) => m.node.domain);
    out.first_event = await new Promise((resolve, reject) => {
      const call = node.watchMembership((event) => { call.cancel(); resolve(event.event); }, reject);
    });
    const session = node.lockSession('node tour');
    const granted = await session.acquire(Number(slot), Number(lock));
    out.fencing_token = granted.fencing_token;
    await session.release(Number(slot), Number(lock));
    out.released = true;
    session.close();
    const status = await node.haStatus();
    const service = status.services.find((s) => s.slot === Number(serviceSlot) && s.type === 'TAKEOVER_FIFO');
    out.before = { active: service.active_domain, waiting: service.waiting_domains };
    const reply = await node.switchService({ domain: Number(domain), type: 'fifo', slot: Number(serviceSlot) });
    out.switch_message = reply.message;
  } finally {
    node.close();
  }
  console.log(JSON.stringify(out));
}

main().catch((error) => { console.error(`tour failed: ${error.message}`); process.exit(1); });
