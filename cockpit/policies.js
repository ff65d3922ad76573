/* The policy editor: a textarea with a line-number gutter in which the line
 * a refused policy names is marked. */
"use strict";

(function () {
    /* Where a SetPolicy error points: {policy, line} (either may be null).
     * momd's messages read "policy NAME: what went wrong on line N ..."
     * (momservice/policy/errors.py, PolicyError.__str__). */
    function errorLocation(message) {
        const text = String(message || "");
        const line = /\bon line (\d+)\b/.exec(text);
        const policy = /^policy ([^:\s]+):/.exec(text);
        return { policy: policy ? policy[1] : null, line: line ? parseInt(line[1], 10) : null };
    }

    /** The editor: gutter numbers follow the text, one line can be marked. */
    class PolicyEditor {
        constructor(textarea, gutter, band) {
            this.textarea = textarea;
            this.gutter = gutter;
            this.band = band;
            this.marked = null;
            textarea.addEventListener("input", () => {
                this.mark(null);
                this.renumber();
            });
            textarea.addEventListener("scroll", () => this.follow());
            this.renumber();
        }

        get text() {
            return this.textarea.value;
        }

        set text(value) {
            this.textarea.value = value;
            this.textarea.scrollTop = 0;
            this.mark(null);
            this.renumber();
        }

        set readOnly(value) {
            this.textarea.readOnly = value;
        }

        renumber() {
            const lines = this.textarea.value.split("\n").length;
            const have = this.gutter.childElementCount;
            for (let n = have + 1; n <= lines; n++) {
                const number = document.createElement("div");
                number.className = "mom-line-number";
                number.textContent = String(n);
                this.gutter.appendChild(number);
            }
            while (this.gutter.childElementCount > lines)
                this.gutter.lastElementChild.remove();
            if (this.marked !== null && this.marked > lines)
                this.mark(null);
            this.follow();
        }

        /* Mark line `line` (1-based) as the error's, or clear with null. */
        mark(line) {
            for (const el of this.gutter.querySelectorAll(".mom-error-line"))
                el.classList.remove("mom-error-line");
            this.marked = null;
            this.band.hidden = true;
            if (line === null || line < 1 || line > this.gutter.childElementCount)
                return;
            this.marked = line;
            this.gutter.children[line - 1].classList.add("mom-error-line");
            this.band.hidden = false;
            this.band.dataset.line = String(line);
            this.reveal(line);
            this.follow();
        }

        lineHeight() {
            const first = this.gutter.firstElementChild;
            return first ? first.getBoundingClientRect().height || 18 : 18;
        }

        reveal(line) {
            const height = this.lineHeight();
            const top = (line - 1) * height;
            const view = this.textarea.clientHeight;
            if (top < this.textarea.scrollTop || top + height > this.textarea.scrollTop + view)
                this.textarea.scrollTop = Math.max(0, top - view / 2);
        }

        /* Gutter and band scroll with the text (CSSOM, which CSP allows). */
        follow() {
            const scroll = this.textarea.scrollTop;
            this.gutter.scrollTop = scroll;
            if (this.marked !== null) {
                const height = this.lineHeight();
                this.band.style.top = `${(this.marked - 1) * height - scroll + this.padding()}px`;
                this.band.style.height = `${height}px`;
            }
        }

        padding() {
            return parseFloat(window.getComputedStyle(this.textarea).paddingTop) || 0;
        }
    }

    window.MomPolicies = { PolicyEditor, errorLocation };
})();
