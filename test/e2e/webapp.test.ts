/**
 * The web app in public/, driven in Debian's Chromium through playwright-core against a chatmesh
 * node started here (PostgreSQL, Redis) whose model is the simulator, slowed down so answers
 * visibly stream. Screenshots of key steps go to artifacts/screenshots/.
 */
import fs from "node:fs/promises";
import http from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";
import { chromium, type Browser, type BrowserContext, type Page } from "playwright-core";
import { afterEach, describe, expect, it } from "vitest";
import type { SimulatorHandle } from "../../simulator/simulator";
import { sleep, waitFor as waitForCondition } from "../helpers/wait";
import type { ApiClient } from "../helpers/http";
import { REPO_ROOT } from "../helpers/infra";
import { relaxedRateLimits, type TestNode, withChatNode } from "../helpers/fixtures";

const CHROMIUM = "/usr/bin/chromium";
const CHROMIUM_ARGS = [
	"--headless",
	"--no-sandbox",
	"--disable-gpu",
	"--disable-background-networking",
	"--disable-quic",
	"--no-first-run",
	"--disable-component-update",
	"--disable-sync"
];
const SHOTS = path.join(REPO_ROOT, "artifacts", "screenshots");
const MODELS = ["sim-small", "sim-medium", "sim-large"];
interface StoredMessage {
	id: string;
	role: string;
	content: string;
	status: string;
	generationId: string | null;
}

/** A pass-through to the simulator that can make it echo the user's message (to feed the renderer hostile Markdown). */
async function startEchoProxy(target: string) {
	let echo = false;
	const server = http.createServer((req, res) => {
		const url = new URL(req.url ?? "/", target);
		const headers: http.OutgoingHttpHeaders = { ...req.headers, host: url.host };
		if (echo && url.pathname.endsWith("/chat/completions")) headers["x-simulator-echo"] = "true";
		const upstream = http.request(url, { method: req.method, headers }, answer => {
			res.writeHead(answer.statusCode ?? 502, answer.headers);
			answer.pipe(res);
		});
		upstream.on("error", () => res.destroy());
		// A cancelled answer aborts its upstream request: pass that on.
		res.on("close", () => upstream.destroy());
		req.pipe(upstream);
	});
	await new Promise<void>(resolve => server.listen(0, "127.0.0.1", resolve));
	return {
		baseURL: `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`,
		setEcho: (on: boolean) => (echo = on),
		close: () => new Promise<void>(resolve => server.close(() => resolve()))
	};
}

const normalize = (text: string | null) => (text ?? "").replace(/\s+/g, " ").trim();
const words = (text: string | null) => normalize(text).split(" ").filter(Boolean).length;

const waitFor = <T>(what: string, probe: () => Promise<T | undefined | null | false>, timeoutMs = 15_000, intervalMs = 50) =>
	waitForCondition(probe, { what, timeoutMs, intervalMs }) as Promise<T>;

let counter = 0;
function newCredentials(label: string) {
	counter += 1;
	return { email: `${label}-${Date.now()}-${counter}@example.test`, password: `a long pass phrase ${counter}` };
}

