/**
 * Counts the commands ioredis clients send and the round trips they take: a new trip starts with
 * the first command sent after an answer came back, so commands sent before any answer (a
 * pipeline, Promise.all, MULTI … EXEC) share one. Shared by bench/trips.js and
 * bench/name-search.js. `watch(client)` counts one more client into the same figures;
 * `reset()` starts a new count; `names` lists the commands sent since.
 */
export function countTrips(client) {
  let answered = true;
  const count = {
    names: [],
    trips: 0,
    reset() {
      count.names = [];
      count.trips = 0;
    },
    watch(watched) {
      const send = watched.sendCommand.bind(watched);
      watched.sendCommand = (command, ...rest) => {
        count.names.push(command.name);
        if (answered) {
          answered = false;
          count.trips++;
        }
        const done = () => {
          answered = true;
        };
        command.promise.then(done, done);
        return send(command, ...rest);
      };
    },
  };
  count.watch(client);
  return count;
}
