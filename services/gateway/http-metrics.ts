/**
 * The gateway's HTTP, socket.io and SSE metrics (names in lib/metrics.ts). Requests are counted
 * when their response closes, by route template (moleculer-web's alias path such as
 * `/api/conversations/:id/messages`, never the raw path), method and status; open sockets and
 * SSE streams are read when Prometheus scrapes.
 */
import type { IncomingMessage, Server, ServerResponse } from "node:http";
import type { ServiceBroker } from "moleculer";
import { increment, onScrape, setGauge } from "../../lib/metrics";

const METHODS: ReadonlySet<string> = new Set(["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]);

interface RoutedRequest extends IncomingMessage {
	$alias?: { fullPath?: string };
	$route?: { path?: string };
}

/** The route template a request matched: an alias path, a route's prefix, the web app's files, or "unmatched". */
export function routeTemplate(req: IncomingMessage, status: number): string {
	const { $alias, $route } = req as RoutedRequest;
	if ($alias?.fullPath) return $alias.fullPath;
	if ($route) return `${$route.path || ""}/*`;
	// Served before any route: the web app's static files, or nothing at all.
	return status < 400 ? "(static)" : "(unmatched)";
}

/** Counts every request the server answers (while the registry is on); returns the function that stops counting. */
export function countHttpRequests(broker: ServiceBroker, server: Server): () => void {
	if (!broker.isMetricsEnabled()) return () => {};
	const onRequest = (req: IncomingMessage, res: ServerResponse) => {
		if (!broker.isMetricsEnabled()) return;
		res.once("close", () => {
			const status = res.statusCode;
			const method = req.method && METHODS.has(req.method) ? req.method : "other";
			increment(broker, "httpRequests", { route: routeTemplate(req, status), method, status: String(status) });
		});
	};
	server.prependListener("request", onRequest);
	return () => server.off("request", onRequest);
}

/** The gateway's live connections, read at scrape time. */
export function collectConnections(broker: ServiceBroker, live: { sockets(): number; sseStreams(): number }): () => void {
	return onScrape(broker, () => {
		setGauge(broker, "socketConnections", live.sockets());
		setGauge(broker, "sseStreams", live.sseStreams());
	});
}
