/** The names the jobs service broadcasts under, shared with the gateways that listen. */

/** Every job event (progress, end), for the gateways: the owner's sockets and SSE streams. */
export const JOB_EVENT = "jobs.event";
/** To every jobs node: the worker running the job aborts it at once. */
export const JOB_CANCEL_EVENT = "jobs.cancel";
