/**
 * moleculer-web treats a function alias as middleware and looks for an action after it; ours
 * answer the request themselves, so they end with this marker instead of next(). It travels as a
 * 4xx-coded error (so moleculer-web does not log it) to replyError, which leaves the response alone.
 */
class ResponseSent extends Error {
	readonly code = 499;
	readonly type = "RESPONSE_SENT";
}
export const RESPONSE_SENT = new ResponseSent("response already sent");
