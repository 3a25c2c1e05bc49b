/**
 * Reports and exports in the web app, driven in Debian's Chromium through playwright-core against
 * a chatmesh node started here (PostgreSQL, Redis, the jobs service on its embedded transport)
 * whose model is the simulator, slowed down so a report's progress is seen moving. Screenshots go
 * to artifacts/screenshots/.
 */
import fs from "node:fs/promises";
import path from "node:path";
import { chromium, type Browser, type BrowserContext, type Download, type Page } from "playwright-core";
import { afterEach, describe, expect, it } from "vitest";
import type { SimulatorHandle } from "../../simulator/simulator";
import { withChatNode, type TestNode } from "../helpers/fixtures";
import type { ApiClient } from "../helpers/http";
import { REPO_ROOT } from "../helpers/infra";
import { waitFor as waitForCondition } from "../helpers/wait";

const CHROMIUM = "/usr/bin/chromium";
const CHROMIUM_ARGS = [
	"--headless",
	"--no-sandbox",
	"--disable-gpu",
	"--disable-background-networking",
	"--no-first-run",
	"--disable-component-update",
	"--disable-sync"
];
const SHOTS = path.join(REPO_ROOT, "artifacts", "screenshots");
/** Answers of about a second each: a report of four sections takes a few seconds. */
const SLOW = { tokenIntervalMs: 40, outputTokens: 25 };

const waitFor = <T>(what: string, probe: () => Promise<T | undefined | null | false>, timeoutMs = 30_000, intervalMs = 50) =>
	waitForCondition(probe, { what, timeoutMs, intervalMs }) as Promise<T>;

interface JobRecord {
	id: string;
	kind: string;
	state: string;
	progress: { current: number; total: number; step: string };
	/** The kind's result summary (`result.summary` in the first draft of the API, so both are read). */
	result?: (Record<string, unknown> & { summary?: Record<string, unknown> }) | null;
}

let counter = 0;

