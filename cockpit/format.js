/* Number and error formatting shared by the page's scripts. */
"use strict";

(function () {
    const UNITS = ["KiB", "MiB", "GiB", "TiB"];

    /* KiB (momd's unit for every size) as a short human figure. */
    function kib(value) {
        if (typeof value !== "number" || !isFinite(value))
            return "–";
        let v = value, i = 0;
        while (Math.abs(v) >= 1024 && i < UNITS.length - 1) {
            v /= 1024;
            i++;
        }
        const digits = i === 0 || Math.abs(v) >= 100 ? 0 : 1;
        return `${v.toFixed(digits)} ${UNITS[i]}`;
    }

    /* Counters are whole numbers; chart axes ask for fractions of them. */
    function count(value) {
        return typeof value === "number" && isFinite(value) ? Math.round(value).toLocaleString("en") : "–";
    }

    function percent(value) {
        return typeof value === "number" && isFinite(value) ? `${value.toFixed(1)} %` : "–";
    }

    function seconds(value) {
        if (typeof value !== "number" || !isFinite(value))
            return "–";
        if (value < 60)
            return `${value.toFixed(value < 10 ? 1 : 0)} s`;
        if (value < 3600)
            return `${Math.floor(value / 60)} min ${Math.round(value % 60)} s`;
        return `${(value / 3600).toFixed(1)} h`;
    }

    /* Microseconds since the epoch (momd's clock) as a local time. */
    function usecTime(usec) {
        if (!usec)
            return "never";
        return new Date(usec / 1000).toLocaleTimeString();
    }

    /* A plain value of a D-Bus variant ({t, v}) as cockpit.js gives it. */
    function plain(variant) {
        if (variant && typeof variant === "object" && "v" in variant && "t" in variant)
            return variant.v;
        return variant;
    }

    /* The short name of a D-Bus error (org.ovirt.mom1.Error.PolicySyntax ->
     * PolicySyntax) and its message. */
    function errorName(error) {
        const name = (error && error.name) || "";
        return name.substring(name.lastIndexOf(".") + 1);
    }

    function errorText(error) {
        if (!error)
            return "unknown error";
        return error.message || (error.problem ? cockpit.message(error) : String(error));
    }

    /* Errors that mean "polkit said no" rather than "the request was wrong". */
    function isAccessError(error) {
        const name = (error && error.name) || "";
        return name === "org.freedesktop.DBus.Error.AccessDenied" ||
            name === "org.freedesktop.DBus.Error.InteractiveAuthorizationRequired" ||
            (error && error.problem === "access-denied");
    }

    window.MomFormat = { kib, count, percent, seconds, usecTime, plain, errorName, errorText, isAccessError };
})();
