/**
 * A small Markdown renderer that builds DOM nodes and never parses HTML: every piece of text
 * enters the page as a text node, so nothing a user or a model writes can become markup or run.
 * It covers what chat answers use: paragraphs, headings, lists (nested by indentation), block
 * quotes, fenced code, tables and rules; inline code, bold, italic, strike-through and links
 * (http, https and mailto only). An unfinished code fence (an answer still streaming) renders
 * as code so far. Raw HTML in the source is shown as the text it is.
 */

const FENCE = /^ {0,3}(`{3,}|~{3,})\s*([^\s`]*)[^`]*$/;
const HEADING = /^ {0,3}(#{1,6})\s+(.*?)(?:\s+#+)?\s*$/;
const RULE = /^ {0,3}([-*_])(?:\s*\1){2,}\s*$/;
const QUOTE = /^ {0,3}> ?(.*)$/;
const ITEM = /^( *)([-*+]|\d{1,9}[.)])\s+(.*)$/;
const TABLE_RULE = /^\s*\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)*\|?\s*$/;
const SAFE_PROTOCOLS = new Set(["http:", "https:", "mailto:"]);

export function renderMarkdown(source) {
	const fragment = document.createDocumentFragment();
	renderBlocks(String(source).replace(/\r\n?/g, "\n").split("\n"), fragment);
	return fragment;
}

function el(tag, className) {
	const node = document.createElement(tag);
	if (className) node.className = className;
	return node;
}

function startsBlock(lines, i) {
	const line = lines[i];
	return FENCE.test(line) || HEADING.test(line) || RULE.test(line) || QUOTE.test(line) || ITEM.test(line) || isTableStart(lines, i);
}

function isTableStart(lines, i) {
	return lines[i].includes("|") && i + 1 < lines.length && lines[i + 1].includes("-") && TABLE_RULE.test(lines[i + 1]);
}

function renderBlocks(lines, parent) {
	let i = 0;
	while (i < lines.length) {
		const line = lines[i];
		const fence = FENCE.exec(line);
		const heading = fence ? null : HEADING.exec(line);
		if (!line.trim()) {
			i++;
		} else if (fence) {
			const close = new RegExp(`^ {0,3}${fence[1][0] === "`" ? "`" : "~"}{${fence[1].length},}\\s*$`);
			const code = [];
			for (i++; i < lines.length && !close.test(lines[i]); i++) code.push(lines[i]);
			i++;
			parent.append(codeBlock(code.join("\n"), fence[2]));
		} else if (heading) {
			// Headings inside a message sit below the page's own.
			const h = el(`h${Math.min(6, heading[1].length + 2)}`);
			renderInline(heading[2], h);
			parent.append(h);
			i++;
		} else if (RULE.test(line)) {
			parent.append(el("hr"));
			i++;
		} else if (QUOTE.test(line)) {
			const quoted = [];
			for (let q = QUOTE.exec(lines[i]); q; q = i < lines.length ? QUOTE.exec(lines[i]) : null) {
				quoted.push(q[1]);
				i++;
			}
			const quote = el("blockquote");
			renderBlocks(quoted, quote);
			parent.append(quote);
		} else if (ITEM.test(line)) {
			i = renderList(lines, i, parent);
		} else if (isTableStart(lines, i)) {
			i = renderTable(lines, i, parent);
		} else {
			const text = [line];
			for (i++; i < lines.length && lines[i].trim() && !startsBlock(lines, i); i++) text.push(lines[i]);
			const p = el("p");
			text.forEach((t, n) => {
				if (n > 0) p.append(el("br"));
				renderInline(t.trim(), p);
			});
			parent.append(p);
		}
	}
}

function renderList(lines, i, parent) {
	const first = ITEM.exec(lines[i]);
	const indent = first[1].length;
	const ordered = /\d/.test(first[2]);
	const list = el(ordered ? "ol" : "ul");
	if (ordered && parseInt(first[2], 10) !== 1) list.start = parseInt(first[2], 10);
	let body = null;
	let offset = 0;
	const flush = () => {
		if (!body) return;
		const item = el("li");
		renderBlocks(body, item);
		list.append(item);
	};
	while (i < lines.length) {
		const line = lines[i];
		const m = ITEM.exec(line);
		const lineIndent = line.length - line.trimStart().length;
		if (m && m[1].length <= indent + 1 && /\d/.test(m[2]) === ordered) {
			flush();
			body = [m[3]];
			offset = m[1].length + m[2].length + 1;
			i++;
		} else if (!line.trim()) {
			// A blank line ends the list unless what follows still belongs to it.
			const next = lines[i + 1];
			if (next === undefined || !next.trim()) break;
			const nextIndent = next.length - next.trimStart().length;
			const nextItem = ITEM.exec(next);
			if (nextIndent > indent || (nextItem && nextItem[1].length <= indent + 1 && /\d/.test(nextItem[2]) === ordered)) {
				body.push("");
				i++;
			} else break;
		} else if (lineIndent > indent) {
			body.push(line.slice(Math.min(lineIndent, offset)));
			i++;
		} else if (!m && !startsBlock(lines, i) && body[body.length - 1] !== "") {
			body.push(line.trim()); // a lazy continuation of the item's text
			i++;
		} else break;
	}
	flush();
	parent.append(list);
	return i;
}

function splitRow(line) {
	let row = line.trim();
	if (row.startsWith("|")) row = row.slice(1);
	if (row.endsWith("|") && !row.endsWith("\\|")) row = row.slice(0, -1);
	return row.split(/(?<!\\)\|/).map(cell => cell.trim().replace(/\\\|/g, "|"));
}

function renderTable(lines, i, parent) {
	const head = splitRow(lines[i]);
	const aligns = splitRow(lines[i + 1]).map(c => (c.endsWith(":") ? (c.startsWith(":") ? "center" : "right") : c.startsWith(":") ? "left" : ""));
	const wrap = el("div", "table-wrap");
	const table = el("table");
	const row = (cells, tag) => {
		const tr = el("tr");
		head.forEach((_, n) => {
			const cell = el(tag);
			if (aligns[n]) cell.dataset.align = aligns[n];
			renderInline(cells[n] ?? "", cell);
			tr.append(cell);
		});
		return tr;
	};
	const thead = el("thead");
	thead.append(row(head, "th"));
	const tbody = el("tbody");
	for (i += 2; i < lines.length && lines[i].trim() && lines[i].includes("|"); i++) tbody.append(row(splitRow(lines[i]), "td"));
	table.append(thead, tbody);
	wrap.append(table);
	parent.append(wrap);
	return i;
}

function codeBlock(text, lang) {
	const block = el("div", "code-block");
	const header = el("div", "code-block__header");
	const label = el("span", "code-block__lang");
	label.textContent = /^[\w+#.-]{1,24}$/.test(lang) ? lang : "code";
	header.append(label);
	if (navigator.clipboard?.writeText) {
		const copy = el("button", "code-block__copy");
		copy.type = "button";
		copy.textContent = "Copy";
		copy.setAttribute("aria-label", "Copy code");
		copy.addEventListener("click", () => {
			navigator.clipboard.writeText(text).then(
				() => {
					copy.textContent = "Copied";
					setTimeout(() => (copy.textContent = "Copy"), 1500);
				},
				() => {}
			);
		});
		header.append(copy);
	}
	const pre = el("pre");
	const code = el("code");
	code.textContent = text;
	pre.append(code);
	block.append(header, pre);
	return block;
}

/** The link target if it is a web or mail address; null for anything else (javascript:, data:, …). */
export function safeUrl(raw) {
	try {
		const url = new URL(raw, document.baseURI);
		return SAFE_PROTOCOLS.has(url.protocol) ? url.href : null;
	} catch {
		return null;
	}
}

function link(href, children) {
	const a = el("a");
	a.href = href;
	a.target = "_blank";
	a.rel = "noopener noreferrer nofollow";
	a.append(...children);
	return a;
}

const INLINE = new RegExp(
	[
		/\\([\\`*_{}[\]()#+\-.!~|>])/.source, // 1 an escaped character
		/(`+)([^`]|[^`][\s\S]*?[^`])\2(?!`)/.source, // 2, 3 code
		/\[([^\]\n]+)\]\(\s*<?([^\s()<>]+(?:\([^\s()<>]*\))?)>?(?:\s+"[^"\n]*")?\s*\)/.source, // 4, 5 link
		/<((?:https?:\/\/|mailto:)[^\s<>]+)>/.source, // 6 autolink
		/\*\*(?=\S)([\s\S]*?\S)\*\*/.source, // 7 bold
		/(?<!\w)__(?=\S)([\s\S]*?\S)__(?!\w)/.source, // 8 bold
		/~~(?=\S)([\s\S]*?\S)~~/.source, // 9 strike-through
		/\*(?=[^\s*])([\s\S]*?[^\s*])\*(?!\*)/.source, // 10 italic
		/(?<!\w)_(?=[^\s_])([\s\S]*?[^\s_])_(?!\w)/.source, // 11 italic
		/(https?:\/\/[^\s<>"]*[^\s<>".,;:!?)'\]])/.source // 12 a bare address
	].join("|"),
	"g"
);

function inline(text) {
	const span = document.createDocumentFragment();
	renderInline(text, span);
	return [...span.childNodes];
}

function renderInline(text, parent) {
	let last = 0;
	for (const m of text.matchAll(INLINE)) {
		if (m.index > last) parent.append(document.createTextNode(text.slice(last, m.index)));
		last = m.index + m[0].length;
		if (m[1] !== undefined) parent.append(document.createTextNode(m[1]));
		else if (m[3] !== undefined) {
			const code = el("code");
			code.textContent = /^ .* $/.test(m[3]) && m[3].trim() ? m[3].slice(1, -1) : m[3];
			parent.append(code);
		} else if (m[4] !== undefined) {
			const href = safeUrl(m[5]);
			parent.append(...(href ? [link(href, inline(m[4]))] : [document.createTextNode(m[0])]));
		} else if (m[6] !== undefined || m[12] !== undefined) {
			let address = m[6] ?? m[12];
			// A bare address keeps a closing parenthesis that balances one inside it: …/Foo_(bar)
			if (m[12] !== undefined && text[last] === ")" && address.split("(").length > address.split(")").length) {
				address += ")";
				last += 1;
			}
			const href = safeUrl(address);
			parent.append(href ? link(href, [document.createTextNode(address)]) : document.createTextNode(m[0]));
		} else {
			const [tag, inner] = (m[7] ?? m[8]) ? ["strong", m[7] ?? m[8]] : m[9] !== undefined ? ["del", m[9]] : ["em", m[10] ?? m[11]];
			const node = el(tag);
			renderInline(inner, node);
			parent.append(node);
		}
	}
	if (last < text.length) parent.append(document.createTextNode(text.slice(last)));
}
