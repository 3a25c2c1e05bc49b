/**
 * Loaded with `--require` into a chatmesh node under benchmark (never by chatmesh itself): SIGUSR2
 * switches the node's metrics off or on at run time through Moleculer's own flag
 * (`broker.metrics.opts.enabled`, which every registry write and `isMetricsEnabled()` read), so one
 * process can be measured both ways. chatmesh's metrics wrappers (actions, events, HTTP requests)
 * read the same flag on every call, so "off" leaves only Moleculer's process-metrics timer, which
 * still reads its values every 5 s.
 */
const { ServiceBroker } = require("moleculer");

const brokers = [];
const start = ServiceBroker.prototype.start;
ServiceBroker.prototype.start = function (...args) {
	brokers.push(this);
	return start.apply(this, args);
};
process.on("SIGUSR2", () => {
	for (const broker of brokers) broker.metrics.opts.enabled = !broker.metrics.opts.enabled;
});
