// A webhook destination for the bench (`node bench/lib/receiver.js <port>`): answers every POST
// 204 at once, counts them, and tells the count on GET /count. In its own process, so that the
// bridge's CPU figures do not include the receiving side.
import { createServer } from 'node:http';

let received = 0;
const server = createServer((request, response) => {
  if (request.method === 'GET' && request.url === '/count') {
    response.writeHead(200, { 'content-type': 'application/json' });
    response.end(JSON.stringify({ received }));
    return;
  }
  request.resume();
  request.on('end', () => {
    received++;
    response.writeHead(204);
    response.end();
  });
});
server.listen(Number(process.argv[2]), '127.0.0.1');
process.on('SIGTERM', () => server.close(() => process.exit(0)));
