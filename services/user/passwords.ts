/**
 * Password hashing (argon2id through @node-rs/argon2, with its OWASP-recommended defaults) and
 * the password rules, stated in the error when a password breaks them.
 */
import { hash, verify } from "@node-rs/argon2";
import { BadRequestError, ERR_WEAK_PASSWORD } from "../../lib/errors";

const PASSWORD_RULES = ["at least 10 characters", "at most 128 characters", "not the same as the email address"];

export function assertPasswordRules(password: string, email: string): void {
	const broken: string[] = [];
	if ([...password].length < 10) broken.push(PASSWORD_RULES[0]);
	if ([...password].length > 128) broken.push(PASSWORD_RULES[1]);
	if (password.trim().toLowerCase() === email.trim().toLowerCase()) broken.push(PASSWORD_RULES[2]);
	if (broken.length) throw new BadRequestError(`Password must be ${PASSWORD_RULES.join(", ")}`, { rules: PASSWORD_RULES, broken }, ERR_WEAK_PASSWORD);
}

export function hashPassword(password: string): Promise<string> {
	return hash(password);
}

// Verified when the email is unknown, so a missing account takes as long as a wrong password.
let dummyHash: Promise<string> | undefined;

export async function verifyPassword(stored: string | undefined, password: string): Promise<boolean> {
	if (stored === undefined) {
		dummyHash ??= hash("chatmesh-timing-equaliser");
		await verify(await dummyHash, password);
		return false;
	}
	return verify(stored, password);
}
