/**
 * Loaded with `--require` into a chatmesh node under benchmark (never by chatmesh itself): SIGUSR2
 * switches the node's metrics off or on at run time through Moleculer's own flag
 * (`broker.metrics.opts.enabled`, which every registry write and `isMetricsEnabled()` read), so one
 * process can be measured both ways. What was installed at start stays (the metrics middleware's
 * wrappers keep counting locally, and the listeners of chatmesh's HTTP metrics stay), so "off" here
 * still pays a little of the cost.
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
