// A gRPC client that resolves xds:///TARGET through @grpc/grpc-js-xds, bootstrapped from
// GRPC_XDS_BOOTSTRAP_CONFIG. For each line "N" on stdin it makes N calls to
// /test.Echo/Say, one after another, and prints a JSON line: answers (or error codes)
// and how many of each.
const grpc = require('@grpc/grpc-js');
require('@grpc/grpc-js-xds').register();
const readline = require('readline');

const client = new grpc.Client('xds:///' + process.argv[2], grpc.credentials.createInsecure());
const same = (b) => b;

function say() {
  return new Promise((resolve) => {
    client.makeUnaryRequest('/test.Echo/Say', same, same, Buffer.from('world'),
      { deadline: Date.now() + 10000 },
      (err, reply) => resolve(err ? 'ERROR ' + grpc.status[err.code] : reply.toString()));
  });
}

const lines = readline.createInterface({ input: process.stdin });
const queue = [];
let busy = false;
async function drain() {
  if (busy) return;
  busy = true;
  while (queue.length) {
    const n = queue.shift();
    const counts = {};
    for (let i = 0; i < n; i++) {
      const answer = await say();
      counts[answer] = (counts[answer] || 0) + 1;
    }
    process.stdout.write(JSON.stringify(counts) + '\n');
  }
  busy = false;
}
lines.on('line', (line) => { queue.push(parseInt(line, 10)); drain(); });
lines.on('close', () => { const wait = () => (busy || queue.length ? setTimeout(wait, 10) : process.exit(0)); wait(); });
