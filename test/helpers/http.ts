/** A small JSON client over fetch for tests: status, parsed body and headers of each answer. */
export interface ApiResponse<T = Record<string, unknown>> {
	status: number;
	body: T;
	headers: Headers;
}

export interface RequestOptions {
	token?: string;
	body?: unknown;
	/** Sent as is, for malformed bodies. */
	rawBody?: string;
	headers?: Record<string, string>;
}

export function apiClient(baseUrl: string) {
	async function request<T = Record<string, unknown>>(method: string, path: string, opts: RequestOptions = {}): Promise<ApiResponse<T>> {
		const headers: Record<string, string> = { ...opts.headers };
		if (opts.token) headers.authorization = `Bearer ${opts.token}`;
		let body: string | undefined = opts.rawBody;
		if (opts.body !== undefined) body = JSON.stringify(opts.body);
		if (body !== undefined) headers["content-type"] ??= "application/json";
		const res = await fetch(`${baseUrl}${path}`, { method, headers, body });
		const text = await res.text();
		let parsed: unknown;
		try {
			parsed = text ? JSON.parse(text) : undefined;
		} catch {
			parsed = text;
		}
		return { status: res.status, body: parsed as T, headers: res.headers };
	}
	return {
		request,
		get: <T = Record<string, unknown>>(path: string, opts?: RequestOptions) => request<T>("GET", path, opts),
		post: <T = Record<string, unknown>>(path: string, opts?: RequestOptions) => request<T>("POST", path, opts),
		put: <T = Record<string, unknown>>(path: string, opts?: RequestOptions) => request<T>("PUT", path, opts),
		patch: <T = Record<string, unknown>>(path: string, opts?: RequestOptions) => request<T>("PATCH", path, opts),
		delete: <T = Record<string, unknown>>(path: string, opts?: RequestOptions) => request<T>("DELETE", path, opts)
	};
}

export type ApiClient = ReturnType<typeof apiClient>;

export interface Session {
	userId: string;
	email: string;
	password: string;
	accessToken: string;
	refreshToken: string;
}

let counter = 0;

/** Registers a fresh user and returns its credentials. */
export async function signUp(api: ApiClient, label = "user"): Promise<Session> {
	counter += 1;
	const email = `${label}-${Date.now()}-${counter}-${Math.random().toString(36).slice(2, 8)}@example.test`;
	const password = `correct horse ${counter} battery staple`;
	const res = await api.post<{ user: { id: string }; accessToken: string; refreshToken: string }>("/api/auth/register", {
		body: { email, password }
	});
	if (res.status !== 201) throw new Error(`sign-up failed: ${res.status} ${JSON.stringify(res.body)}`);
	return { userId: res.body.user.id, email, password, accessToken: res.body.accessToken, refreshToken: res.body.refreshToken };
}
