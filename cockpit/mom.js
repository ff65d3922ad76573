/* mom's Cockpit page: the host and its guests, live from momd's D-Bus API
 * (org.ovirt.mom1 on the system bus; see dbus-api.md in the shared docs),
 * and the policies, parameters and dry-run evaluations.
 *
 * Reads are open to every user.  Changes are method calls that momd checks
 * with polkit: the bus client opens with superuser "try", so with Cockpit's
 * administrative access on they are made as root; without it the page is
 * read-only and says so.
 */
"use strict";

(function () {
    const F = window.MomFormat;
    const BUS_NAME = "org.ovirt.mom1";
    const ROOT_PATH = "/org/ovirt/mom1";
    const HOST_PATH = "/org/ovirt/mom1/host";
    const GUEST_PREFIX = "/org/ovirt/mom1/guest/";
    const MANAGER_IFACE = "org.ovirt.mom1.Manager";
    const HOST_IFACE = "org.ovirt.mom1.Host";
    const GUEST_IFACE = "org.ovirt.mom1.Guest";
    const PROPERTIES_IFACE = "org.freedesktop.DBus.Properties";
    const PAGE_KIB = 4;            // KSM counts pages; x86-64 pages are 4 KiB
    const AGE_POLL_MS = 3000;      // StatsAge is read, not signalled (dbus-api.md)
    const KSM_STATES = { 0: "stopped", 1: "running", 2: "unmerging" };

    let client, manager, host, guests, permission;
    let canChange = false;
    let hostCharts = null;
    let guestView = null;          // the open guest page, if any
    const rows = new Map();        // guest object path -> its table row
    const dirtyRows = new Set();
    let rowsScheduled = false;
    const ages = new Map();        // guest object path -> {age, at}
    let guestsLoaded = false;      // the first listing of the guests is in

    const $ = id => document.getElementById(id);

    function setText(id, value) {
        const el = typeof id === "string" ? $(id) : id;
        if (el.textContent !== value)
            el.textContent = value;
    }

    function stat(statistics, name) {
        return statistics ? F.plain(statistics[name]) : undefined;
    }

    function show(id, message, kind) {
        const el = $(id);
        el.hidden = !message;
        el.textContent = message || "";
        el.classList.remove("mom-danger", "mom-success", "mom-warning", "mom-info");
        if (kind)
            el.classList.add(`mom-${kind}`);
    }

    /* Why a change failed, and whether it was polkit. */
    function failure(error) {
        if (F.isAccessError(error)) {
            return `Not permitted: ${F.errorText(error)}. Turn on administrative access ` +
                "in Cockpit to make changes.";
        }
        const name = F.errorName(error);
        return name ? `${name}: ${F.errorText(error)}` : F.errorText(error);
    }

    // ------------------------------------------------------------------
    // Access

    function applyAccess() {
        $("access-banner").hidden = permission.allowed !== false;
        for (const el of document.querySelectorAll(".mom-change"))
            el.disabled = !canChange || el.dataset.disabledByState === "1";
        for (const el of document.querySelectorAll("#param-form input, #param-form select, #new-policy-form input"))
            el.disabled = !canChange;
        policies.applyAccess();
        document.body.dataset.access = canChange ? "admin" : "read-only";
    }

    // ------------------------------------------------------------------
    // Manager and host

    function renderManager() {
        if (!manager.valid)
            return;
        setText("svc-version", `momd ${manager.Version}`);
        setText("svc-hypervisor", `${manager.HypervisorURI}${manager.Connected ? "" : " (not connected)"}`);
        setText("svc-controllers", (manager.Controllers || []).join(", ") || "none");
        setText("svc-mode", manager.DryRun ? "dry run: decisions are not applied" : "applying decisions");
        const duration = manager.LastEvaluationDuration ? ` (${(manager.LastEvaluationDuration / 1000).toFixed(1)} ms)` : "";
        setText("svc-last", F.usecTime(manager.LastEvaluation) + duration);
        setText("svc-guests", String(manager.GuestCount));
        setText("service-state", manager.Connected ? `momd ${manager.Version}` : "hypervisor not connected");
        show("policy-error", manager.LastPolicyError ? `Policy error: ${manager.LastPolicyError}` : "", "warning");
        policies.managerChanged();
    }

    const HOST_SERIES = [
        { key: "mem_available", label: "total", cls: "mom-s-total" },
        { key: "mem_free", label: "free (with caches)", cls: "mom-s-free" },
        { key: "mem_unused", label: "unused", cls: "mom-s-unused" },
        { key: "anon_pages", label: "anonymous", cls: "mom-s-anon" },
        { key: "swap_usage", label: "swap used", cls: "mom-s-swap" },
    ];
    const PRESSURE_SERIES = [
        { key: "mem_pressure_some", label: "some", cls: "mom-s-some" },
        { key: "mem_pressure_full", label: "full", cls: "mom-s-full" },
    ];

    function makeHostCharts() {
        const memory = new window.MomChart.TimeChart($("chart-host-memory"), {
            title: "Host memory", series: HOST_SERIES, format: F.kib });
        const pressure = new window.MomChart.TimeChart($("chart-host-pressure"), {
            title: "Memory pressure (PSI avg10)", series: PRESSURE_SERIES, format: F.percent, minMax: 10 });
        hostCharts = { memory, pressure };
        for (const [chart, series] of [[memory, HOST_SERIES], [pressure, PRESSURE_SERIES]]) {
            for (const { key } of series) {
                host.GetHistory(key)
                    .then(points => chart.setHistory(key, points.map(([t, v]) => [t / 1000, v])))
                    .catch(error => console.warn(`host history of ${key}:`, F.errorText(error)));
            }
        }
    }

    function renderHost() {
        if (!host.valid)
            return;
        if (!hostCharts)
            makeHostCharts();
        setText("host-mem-total", F.kib(host.MemTotal));
        setText("host-mem-free", F.kib(host.MemFree));
        setText("host-mem-unused", F.kib(host.MemUnused));
        setText("host-anon", F.kib(host.AnonPages));
        setText("host-swap", `${F.kib(host.SwapUsed)} of ${F.kib(host.SwapTotal)}`);
        setText("host-pressure", `${F.percent(host.MemoryPressureSome)} / ${F.percent(host.MemoryPressureFull)}`);
        setText("host-cpus", F.count(host.CpuCount));
        $("host-mem-total").dataset.kib = String(host.MemTotal);
        $("host-mem-free").dataset.kib = String(host.MemFree);

        setText("ksm-state", KSM_STATES[host.KsmRun] || `run = ${host.KsmRun}`);
        setText("ksm-saved", F.kib(host.KsmPagesSharing * PAGE_KIB));
        setText("ksm-pages", `${F.count(host.KsmPagesShared)} / ${F.count(host.KsmPagesSharing)}`);
        setText("ksm-unshared", `${F.count(host.KsmPagesUnshared)} / ${F.count(host.KsmPagesVolatile)}`);
        setText("ksm-rate", `${F.count(host.KsmPagesToScan)} pages every ${F.count(host.KsmSleepMillisecs)} ms`);
        setText("ksm-scans", F.count(host.KsmFullScans));
        setText("ksm-cpu", F.percent(host.KsmdCpuUsage));

        if (hostCharts) {
            const now = Date.now();
            const statistics = host.Statistics;
            for (const { key } of HOST_SERIES)
                hostCharts.memory.add(key, now, stat(statistics, key));
            for (const { key } of PRESSURE_SERIES)
                hostCharts.pressure.add(key, now, stat(statistics, key));
        }
    }

    // ------------------------------------------------------------------
    // The guests table

    function guestId(path) {
        return path.substring(GUEST_PREFIX.length);
    }

    function cell(tr, cls) {
        const td = document.createElement("td");
        td.className = cls;
        tr.appendChild(td);
        return td;
    }

    function makeRow(path) {
        const tr = document.createElement("tr");
        tr.dataset.path = path;
        const name = cell(tr, "guest-name");
        const link = document.createElement("a");
        link.href = `#/guest/${guestId(path)}`;
        name.appendChild(link);

        const balloon = cell(tr, "guest-balloon");
        const bar = document.createElement("div");
        bar.className = "mom-bar";
        const fill = document.createElement("div");
        fill.className = "mom-bar-fill";
        const target = document.createElement("div");
        target.className = "mom-bar-target";
        bar.append(fill, target);
        const label = document.createElement("div");
        label.className = "mom-bar-label";
        balloon.append(bar, label);

        const row = { tr, link, balloon, fill, target, label,
                      free: cell(tr, "guest-free"), available: cell(tr, "guest-available"),
                      swap: cell(tr, "guest-swap"), age: cell(tr, "guest-age") };
        rows.set(path, row);
        return row;
    }

    /* guest-9 before guest-10. */
    const byName = (a, b) => a.localeCompare(b, undefined, { numeric: true });

    /* Rows stay sorted by name; a guest is placed when it appears. */
    function placeRow(row, name) {
        const body = $("guest-rows");
        let before = null;
        for (const other of body.children) {
            if (other !== row.tr && byName(other.dataset.name || "", name) > 0) {
                before = other;
                break;
            }
        }
        if (row.tr.parentNode !== body || row.tr.nextSibling !== before)
            body.insertBefore(row.tr, before);
    }

    function renderRow(path) {
        const proxy = guests[path];
        if (!proxy || !proxy.valid)
            return;
        const row = rows.get(path) || makeRow(path);
        const name = proxy.Name || proxy.UUID || guestId(path);
        if (row.tr.dataset.name !== name || !row.tr.parentNode) {
            row.tr.dataset.name = name;
            placeRow(row, name);
        }
        setText(row.link, name);
        const cur = proxy.BalloonCurrent, max = proxy.BalloonMaximum, goal = proxy.BalloonTarget;
        row.balloon.dataset.current = String(cur);
        row.balloon.dataset.target = String(goal);
        row.balloon.dataset.maximum = String(max);
        const fraction = v => (max > 0 ? Math.min(100, Math.max(0, v / max * 100)) : 0);
        row.fill.style.width = `${fraction(cur).toFixed(2)}%`;
        row.target.hidden = !goal;
        row.target.style.left = `${fraction(goal).toFixed(2)}%`;
        setText(row.label, `${F.kib(cur)} / ${goal ? F.kib(goal) : "none"} / ${F.kib(max)}`);
        setText(row.free, F.kib(proxy.MemUnused));
        setText(row.available, F.kib(proxy.MemAvailable));
        const statistics = proxy.Statistics;
        const swapUsed = stat(statistics, "swap_usage");
        setText(row.swap, `${F.count(proxy.SwapIn)} / ${F.count(proxy.SwapOut)}` +
            (typeof swapUsed === "number" ? ` (${F.kib(swapUsed)} used)` : ""));
        if (!ages.has(path))
            ages.set(path, { age: proxy.StatsAge, at: Date.now() });
        renderAge(path);
    }

    function renderAge(path) {
        const row = rows.get(path), seen = ages.get(path);
        if (!row || !seen)
            return;
        const age = typeof seen.age === "number" ? seen.age + (Date.now() - seen.at) / 1000 : undefined;
        setText(row.age, F.seconds(age));
        row.age.classList.toggle("mom-stale", typeof age === "number" && age > 60);
    }

    function scheduleRow(path) {
        dirtyRows.add(path);
        if (rowsScheduled)
            return;
        rowsScheduled = true;
        window.requestAnimationFrame(() => {
            rowsScheduled = false;
            for (const p of dirtyRows)
                renderRow(p);
            dirtyRows.clear();
            renderGuestCount();
        });
    }

    function removeRow(path) {
        const row = rows.get(path);
        if (row)
            row.tr.remove();
        rows.delete(path);
        ages.delete(path);
        dirtyRows.delete(path);
        renderGuestCount();
        if (guestView && guestView.path === path)
            $("guest-gone").hidden = false;
    }

    function renderGuestCount() {
        const n = rows.size;
        setText("guest-count", `(${n})`);
        $("no-guests").hidden = n > 0;
    }

    /* StatsAge moves every second and is not signalled: read it now and
     * then, one call per guest, and count on from the last reading. */
    let agesBusy = false;
    function pollAges() {
        if (agesBusy || cockpit.hidden || !client)
            return;
        const paths = [...rows.keys()];
        if (guestView && !paths.includes(guestView.path))
            paths.push(guestView.path);
        agesBusy = true;
        Promise.all(paths.map(path =>
            client.call(path, PROPERTIES_IFACE, "Get", [GUEST_IFACE, "StatsAge"])
                .then(([variant]) => ages.set(path, { age: F.plain(variant), at: Date.now() }))
                .catch(() => null)))
            .finally(() => { agesBusy = false; });
    }

    function tickAges() {
        for (const path of rows.keys())
            renderAge(path);
        if (guestView)
            renderGuestAge();
    }

    // ------------------------------------------------------------------
    // One guest's page

    const GUEST_MEMORY_SERIES = [
        { key: "balloon_max", label: "maximum", cls: "mom-s-total" },
        { key: "balloon_cur", label: "balloon current", cls: "mom-s-free" },
        { key: "mem_available", label: "available", cls: "mom-s-anon" },
        { key: "mem_unused", label: "free", cls: "mom-s-unused" },
    ];
    const GUEST_SWAP_SERIES = [
        { key: "swap_in", label: "swap in", cls: "mom-s-some" },
        { key: "swap_out", label: "swap out", cls: "mom-s-full" },
    ];

    function openGuest(id) {
        const path = GUEST_PREFIX + id;
        if (guestView && guestView.path === path)
            return;
        $("chart-guest-memory").replaceChildren();
        $("chart-guest-swap").replaceChildren();
        guestView = {
            path,
            memory: new window.MomChart.TimeChart($("chart-guest-memory"), {
                title: "Memory", series: GUEST_MEMORY_SERIES, format: F.kib }),
            swap: new window.MomChart.TimeChart($("chart-guest-swap"), {
                title: "Swap in / out (pages)", series: GUEST_SWAP_SERIES, format: F.count, minMax: 10 }),
        };
        const view = guestView;
        for (const [chart, series] of [[view.memory, GUEST_MEMORY_SERIES], [view.swap, GUEST_SWAP_SERIES]]) {
            for (const { key } of series) {
                client.call(path, GUEST_IFACE, "GetHistory", [key])
                    .then(([points]) => chart.setHistory(key, points.map(([t, v]) => [t / 1000, v])))
                    .catch(error => {
                        // Optional statistics (dbus-api.md) may be absent for a guest.
                        if (F.errorName(error) !== "NotFound")
                            console.warn(`history of ${key}:`, F.errorText(error));
                    });
            }
        }
        renderGuest();
        loadExplain(view);
    }

    /* The guest's story, asked again after every ControlsApplied that
     * names the guest (each such evaluation adds a record). */
    function loadExplain(view) {
        client.call(view.path, GUEST_IFACE, "Explain", [0])
            .then(([text]) => {
                if (guestView === view)
                    window.MomExplain.render($("guest-explain"), JSON.parse(text));
            })
            .catch(error => console.warn("Explain:", F.errorText(error)));
    }

    function renderGuest() {
        if (!guestView)
            return;
        const proxy = guests[guestView.path];
        $("guest-gone").hidden = !guestsLoaded || !!(proxy && proxy.valid);
        if (!proxy || !proxy.valid) {
            if (!$("guest-name").textContent)
                setText("guest-name", guestId(guestView.path));
            return;
        }
        setText("guest-name", proxy.Name);
        setText("guest-balloon-cur", F.kib(proxy.BalloonCurrent));
        setText("guest-balloon-target", proxy.BalloonTarget ? F.kib(proxy.BalloonTarget) : "none");
        setText("guest-balloon-min", F.kib(proxy.BalloonMinimum));
        setText("guest-balloon-max", F.kib(proxy.BalloonMaximum));
        setText("guest-mem-available", F.kib(proxy.MemAvailable));
        setText("guest-mem-unused", F.kib(proxy.MemUnused));
        setText("guest-mem-usable", F.kib(proxy.MemUsable));
        setText("guest-disk-caches", F.kib(proxy.DiskCaches));
        setText("guest-swap", `${F.count(proxy.SwapIn)} / ${F.count(proxy.SwapOut)}`);
        setText("guest-faults", `${F.count(proxy.MajorFaults)} / ${F.count(proxy.MinorFaults)}`);
        setText("guest-rss", F.kib(proxy.Rss));
        setText("guest-uuid", proxy.UUID);
        setText("guest-pid", proxy.Pid ? String(proxy.Pid) : "unknown");
        const controls = Object.entries(proxy.Controls || {})
            .map(([name, v]) => `${name} = ${name === "balloon_target" ? F.kib(F.plain(v)) : F.plain(v)}`);
        setText("guest-controls", controls.join(", ") || "none");
        renderGuestAge();
        const now = Date.now(), statistics = proxy.Statistics;
        for (const { key } of GUEST_MEMORY_SERIES)
            guestView.memory.add(key, now, stat(statistics, key));
        for (const { key } of GUEST_SWAP_SERIES)
            guestView.swap.add(key, now, stat(statistics, key));
    }

    function renderGuestAge() {
        const seen = ages.get(guestView.path);
        const age = seen && typeof seen.age === "number" ? seen.age + (Date.now() - seen.at) / 1000 : undefined;
        setText("guest-age", F.seconds(age));
    }

    // ------------------------------------------------------------------
    // Policies, parameters, evaluation

    const policies = {
        editor: null,
        texts: {},          // name -> text as momd has it
        names: [],          // PolicyNames, in evaluation order
        drafts: new Set(),  // names added here, not yet saved
        selected: null,
        loadedFor: null,    // the PolicyNames the texts were read for

        init() {
            this.editor = new window.MomPolicies.PolicyEditor($("editor-text"), $("editor-gutter"),
                                                               $("editor-error-band"));
            $("editor-text").addEventListener("input", () => this.renderButtons());
            $("policy-save").addEventListener("click", () => this.save());
            $("policy-revert").addEventListener("click", () => this.select(this.selected));
            $("policy-delete").addEventListener("click", () => this.remove());
            $("policies-reset").addEventListener("click", () => this.confirmThen($("policies-reset"),
                "Really reset? Drops every policy set here", () => this.call("ResetPolicies", [], "Reset to the policy files.")));
            $("policies-reload").addEventListener("click", () => this.call("ReloadPolicies", [], "Policy files reloaded."));
            $("new-policy-form").addEventListener("submit", event => {
                event.preventDefault();
                const name = $("new-policy-name").value.trim();
                if (!name)
                    return;
                if (!(name in this.texts)) {
                    this.drafts.add(name);
                    this.texts[name] = "";
                }
                $("new-policy-name").value = "";
                this.renderList();
                this.select(name);
            });
        },

        managerChanged() {
            const names = manager.PolicyNames || [];
            const key = names.join("\n");
            if (key !== this.loadedFor)
                this.load(key);
        },

        load(key) {
            this.loadedFor = key;
            return manager.GetPolicies().then(texts => {
                const keep = this.selected;
                this.texts = { ...texts };
                for (const name of this.drafts) {
                    if (name in texts)
                        this.drafts.delete(name);
                    else
                        this.texts[name] = "";
                }
                this.names = manager.PolicyNames || Object.keys(texts);
                this.renderList();
                const unchanged = keep && this.editor.text === (this.shown || "");
                if (keep && keep in this.texts) {
                    if (unchanged)
                        this.select(keep, true);
                } else {
                    this.select(this.names[0] || null);
                }
            }).catch(error => show("editor-message", `Cannot read the policies: ${failure(error)}`, "danger"));
        },

        allNames() {
            return [...this.names.filter(n => n in this.texts),
                    ...Object.keys(this.texts).filter(n => !this.names.includes(n)).sort()];
        },

        renderList() {
            const list = $("policy-names");
            list.replaceChildren();
            for (const name of this.allNames()) {
                const item = document.createElement("li");
                const button = document.createElement("button");
                button.type = "button";
                button.className = "mom-policy-name";
                button.dataset.name = name;
                button.textContent = this.drafts.has(name) ? `${name} (new)` : name;
                button.classList.toggle("mom-selected", name === this.selected);
                button.addEventListener("click", () => this.select(name));
                item.appendChild(button);
                list.appendChild(item);
            }
        },

        select(name, keepMessage) {
            this.selected = name;
            this.shown = name !== null ? this.texts[name] || "" : "";
            this.editor.text = this.shown;
            setText("editor-title", name === null ? "Select a policy" : name);
            if (!keepMessage)
                show("editor-message", "");
            for (const button of document.querySelectorAll(".mom-policy-name"))
                button.classList.toggle("mom-selected", button.dataset.name === name);
            this.applyAccess();
        },

        renderButtons() {
            const selected = this.selected !== null;
            const edited = selected && this.editor.text !== this.shown;
            $("policy-save").dataset.disabledByState = selected && (edited || this.drafts.has(this.selected)) ? "0" : "1";
            $("policy-delete").dataset.disabledByState = selected && !this.drafts.has(this.selected) ? "0" : "1";
            $("policy-save").disabled = !canChange || $("policy-save").dataset.disabledByState === "1";
            $("policy-delete").disabled = !canChange || $("policy-delete").dataset.disabledByState === "1";
            $("policy-revert").disabled = !edited;
        },

        applyAccess() {
            if (this.editor)
                this.editor.readOnly = !canChange || this.selected === null;
            this.renderButtons();
        },

        save() {
            const name = this.selected, text = this.editor.text;
            show("editor-message", "Checking and saving…", "info");
            manager.SetPolicy(name, text).then(() => {
                this.texts[name] = text;
                this.shown = text;
                this.drafts.delete(name);
                show("editor-message", `Saved ${name}: momd checked it and evaluates with it from now on.`, "success");
                this.renderList();
                this.renderButtons();
                this.load(this.loadedFor);
            }).catch(error => {
                show("editor-message", failure(error), "danger");
                const where = window.MomPolicies.errorLocation(F.errorText(error));
                if (where.line !== null && (where.policy === null || where.policy === name))
                    this.editor.mark(where.line);
            });
        },

        remove() {
            const name = this.selected;
            this.confirmThen($("policy-delete"), `Really delete ${name}?`, () => {
                manager.DeletePolicy(name).then(() => {
                    show("editor-message", `Deleted ${name}.`, "success");
                    delete this.texts[name];
                    this.selected = null;
                    this.load(this.loadedFor);
                }).catch(error => show("editor-message", failure(error), "danger"));
            });
        },

        call(method, args, done) {
            show("editor-message", "Working…", "info");
            manager[method](...args).then(() => {
                show("editor-message", done, "success");
                this.load(this.loadedFor);
            }).catch(error => show("editor-message", failure(error), "danger"));
        },

        /* A second click within a few seconds confirms (no modal dialog). */
        confirmThen(button, question, action) {
            if (button.dataset.confirming === "1") {
                button.dataset.confirming = "0";
                button.textContent = button.dataset.label;
                window.clearTimeout(button.confirmTimer);
                action();
                return;
            }
            button.dataset.label = button.dataset.label || button.textContent;
            button.dataset.confirming = "1";
            button.textContent = `${question}: click again`;
            button.confirmTimer = window.setTimeout(() => {
                button.dataset.confirming = "0";
                button.textContent = button.dataset.label;
            }, 5000);
        },
    };

    const parameters = {
        init() {
            $("param-form").addEventListener("submit", event => {
                event.preventDefault();
                this.set();
            });
        },

        render() {
            const body = $("param-rows");
            body.replaceChildren();
            const params = (manager.valid && manager.Parameters) || {};
            const names = Object.keys(params).sort();
            for (const name of names) {
                const { t, v } = params[name];
                const tr = document.createElement("tr");
                tr.dataset.name = name;
                for (const [cls, value] of [["param-name", name], ["param-value", String(v)], ["param-type", t]]) {
                    const td = document.createElement("td");
                    td.className = cls;
                    td.textContent = value;
                    tr.appendChild(td);
                }
                tr.addEventListener("click", () => {
                    $("param-name").value = name;
                    $("param-value").value = String(v);
                    $("param-type").value = ["b", "x", "d", "s"].includes(t) ? t : "auto";
                });
                body.appendChild(tr);
            }
            $("no-params").hidden = names.length > 0;
        },

        /* The variant for a value typed in the form. */
        variant(text, type) {
            if (type === "auto") {
                if (/^(true|false)$/i.test(text))
                    type = "b";
                else if (/^-?\d+$/.test(text))
                    type = "x";
                else if (text.trim() !== "" && isFinite(Number(text)))
                    type = "d";
                else
                    type = "s";
            }
            if (type === "b") {
                if (!/^(true|false|1|0)$/i.test(text))
                    throw new Error(`"${text}" is not true or false`);
                return cockpit.variant("b", /^(true|1)$/i.test(text));
            }
            if (type === "x" || type === "d") {
                const number = Number(text);
                if (text.trim() === "" || !isFinite(number) || (type === "x" && !Number.isInteger(number)))
                    throw new Error(`"${text}" is not ${type === "x" ? "an integer" : "a number"}`);
                return cockpit.variant(type, number);
            }
            return cockpit.variant("s", text);
        },

        set() {
            const name = $("param-name").value.trim();
            let value;
            try {
                value = this.variant($("param-value").value, $("param-type").value);
            } catch (error) {
                show("param-message", error.message, "danger");
                return;
            }
            show("param-message", "Checking…", "info");
            manager.SetParameters({ [name]: value })
                .then(() => show("param-message", `Set ${name}.`, "success"))
                .catch(error => show("param-message", failure(error), "danger"));
        },
    };

    const evaluation = {
        init() {
            $("evaluate-dry-run").addEventListener("click", () => this.run());
        },

        /* The value a control has now, to set beside what it would become. */
        current(path, control) {
            if (path === HOST_PATH)
                return stat(host.Statistics, control);
            const proxy = guests[path];
            if (!proxy || !proxy.valid)
                return undefined;
            if (control === "balloon_target")
                return proxy.BalloonCurrent;
            return F.plain((proxy.Controls || {})[control]);
        },

        objectName(path) {
            if (path === HOST_PATH)
                return "Host";
            const proxy = guests[path];
            return proxy && proxy.valid ? proxy.Name : path;
        },

        run() {
            show("evaluate-message", "Evaluating…", "info");
            manager.EvaluateNow(true).then(result => {
                const body = $("evaluation-rows");
                body.replaceChildren();
                let changes = 0, controls = 0;
                const paths = Object.keys(result).sort((a, b) =>
                    (a === HOST_PATH ? -1 : b === HOST_PATH ? 1 : byName(this.objectName(a), this.objectName(b))));
                for (const path of paths) {
                    for (const [control, variant] of Object.entries(result[path]).sort()) {
                        const next = F.plain(variant);
                        const now = this.current(path, control);
                        const kib = control === "balloon_target";
                        const tr = document.createElement("tr");
                        tr.dataset.object = this.objectName(path);
                        tr.dataset.control = control;
                        const changed = now !== next;
                        tr.classList.toggle("mom-would-change", changed);
                        for (const value of [this.objectName(path), control,
                                             now === undefined ? "–" : kib ? F.kib(now) : String(now),
                                             kib ? F.kib(next) : String(next)]) {
                            const td = document.createElement("td");
                            td.textContent = value;
                            tr.appendChild(td);
                        }
                        body.appendChild(tr);
                        controls++;
                        if (changed)
                            changes++;
                    }
                }
                $("evaluation").hidden = controls === 0;
                show("evaluate-message", controls === 0
                    ? "The policies set no control: nothing would change."
                    : `${changes} of ${controls} controls would change (dry run: nothing was applied).`, "success");
            }).catch(error => {
                $("evaluation").hidden = true;
                show("evaluate-message", failure(error), "danger");
            });
        },
    };

    // ------------------------------------------------------------------
    // Pages

    function route() {
        const path = cockpit.location.path;
        const page = path[0] === "guest" && path[1] ? "guest" : path[0] === "policies" ? "policies" : "overview";
        for (const name of ["overview", "guest", "policies"])
            $(`page-${name}`).hidden = name !== page;
        $("tab-overview").classList.toggle("mom-active", page !== "policies");
        $("tab-policies").classList.toggle("mom-active", page === "policies");
        if (page === "guest") {
            openGuest(path[1]);
        } else {
            guestView = null;
            $("guest-name").textContent = "";
        }
    }

    function connect() {
        client = cockpit.dbus(BUS_NAME, { bus: "system", superuser: "try" });
        client.addEventListener("close", (event, options) => {
            show("service-error", `Lost the connection to the system bus: ${cockpit.message(options)}`, "danger");
        });
        client.addEventListener("owner", (event, owner) => {
            show("service-error", owner === null ? "momd is not running (no owner of org.ovirt.mom1 on the system bus)." : "", "danger");
            if (owner === null) {
                setText("service-state", "momd is not running");
                // What was shown is momd's no more: no guest is managed.
                for (const path of [...rows.keys()])
                    removeRow(path);
            }
        });

        manager = client.proxy(MANAGER_IFACE, ROOT_PATH);
        host = client.proxy(HOST_IFACE, HOST_PATH);
        guests = client.proxies(GUEST_IFACE, ROOT_PATH);

        manager.addEventListener("changed", () => {
            renderManager();
            parameters.render();
        });
        host.addEventListener("changed", renderHost);
        guests.addEventListener("added", (event, proxy) => scheduleRow(proxy.path));
        guests.addEventListener("changed", (event, proxy) => {
            scheduleRow(proxy.path);
            if (guestView && guestView.path === proxy.path)
                renderGuest();
        });
        guests.addEventListener("removed", (event, proxy) => removeRow(proxy.path));
        client.subscribe({ interface: MANAGER_IFACE, member: "ControlsApplied", path: ROOT_PATH },
                         (path, iface, signal, [controls]) => {
                             if (guestView && controls && controls[guestView.path])
                                 loadExplain(guestView);
                         });

        manager.wait(() => {
            renderManager();
            parameters.render();
        });
        host.wait(renderHost);
        guests.wait(() => {
            for (const path of Object.keys(guests))
                scheduleRow(path);
            guestsLoaded = true;
            renderGuestCount();
            if (guestView)
                renderGuest();
            document.body.dataset.loaded = "1";
        });
    }

    function init() {
        policies.init();
        parameters.init();
        evaluation.init();
        permission = cockpit.permission({ admin: true });
        permission.addEventListener("changed", () => {
            canChange = permission.allowed === true;
            applyAccess();
        });
        applyAccess();
        connect();
        cockpit.addEventListener("locationchanged", route);
        route();
        window.setInterval(pollAges, AGE_POLL_MS);
        window.setInterval(tickAges, 1000);
        pollAges();
    }

    document.addEventListener("DOMContentLoaded", init);
})();