describe("the web app in Chromium", () => {
	let sim: SimulatorHandle;
	let proxy: Awaited<ReturnType<typeof startEchoProxy>>;
	let node: TestNode;
	let api: ApiClient;
	let browser: Browser;
	const contexts: BrowserContext[] = [];
	const pageErrors: string[] = [];

	withChatNode({
		label: "webapp",
		simulator: { tokenIntervalMs: 50, outputTokens: 40 },
		timeoutMs: 90_000,
		async env(f) {
			await fs.mkdir(SHOTS, { recursive: true });
			sim = f.sim;
			proxy = await startEchoProxy(sim.baseURL);
			return { LLM_PROVIDERS: JSON.stringify([{ name: "sim", baseURL: proxy.baseURL, models: MODELS }]) };
		},
		async started(f) {
			({ node, api } = f);
			browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
		},
		async stopping() {
			// Closing a context the browser already lost fails harmlessly: nothing is left to close.
			for (const context of contexts) await context.close().catch(() => undefined);
			await browser?.close();
			await proxy?.close();
		}
	});

	afterEach(async () => {
		sim.configure({ tokenIntervalMs: 50, outputTokens: 40 });
		proxy.setEcho(false);
		// Script errors (a CSP refusal included) fail the test that caused them.
		const errors = pageErrors.splice(0);
		expect(errors).toEqual([]);
	});

	async function openApp(viewport = { width: 1280, height: 800 }, extra: Parameters<Browser["newContext"]>[0] = {}): Promise<Page> {
		const context = await browser.newContext({ viewport, ...extra });
		contexts.push(context);
		const page = await context.newPage();
		page.on("pageerror", err => pageErrors.push(`pageerror: ${err.message}`));
		page.on("console", msg => {
			if (msg.type() === "error" && !/Failed to load resource/.test(msg.text())) pageErrors.push(`console: ${msg.text()}`);
		});
		await page.goto(node.baseUrl);
		return page;
	}

	async function signUpInUi(page: Page, label: string) {
		const creds = newCredentials(label);
		await page.getByRole("button", { name: "Create an account" }).click();
		await page.getByLabel("Email").fill(creds.email);
		await page.getByLabel("Password").fill(creds.password);
		await page.getByRole("button", { name: "Create account" }).click();
		await page.getByRole("textbox", { name: "Message" }).waitFor({ state: "visible" });
		return creds;
	}

	async function tokenFor(creds: { email: string; password: string }) {
		const res = await api.post<{ accessToken: string }>("/api/auth/login", { body: creds });
		expect(res.status).toBe(200);
		return res.body.accessToken;
	}

	async function send(page: Page, text: string) {
		const box = page.getByRole("textbox", { name: "Message" });
		await box.fill(text);
		await box.press("Enter");
	}

	const lastAnswer = (page: Page) => page.locator(".msg--assistant").last();
	const answerText = async (page: Page) => normalize(await lastAnswer(page).locator(".msg__body").textContent());
	const answerStatus = (page: Page) => lastAnswer(page).getAttribute("data-status");

	function conversationIdOf(page: Page): string {
		const match = /#\/c\/([0-9a-f-]{36})$/.exec(new URL(page.url()).hash);
		if (!match) throw new Error(`no conversation in ${page.url()}`);
		return match[1];
	}

	async function storedAnswer(token: string, conversationId: string): Promise<StoredMessage> {
		const res = await api.get<{ items: StoredMessage[] }>(`/api/conversations/${conversationId}/messages`, { token });
		expect(res.status).toBe(200);
		const answer = res.body.items.find(m => m.role === "assistant");
		if (!answer) throw new Error("no assistant message stored");
		return answer;
	}

	async function finalAnswer(token: string, conversationId: string) {
		return waitFor("the stored answer to end", async () => {
			const answer = await storedAnswer(token, conversationId);
			return answer.status !== "streaming" && answer;
		});
	}

	it("signs up, streams an answer in visible steps, and keeps the session over a reload and a new sign-in", async () => {
		const page = await openApp();
		await page.getByRole("heading", { name: "Sign in" }).waitFor();
		await page.screenshot({ path: path.join(SHOTS, "00-sign-in.png") });
		const creds = await signUpInUi(page, "stream");
		await page.screenshot({ path: path.join(SHOTS, "01-signed-up.png") });

		await send(page, "Tell me something about streams");
		await lastAnswer(page).waitFor();
		// Poll the DOM while the answer streams: the text must grow in several distinct steps.
		const seen = new Set<number>();
		let status: string | null = "streaming";
		let midShot = false;
		while (status === "streaming") {
			const n = words(await lastAnswer(page).locator(".msg__body").textContent());
			if (n > 0) seen.add(n);
			if (!midShot && n >= 15) {
				midShot = true;
				await page.screenshot({ path: path.join(SHOTS, "02-streaming.png") });
			}
			status = await answerStatus(page);
			// A sampling interval, to see the answer grow in steps.
			await sleep(30);
		}
		expect(status).toBe("completed");
		const partials = [...seen].filter(n => n < 40);
		expect(partials.length).toBeGreaterThanOrEqual(3);
		await page.screenshot({ path: path.join(SHOTS, "03-answered.png") });

		const conversationId = conversationIdOf(page);
		const token = await tokenFor(creds);
		const stored = await finalAnswer(token, conversationId);
		// The quota widget shows when the server reports usage, and stays hidden when it doesn't.
		const usage = await api.get<{ tokensUsed?: number; tokensLimit?: number }>("/api/usage", { token });
		const reported = usage.status === 200 && typeof usage.body.tokensLimit === "number";
		expect(await page.locator("#usage").isVisible()).toBe(reported);
		if (reported) expect(await page.locator("#usage").getAttribute("aria-label")).toMatch(/^Token use: [\d,.\s]+ of [\d,.\s]+/);
		expect(stored.status).toBe("completed");
		expect(await answerText(page)).toBe(normalize(stored.content));
		// The conversation is listed, titled from the first message.
		await expect(page.locator(".conv__open").first().textContent()).resolves.toBe("Tell me something about streams");

		// A reload keeps the session and shows the stored conversation.
		await page.reload();
		await page.locator(".msg--assistant").first().waitFor();
		expect(await page.locator("#auth-view").isVisible()).toBe(false);
		expect(await page.locator(".msg").count()).toBe(2);
		expect(await answerText(page)).toBe(normalize(stored.content));

		// Sign out ends it; signing in again brings the conversation back.
		await page.getByRole("button", { name: "Sign out" }).click();
		await page.getByRole("heading", { name: "Sign in" }).waitFor();
		expect(await page.evaluate("localStorage.getItem('chatmesh.session')")).toBeNull();
		await page.reload();
		await page.getByRole("heading", { name: "Sign in" }).waitFor();
		await page.getByLabel("Email").fill(creds.email);
		await page.getByLabel("Password").fill("not the password at all");
		await page.getByRole("button", { name: "Sign in" }).click();
		await waitFor("the wrong-password message", async () => (await page.locator("#auth-error").textContent())?.includes("Wrong email or password"));
		await page.getByLabel("Password").fill(creds.password);
		await page.getByRole("button", { name: "Sign in" }).click();
		await page.getByRole("link", { name: "Tell me something about streams" }).waitFor();
	}, 60_000);

	it("stops an answer mid-stream: it ends as stopped and is stored cancelled", async () => {
		sim.configure({ outputTokens: 300, tokenIntervalMs: 50 });
		const page = await openApp();
		const creds = await signUpInUi(page, "stop");
		await send(page, "Write a very long story");
		await waitFor("a few words of the answer", async () => words(await lastAnswer(page).locator(".msg__body").textContent()) >= 6);
		const stop = page.getByRole("button", { name: "Stop generating" });
		expect(await stop.isVisible()).toBe(true);
		await stop.click();
		await waitFor("the answer to end", async () => (await answerStatus(page)) !== "streaming");
		expect(await answerStatus(page)).toBe("cancelled");
		expect(await lastAnswer(page).locator(".msg__status").textContent()).toBe("Stopped");
		// The composer is back to sending, and the answer can be retried.
		expect(await page.getByRole("button", { name: "Send message" }).isVisible()).toBe(true);
		expect(await page.getByRole("button", { name: "Retry the last message" }).isVisible()).toBe(true);
		await page.screenshot({ path: path.join(SHOTS, "04-stopped.png") });

		const stored = await finalAnswer(await tokenFor(creds), conversationIdOf(page));
		expect(stored.status).toBe("cancelled");
		expect(words(stored.content)).toBeLessThan(300);
		expect(await answerText(page)).toBe(normalize(stored.content));

		// Retry re-sends the last user message into the same conversation.
		sim.configure({ outputTokens: 8, tokenIntervalMs: 5 });
		await page.getByRole("button", { name: "Retry the last message" }).click();
		await waitFor("the retried answer", async () => (await page.locator(".msg--assistant").count()) === 2 && (await answerStatus(page)) === "completed");
		const users = await page.locator(".msg--user .msg__body").allTextContents();
		expect(users).toEqual(["Write a very long story", "Write a very long story"]);
	}, 60_000);

	// With what this tab kept in sessionStorage (resume after the last chunk seen), and without it
	// (another tab or device: rebuild the whole text from the first chunk).
	it.each([
		["with the tab's saved progress", false],
		["without any saved progress", true]
	])(
		"resumes an answer after a reload mid-stream %s, with no repeated text",
		async (label, clearSaved) => {
			sim.configure({ outputTokens: 70, tokenIntervalMs: 50 });
			const page = await openApp();
			const creds = await signUpInUi(page, "reload");
			await send(page, "Explain resumable streams");
			await waitFor("part of the answer", async () => words(await lastAnswer(page).locator(".msg__body").textContent()) >= 10);
			const before = await answerText(page);
			const saved = JSON.parse((await page.evaluate("sessionStorage.getItem('chatmesh.streams')")) as string) as Record<string, { lastSeq: number }>;
			expect(Object.values(saved)[0]?.lastSeq).toBeGreaterThan(0);
			if (clearSaved) await page.evaluate("sessionStorage.clear()");
			await page.reload();

			// After the reload the answer is still streaming and continues from where it was.
			await lastAnswer(page).waitFor();
			let sawStreaming = false;
			const lengths = new Set<number>();
			await waitFor(
				"the resumed answer to end",
				async () => {
					const status = await answerStatus(page);
					if (status === "streaming") {
						sawStreaming = true;
						lengths.add(words(await lastAnswer(page).locator(".msg__body").textContent()));
					}
					return status !== "streaming";
				},
				20_000,
				30
			);
			expect(sawStreaming).toBe(true);
			expect(lengths.size).toBeGreaterThanOrEqual(2);
			expect(await answerStatus(page)).toBe("completed");
			if (!clearSaved) await page.screenshot({ path: path.join(SHOTS, "05-resumed-after-reload.png") });

			const stored = await finalAnswer(await tokenFor(creds), conversationIdOf(page));
			const final = await answerText(page);
			expect(stored.status).toBe("completed");
			expect(final).toBe(normalize(stored.content));
			expect(words(final)).toBe(70);
			expect(final.startsWith(before)).toBe(true);
			// No doubled prefix: the opening words appear exactly once.
			const opening = before.split(" ").slice(0, 6).join(" ");
			expect(final.split(opening).length - 1).toBe(1);
			expect(label).toBeTruthy();
		},
		60_000
	);

	it("resumes an answer after the server drops the connection, with no repeated text", async () => {
		sim.configure({ outputTokens: 60, tokenIntervalMs: 50 });
		const page = await openApp();
		const creds = await signUpInUi(page, "drop");
		await send(page, "Keep talking while I lose the connection");
		await waitFor("part of the answer", async () => words(await lastAnswer(page).locator(".msg__body").textContent()) >= 8);
		const gateway = node.broker.getLocalService("gateway") as unknown as { io: { disconnectSockets(close: boolean): void } };
		gateway.io.disconnectSockets(true);
		await waitFor("the resumed answer to end", async () => (await answerStatus(page)) !== "streaming", 20_000);
		expect(await answerStatus(page)).toBe("completed");
		const stored = await finalAnswer(await tokenFor(creds), conversationIdOf(page));
		expect(await answerText(page)).toBe(normalize(stored.content));
		expect(words(await answerText(page))).toBe(60);
	}, 60_000);

	it("lists conversations most recent first, loads older ones on scroll, renames and deletes", async () => {
		const page = await openApp();
		const creds = await signUpInUi(page, "list");
		const token = await tokenFor(creds);
		const ids: string[] = [];
		for (let i = 1; i <= 45; i++) {
			const res = await api.post<{ id: string }>("/api/conversations", { token, body: { title: `Topic ${i}` } });
			expect(res.status).toBe(201);
			ids.push(res.body.id);
		}
		await page.reload();
		const titles = page.locator(".conv__open");
		await waitFor("the first page of conversations", async () => (await titles.count()) >= 30);
		// One page at first, newest first.
		expect(await titles.count()).toBe(30);
		expect((await titles.allTextContents()).slice(0, 3)).toEqual(["Topic 45", "Topic 44", "Topic 43"]);
		// Scrolling to the end of the list loads the rest.
		await page.locator("#conversation-scroll").hover();
		await page.mouse.wheel(0, 5000);
		await waitFor("older conversations", async () => (await titles.count()) === 45);
		expect((await titles.allTextContents()).at(-1)).toBe("Topic 1");

		// Rename with the keyboard: the button, type, Enter.
		await page.getByRole("button", { name: "Rename “Topic 45”" }).click();
		const input = page.getByRole("textbox", { name: "Conversation title" });
		await input.fill("Renamed topic");
		await input.press("Enter");
		await page.getByRole("link", { name: "Renamed topic" }).waitFor();
		await waitFor("the rename to be stored", async () => {
			const res = await api.get<{ title: string }>(`/api/conversations/${ids[44]}`, { token });
			return res.body.title === "Renamed topic";
		});
		await page.screenshot({ path: path.join(SHOTS, "06-conversations.png") });

		// Delete, after the confirmation.
		await page.getByRole("link", { name: "Topic 44" }).click();
		await waitFor("the conversation to open", async () => (await page.locator("#chat-title").textContent()) === "Topic 44");
		page.once("dialog", dialog => void dialog.accept());
		await page.getByRole("button", { name: "Delete “Topic 44”" }).click();
		await waitFor("the conversation to leave the list", async () => (await page.getByRole("link", { name: "Topic 44", exact: true }).count()) === 0);
		expect((await api.get(`/api/conversations/${ids[43]}`, { token })).status).toBe(404);
		expect(await page.locator("#chat-title").textContent()).toBe("New chat");
		// A refused confirmation deletes nothing.
		page.once("dialog", dialog => void dialog.dismiss());
		await page.getByRole("button", { name: "Delete “Topic 43”" }).click();
		expect((await api.get(`/api/conversations/${ids[42]}`, { token })).status).toBe(200);
		expect(await page.getByRole("link", { name: "Topic 43", exact: true }).count()).toBe(1);
	}, 60_000);

	it("shows hostile text as text: no script runs, in the user's message or in a Markdown answer", async () => {
		proxy.setEcho(true);
		sim.configure({ tokenIntervalMs: 5 });
		// The page itself may only run its own scripts.
		const index = await fetch(`${node.baseUrl}/`);
		expect(index.headers.get("content-type")).toMatch(/text\/html/);
		expect(index.headers.get("content-security-policy")).toContain("script-src 'self'");
		const page = await openApp();
		await signUpInUi(page, "xss");
		const script = "<script>window.__pwned=1</script>";
		const img = `<img src=x onerror="window.__pwned=2">`;
		const hostile = [
			`Hello ${script} and ${img}`,
			"",
			"A **bold** claim, a [bad link](javascript:window.__pwned=3) and a [good one](https://example.com/docs).",
			"",
			"```js",
			"const html = '<b>not bold</b>';",
			"```"
		].join("\n");
		await send(page, hostile);
		await waitFor("the echoed answer", async () => (await answerStatus(page)) === "completed");

		const user = page.locator(".msg--user .msg__body").last();
		expect(await user.textContent()).toBe(hostile);
		const answer = lastAnswer(page).locator(".msg__body");
		const answerContent = (await answer.textContent()) ?? "";
		expect(answerContent).toContain(script);
		expect(answerContent).toContain(img);
		// The Markdown did render, safely: bold, one real link, a code block holding the tag as text.
		expect(await answer.locator("strong").textContent()).toBe("bold");
		expect(await answer.locator("a").count()).toBe(1);
		expect(await answer.locator("a").getAttribute("href")).toBe("https://example.com/docs");
		expect(await answer.locator(".code-block code").textContent()).toBe("const html = '<b>not bold</b>';");
		// Nothing became markup: no script, image or bold-from-HTML anywhere in the conversation.
		expect(await page.locator(".message-list script, .message-list img, .message-list b").count()).toBe(0);
		expect(await page.getByText(script, { exact: false }).first().isVisible()).toBe(true);
		// Time passing is the point: a script that slipped through would have run by now.
		await sleep(300);
		expect(await page.evaluate("window.__pwned")).toBeUndefined();
		await page.screenshot({ path: path.join(SHOTS, "07-hostile-text.png") });

		// The same from the stored history after a reload.
		await page.reload();
		await lastAnswer(page).waitFor();
		await waitFor("the history", async () => (await page.locator(".msg--user .msg__body").last().textContent()) === hostile);
		expect(await page.locator(".message-list script, .message-list img, .message-list b").count()).toBe(0);
		expect(await page.evaluate("window.__pwned")).toBeUndefined();
	}, 60_000);

	it("shows tool calls and their results as they happen, and again from the history", async () => {
		sim.configure({ outputTokens: 12, tokenIntervalMs: 20 });
		const page = await openApp();
		await signUpInUi(page, "tools");
		await send(page, 'Please use the calculator {"expression": "6*7"} for me');
		const tool = lastAnswer(page).locator(".tool");
		await tool.waitFor();
		await waitFor("the answer", async () => (await answerStatus(page)) === "completed");
		expect(await tool.locator(".tool__name").textContent()).toBe("calculator");
		expect(await tool.getAttribute("data-state")).toBe("success");
		await tool.locator("summary").click();
		const parts = await tool.locator("pre").allTextContents();
		expect(parts[0]).toContain('"expression": "6*7"');
		expect(parts[1]).toContain("42");
		expect(await answerText(page)).toContain("Based on the tool results");
		await page.screenshot({ path: path.join(SHOTS, "08-tools.png") });

		await page.reload();
		await lastAnswer(page).locator(".tool").waitFor();
		expect(await lastAnswer(page).locator(".tool .tool__name").textContent()).toBe("calculator");
		expect((await lastAnswer(page).locator(".tool pre").allTextContents()).join(" ")).toContain("42");
	}, 60_000);

	it("works on a phone-sized screen: the composer fits, sends with a tap, and the list opens as a drawer", async () => {
		sim.configure({ outputTokens: 20, tokenIntervalMs: 20 });
		const viewport = { width: 390, height: 844 };
		const page = await openApp(viewport, { isMobile: true, hasTouch: true, deviceScaleFactor: 2 });
		await signUpInUi(page, "phone");
		const box = page.getByRole("textbox", { name: "Message" });
		const sendButton = page.getByRole("button", { name: "Send message" });
		for (const element of [box, sendButton]) {
			expect(await element.isVisible()).toBe(true);
			const rect = await element.boundingBox();
			if (!rect) throw new Error("a visible element has a bounding box");
			expect(rect.x).toBeGreaterThanOrEqual(0);
			expect(rect.y).toBeGreaterThanOrEqual(0);
			expect(rect.x + rect.width).toBeLessThanOrEqual(viewport.width);
			expect(rect.y + rect.height).toBeLessThanOrEqual(viewport.height);
		}
		// The page does not scroll sideways.
		expect(await page.evaluate("document.documentElement.scrollWidth")).toBeLessThanOrEqual(viewport.width);
		// The conversation list is a closed drawer.
		expect(await page.getByRole("link", { name: "Hello from my phone" }).count()).toBe(0);
		expect(await page.locator("#sidebar").isVisible()).toBe(false);

		await box.tap();
		await box.fill("Hello from my phone");
		await sendButton.tap();
		await waitFor("the answer", async () => (await answerStatus(page)) === "completed");
		expect(words(await answerText(page))).toBe(20);
		await page.screenshot({ path: path.join(SHOTS, "09-phone.png") });

		await page.getByRole("button", { name: "Show conversations" }).tap();
		const link = page.getByRole("link", { name: "Hello from my phone" });
		await link.waitFor({ state: "visible" });
		await waitFor("the drawer's slide to end", async () => (await page.evaluate("document.getAnimations().length")) === 0);
		await page.screenshot({ path: path.join(SHOTS, "10-phone-drawer.png") });
		await link.tap();
		await waitFor("the drawer to close", async () => !(await page.locator("#sidebar").isVisible()));
	}, 60_000);
});