describe("reports and exports in the web app", () => {
	let sim: SimulatorHandle;
	let node: TestNode;
	let api: ApiClient;
	let browser: Browser;
	const contexts: BrowserContext[] = [];
	const pageErrors: string[] = [];

	withChatNode({
		label: "jobs-e2e",
		simulator: SLOW,
		timeoutMs: 90_000,
		async started(f) {
			({ node, api, sim } = f);
			await fs.mkdir(SHOTS, { recursive: true });
			browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
		},
		async stopping() {
			for (const context of contexts) await context.close().catch(() => undefined);
			await browser?.close();
		}
	});

	afterEach(() => {
		sim.configure(SLOW);
		expect(pageErrors.splice(0)).toEqual([]);
	});

	/** A signed-up user in a fresh browser context, with one answered conversation open. */
	async function userWithConversation(question: string) {
		const context = await browser.newContext({ viewport: { width: 1280, height: 800 }, acceptDownloads: true });
		contexts.push(context);
		const page = await context.newPage();
		page.on("pageerror", err => pageErrors.push(`pageerror: ${err.message}`));
		page.on("console", msg => {
			if (msg.type() === "error" && !/Failed to load resource/.test(msg.text())) pageErrors.push(`console: ${msg.text()}`);
		});
		// What the server pushed over socket.io, to tell live updates from polls.
		const frames: string[] = [];
		page.on("websocket", ws => ws.on("framereceived", frame => frames.push(String(frame.payload))));
		await page.goto(node.baseUrl);
		counter += 1;
		const creds = { email: `jobs-${Date.now()}-${counter}@example.test`, password: `a long pass phrase ${counter}` };
		await page.getByRole("button", { name: "Create an account" }).click();
		await page.getByLabel("Email").fill(creds.email);
		await page.getByLabel("Password").fill(creds.password);
		await page.getByRole("button", { name: "Create account" }).click();
		const box = page.getByRole("textbox", { name: "Message" });
		await box.waitFor({ state: "visible" });
		await box.fill(question);
		await box.press("Enter");
		await waitFor("the answer to complete", async () => (await page.locator(".msg--assistant").last().getAttribute("data-status")) === "completed");
		const login = await api.post<{ accessToken: string }>("/api/auth/login", { body: creds });
		expect(login.status).toBe(200);
		return { page, frames, token: login.body.accessToken };
	}

	async function startFromMenu(page: Page, action: string) {
		await page.getByRole("button", { name: "Conversation actions" }).click();
		await page.getByRole("menuitem", { name: action }).click();
	}

	const jobItem = (page: Page, label: RegExp) => page.locator(".job").filter({ hasText: label });

	/** Clicks the job's Download button and reads the file the browser saved. */
	async function downloadFrom(page: Page, label: RegExp): Promise<{ download: Download; text: string }> {
		const button = jobItem(page, label).getByRole("button", { name: /^Download/ });
		await button.waitFor({ state: "visible", timeout: 60_000 });
		const [download] = await Promise.all([page.waitForEvent("download"), button.click()]);
		const file = await download.path();
		return { download, text: await fs.readFile(file, "utf8") };
	}

	it("creates a report from a conversation, shows its progress, and downloads the Markdown", async () => {
		const { page, frames, token } = await userWithConversation("Plan a three-day trip to Lisbon");
		const authorizations: Array<string | undefined> = [];
		page.on("request", req => {
			if (/\/api\/jobs\/[^/]+\/result$/.test(req.url())) authorizations.push(req.headers().authorization);
		});

		await startFromMenu(page, "Create report");
		const item = jobItem(page, /^Report · /);
		await item.waitFor();
		const jobId = (await item.getAttribute("data-id")) as string;
		// The bar moves in steps before the report is ready.
		const values = new Set<number>();
		let midShot = false;
		await waitFor(
			"the report to be ready",
			async () => {
				const value = Number(await item.locator("progress").getAttribute("value"));
				if (value > 0 && value < 100) {
					values.add(value);
					if (!midShot) {
						midShot = true;
						await page.screenshot({ path: path.join(SHOTS, "jobs-01-report-progress.png") });
					}
				}
				return (await item.getAttribute("data-state")) === "succeeded";
			},
			60_000,
			30
		);
		expect(values.size).toBeGreaterThanOrEqual(2);
		expect(await item.locator(".job__status").textContent()).toBe("Ready");
		await page.screenshot({ path: path.join(SHOTS, "jobs-02-report-ready.png") });

		const { download, text } = await downloadFrom(page, /^Report · /);
		expect(download.suggestedFilename()).toBe(`report-${jobId}.md`);
		const record = await api.get<JobRecord>(`/api/jobs/${jobId}`, { token });
		expect(record.status).toBe(200);
		expect(record.body.state).toBe("succeeded");
		const summary = (record.body.result?.summary ?? record.body.result) as { title: string; sections: string[] };
		expect(text.startsWith(`# ${summary.title}`)).toBe(true);
		for (const [i, title] of summary.sections.entries()) expect(text).toContain(`## ${i + 1}. ${title}`);
		// The download carried the app's own bearer token: a plain link could not have.
		const pageToken = await page.evaluate("JSON.parse(localStorage.getItem('chatmesh.session')).accessToken");
		expect(authorizations).toEqual([`Bearer ${pageToken}`]);
		// Progress and the end came live over socket.io.
		expect(frames.some(f => f.includes('"job:progress"') && f.includes(jobId))).toBe(true);
		expect(frames.some(f => f.includes('"job:done"') && f.includes(jobId))).toBe(true);

		// A reload finds the job again, still ready to download.
		await page.reload();
		await jobItem(page, /^Report · /)
			.getByRole("button", { name: /^Download/ })
			.waitFor();
	}, 90_000);

	it("exports the conversation as Markdown and as JSON, with its messages", async () => {
		sim.configure({ tokenIntervalMs: 0, outputTokens: 12 });
		const { page } = await userWithConversation("Which bridges cross the Tagus?");
		const answer = ((await page.locator(".msg--assistant .msg__body").last().textContent()) ?? "").trim();

		await startFromMenu(page, "Export as Markdown");
		const markdown = await downloadFrom(page, /^Export · /);
		expect(markdown.download.suggestedFilename()).toMatch(/^chatmesh-export-\d{4}-\d{2}-\d{2}\.md$/);
		expect(markdown.text).toContain("Which bridges cross the Tagus?");
		expect(markdown.text.replace(/\s+/g, " ")).toContain(answer.replace(/\s+/g, " "));

		await startFromMenu(page, "Export as JSON");
		const json = await downloadFrom(page, /^Export \(JSON\) · /);
		expect(json.download.suggestedFilename()).toMatch(/^chatmesh-export-\d{4}-\d{2}-\d{2}\.json$/);
		const parsed = JSON.parse(json.text) as { conversations: Array<{ messages: Array<{ role: string; content: string }> }> };
		expect(parsed.conversations).toHaveLength(1);
		expect(parsed.conversations[0].messages.map(m => m.role)).toEqual(["user", "assistant"]);
		expect(parsed.conversations[0].messages[0].content).toBe("Which bridges cross the Tagus?");
		await page.screenshot({ path: path.join(SHOTS, "jobs-03-exports.png") });

		// Finished jobs can be dismissed.
		await jobItem(page, /^Export · /)
			.getByRole("button", { name: /^Dismiss/ })
			.click();
		await waitFor("the dismissed job to go", async () => (await jobItem(page, /^Export · /).count()) === 0);
	}, 90_000);

	it("cancels a running report from the panel", async () => {
		const { page, token } = await userWithConversation("Tell me about old trams");
		sim.configure({ tokenIntervalMs: 200, outputTokens: 60 });
		await startFromMenu(page, "Create report");
		const item = jobItem(page, /^Report · /);
		await item.waitFor();
		const jobId = (await item.getAttribute("data-id")) as string;
		// A worker has taken it (its first progress is in), then it is stopped.
		await waitFor("the job to run", async () => (await item.getAttribute("data-state")) === "running");
		await item.getByRole("button", { name: /^Cancel/ }).click();
		await waitFor("the job to show cancelled", async () => (await item.getAttribute("data-state")) === "cancelled");
		expect(await item.locator(".job__status").textContent()).toBe("Cancelled");
		expect(await item.getByRole("button", { name: /^Download/ }).count()).toBe(0);
		const record = await api.get<JobRecord>(`/api/jobs/${jobId}`, { token });
		expect(record.body.state).toBe("cancelled");
	}, 90_000);
});
