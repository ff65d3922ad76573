/* "Why did my guest shrink?": the controls momd applied to a guest, as its
 * Explain method tells them (a JSON array, oldest first; see the README's
 * "momctl explain"), drawn newest first into the guest page's card. */
"use strict";

(function () {
    const F = window.MomFormat;
    /* Statistics and controls that are KiB (the field catalogue's). */
    const KIB = new Set([
        "balloon_target", "balloon_cur", "balloon_max", "balloon_min", "mem_available",
        "mem_unused", "mem_usable", "mem_free", "disk_caches", "rss", "swap_total",
        "swap_usage", "anon_pages", "ksm_shareable",
    ]);

    function value(name, v) {
        if (v === null || v === undefined)
            return "unknown";
        if (KIB.has(name) && typeof v === "number")
            return F.kib(v);
        return typeof v === "number" ? String(Math.round(v * 100) / 100) : String(v);
    }

    function el(tag, cls, text) {
        const node = document.createElement(tag);
        if (cls)
            node.className = cls;
        if (text !== undefined)
            node.textContent = text;
        return node;
    }

    function inputs(label, values, mean) {
        const names = Object.keys(values || {}).sort();
        if (!names.length)
            return null;
        const line = el("div", "mom-explain-inputs");
        line.append(el("span", "mom-explain-label", `${label}: `));
        line.append(names.map(n => `${mean ? "mean " : ""}${n} ${value(n, values[n])}`).join(", "));
        return line;
    }

    function change(c) {
        const item = el("li", "mom-explain-change");
        let text = `${c.control}: ${value(c.control, c.from)} → ${value(c.control, c.to)}`;
        if (KIB.has(c.control) && typeof c.from === "number" && typeof c.to === "number" && c.from !== c.to)
            text += ` (${c.to > c.from ? "+" : "−"}${F.kib(Math.abs(c.to - c.from))})`;
        item.append(el("span", "mom-explain-what", text));
        const where = c.policy === null || c.policy === undefined
            ? "set by: unknown"
            : `set by policy ${c.policy}, line ${c.line}` + (c.file ? ` (${c.file}:${c.line})` : "");
        item.append(el("div", "mom-explain-where", where));
        return item;
    }

    /* Fill ``container`` with the story of ``records`` (Explain's answer). */
    function render(container, records) {
        const body = [el("h3", null, "Why it changed")];
        if (!records.length) {
            body.push(el("p", "mom-explain-none",
                         "No control applied to this guest in the records momd keeps."));
        }
        for (const record of records.slice().reverse()) {
            const entry = el("article", "mom-explain-record");
            let head = `${F.usecTime(record.time_usec)}, evaluation (${record.reason})`;
            if (record.dry_run)
                head += ", dry run: not applied";
            entry.append(el("h4", null, head));
            const changes = el("ul", "mom-explain-changes");
            changes.append(...record.changes.map(change));
            entry.append(changes);
            const i = record.inputs || {};
            for (const line of [inputs("guest", i.guest), inputs("guest", i.guest_means, true),
                                inputs("host", i.host), inputs("host", i.host_means, true)]) {
                if (line)
                    entry.append(line);
            }
            body.push(entry);
        }
        container.replaceChildren(...body);
        container.hidden = false;
    }

    window.MomExplain = { render };
})();