describe("the web app's session over access-token expiry, and its error messages", () => {
	let node: TestNode;
	let browser: Browser;

	withChatNode({
		label: "webapp_ttl",
		simulator: { tokenIntervalMs: 10, outputTokens: 10 },
		timeoutMs: 90_000,
		// Two messages a minute per user, so the third one shows the rate-limit message.
		rateLimits: relaxedRateLimits({ perUser: { chat: { points: 2, durationS: 60 } } }),
		env: { ACCESS_TOKEN_TTL_S: "8" },
		async started(f) {
			node = f.node;
			browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
		},
		stopping: () => browser?.close()
	});

	it("refreshes the access token before it expires and keeps the same socket.io connection", async () => {
		const context = await browser.newContext();
		const page = await context.newPage();
		let websockets = 0;
		page.on("websocket", () => websockets++);
		await page.goto(node.baseUrl);
		await page.getByRole("button", { name: "Create an account" }).click();
		const creds = newCredentials("ttl");
		await page.getByLabel("Email").fill(creds.email);
		await page.getByLabel("Password").fill(creds.password);
		await page.getByRole("button", { name: "Create account" }).click();
		await page.getByRole("textbox", { name: "Message" }).waitFor();
		const session = async () => JSON.parse((await page.evaluate("localStorage.getItem('chatmesh.session')")) as string) as { accessToken: string };
		const first = (await session()).accessToken;

		// Well past the first token's life: the app renewed it (REST) and handed it to the socket.
		// Time passing is the point: the access token (8 s) must run out.
		await sleep(12_000);
		expect((await session()).accessToken).not.toBe(first);
		await page.getByRole("textbox", { name: "Message" }).fill("Still signed in?");
		await page.getByRole("textbox", { name: "Message" }).press("Enter");
		await waitFor("the answer", async () => (await page.locator(".msg--assistant").last().getAttribute("data-status")) === "completed");
		expect(await page.locator("#auth-view").isVisible()).toBe(false);
		// The server would have closed a connection whose token ran out: it never had to.
		expect(websockets).toBe(1);
		await context.close();
	}, 60_000);

	it("says when messages come too fast (with the wait) and when the network is gone, and keeps the unsent text", async () => {
		const context = await browser.newContext();
		const page = await context.newPage();
		await page.goto(node.baseUrl);
		await page.getByRole("button", { name: "Create an account" }).click();
		const creds = newCredentials("limits");
		await page.getByLabel("Email").fill(creds.email);
		await page.getByLabel("Password").fill(creds.password);
		await page.getByRole("button", { name: "Create account" }).click();
		const box = page.getByRole("textbox", { name: "Message" });
		await box.waitFor();
		for (const [i, text] of ["first", "second"].entries()) {
			await box.fill(text);
			await box.press("Enter");
			await waitFor(
				`the answer to ${text}`,
				async () =>
					(await page.locator(".msg--assistant").count()) === i + 1 &&
					(await page.locator(".msg--assistant").last().getAttribute("data-status")) === "completed"
			);
		}
		await box.fill("third, too soon");
		await box.press("Enter");
		const banner = page.getByRole("alert").filter({ hasText: "too fast" });
		await banner.waitFor();
		expect(await banner.textContent()).toMatch(/You're sending requests too fast\. Try again in \d+ s\./);
		expect(await box.inputValue()).toBe("third, too soon");
		expect(await page.locator(".msg--user .msg__body").allTextContents()).toEqual(["first", "second"]);
		await page.screenshot({ path: path.join(SHOTS, "11-rate-limited.png") });

		// Offline, then back: the header says so, and clears once connected again.
		const connection = page.locator("#connection");
		await context.setOffline(true);
		await waitFor("the offline notice", async () => (await connection.isVisible()) && (await connection.textContent()) === "Offline");
		await context.setOffline(false);
		await waitFor("the offline notice to clear", async () => !(await connection.isVisible()));
		await context.close();
	}, 60_000);
});
